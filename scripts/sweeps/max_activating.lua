-- max_activating.lua: the top-k contexts of every unit over a token dataset, as a sweep sharded
-- over the dataset (docs/sweeps.md).
--
--   miwb sweep scripts/sweeps/max_activating.lua --out results/maxact --args --unit attn
--   miwb sweep merge results/maxact        (after a sharded run)
--
-- Units (--unit):
--   attn   every head (L x H units); a head's activation at position p is the attention p pays
--          to its most-attended earlier token other than BOS ("attention to a token")
--   resid  the d_model directions of the residual stream after block --layer (default: the last)
--   mlp    the d_mlp neurons of block --layer (hook_post), when the model has MLPs
-- The dataset is the text file --text (default data/corpus/valid.txt, which tools/make_corpus.sh
-- builds; any text file will do), tokenized with the model's tokenizer and cut into rows of
-- --n_ctx tokens after BOS; an item is --batch rows, and --max_items caps the number of items.
-- Each item keeps its own top --k per unit (value, position, the unit's activations around it);
-- merge keeps the best k of all items, writes the table results/maxact/figures/top_contexts.tsv,
-- and draws one figure per unit for the first --figures units: the top contexts as rows, the
-- unit's activation on each token around the top position as colour.
local mi = require("miwb")
local E = mi.experiment

local BEFORE, AFTER = 8, 3 -- context shown around the top position

local function read_text(path)
  local f = io.open(path, "rb")
  if not f then
    error(("max_activating: cannot read %s: build the corpus with sh tools/make_corpus.sh, or give --text FILE"):format(path), 0)
  end
  local s = f:read("a")
  f:close()
  return s
end

-- the unit activations of one batch: act [B, T, U] and, for attn, the attended position [B, T, U]
local function activations(model, tokens, unit, layer)
  local cfg = model.cfg
  if unit == "attn" then
    local _, cache = model:run_with_cache(tokens, {names_filter = function(n) return n:find("hook_pattern", 1, true) end})
    local acts, srcs = {}, {}
    for l = 0, cfg.n_layers - 1 do
      local pat = cache[{"pattern", l}]                        -- [B, H, T, T]
      local v, i = pat:narrow(3, 1, pat:size(3) - 1):max(3)     -- not BOS: keys 1..T-1
      acts[#acts + 1] = v:permute(0, 2, 1)                      -- [B, T, H]
      srcs[#srcs + 1] = (i + 1):permute(0, 2, 1)
    end
    return mi.cat(acts, 2):contiguous(), mi.cat(srcs, 2):contiguous()
  end
  local name
  if unit == "resid" then
    name = mi.utils.get_act_name("resid_post", layer)
  elseif unit == "mlp" then
    if cfg.attn_only then
      error("max_activating: this model is attention-only: it has no MLP neurons (use --unit attn or resid)", 0)
    end
    name = mi.utils.get_act_name("post", layer)
  else
    error(("max_activating: --unit must be attn, resid or mlp, got '%s'"):format(unit), 0)
  end
  local _, cache = model:run_with_cache(tokens, {names_filter = function(n) return n == name end})
  return cache[name]:contiguous()
end

local function unit_names(model, unit, layer, U)
  local names = {}
  for u = 0, U - 1 do
    if unit == "attn" then
      names[u + 1] = ("%d.%d"):format(u // model.cfg.n_heads, u % model.cfg.n_heads)
    else
      names[u + 1] = ("%s%d.%d"):format(unit == "mlp" and "mlp" or "resid", layer, u)
    end
  end
  return names
end

-- the rows of item c: [B, T] int64, BOS then T-1 ids of the token stream
local function rows_of(ctx, c)
  local B, T = ctx.args.batch, ctx.args.n_ctx
  local start = c * B * (T - 1)
  local ids = ctx.stream:narrow(0, start, B * (T - 1)):view(B, T - 1)
  return mi.cat({mi.full({B, 1}, ctx.bos, {dtype = "int64"}), ids}, 1)
end

return {
  name = "max_activating",
  args = {model = "", text = "data/corpus/valid.txt", unit = "attn", layer = -1, k = 10, n_ctx = 64, batch = 8,
          max_items = 64, figures = 16},

  setup = function(ctx)
    local a = ctx.args
    ctx.model = E.load_model(a.model ~= "" and a.model or E.default_model())
    local tok = ctx.model.tokenizer
    if not tok then error("max_activating: the model has no tokenizer to read --text with", 0) end
    ctx.stream = tok:encode(read_text(a.text))
    ctx.bos = tok:bos_token_id() or 0
    ctx.layer = a.layer < 0 and ctx.model.cfg.n_layers + a.layer or a.layer
  end,

  items = function(ctx)
    local a = ctx.args
    local n = ctx.stream:size(0) // (a.batch * (a.n_ctx - 1))
    if n == 0 then error(("max_activating: %s is too short for one batch"):format(a.text), 0) end
    return math.min(n, a.max_items)
  end,

  run = function(c, ctx)
    local a = ctx.args
    local tokens = rows_of(ctx, c)
    local act, src = activations(ctx.model, tokens, a.unit, ctx.layer)  -- [B, T, U]
    local B, T, U = act:size(0), act:size(1), act:size(2)
    act[{{}, 0}] = -math.huge                                           -- position 0 is BOS
    local flat = act:view(B * T, U):transpose(0, 1):contiguous()        -- [U, B*T]
    local values, where = flat:topk(math.min(a.k, B * T - B), 1)         -- [U, k]
    -- the unit's activations around each top position: [U, k, BEFORE + 1 + AFTER]
    local W = BEFORE + 1 + AFTER
    local around = mi.full({U, values:size(1), W}, 0 / 0)
    local rows, wl = act:totable(), where:totable()
    local out = around:totable()
    for u = 1, U do
      for j = 1, #wl[u] do
        local b, p = wl[u][j] // T, wl[u][j] % T
        for w = 1, W do
          local q = p - BEFORE + w - 1
          if q >= 1 and q < T then out[u][j][w] = rows[b + 1][q + 1][u] end
        end
      end
    end
    local res = {values = values, where = where, around = mi.tensor(out)}
    if src then res.src = src:view(B * T, U):transpose(0, 1):contiguous():gather(1, where) end
    return res
  end,

  reduce = function(results, ctx)
    local a = ctx.args
    local B, T = a.batch, a.n_ctx
    -- every item's candidates side by side, then the best k of them
    local vals, gids, arounds, srcs = {}, {}, {}, {}
    for c, r in ipairs(results) do
      vals[c], arounds[c] = r.values, r.around
      gids[c] = r.where + (c - 1) * B * T                        -- a position in the whole dataset
      srcs[c] = r.src
    end
    local all = mi.cat(vals, 1)                                  -- [U, n*k]
    local values, pick = all:topk(math.min(a.k, all:size(1)), 1)
    local gid = mi.cat(gids, 1):gather(1, pick)
    local around = mi.cat(arounds, 1)
    local src = #srcs > 0 and mi.cat(srcs, 1):gather(1, pick) or nil
    local U, K = values:size(0), values:size(1)
    local names = unit_names(ctx.model, a.unit, ctx.layer, U)
    local tok = ctx.model.tokenizer
    local gl, vl, pl = gid:totable(), values:totable(), pick:totable()
    local sl = src and src:totable()
    local lines = {"unit\trank\tvalue\titem\trow\tpos\tcontext"}
    local contexts = {}
    for u = 1, U do
      contexts[u] = {}
      local ylabels, grid = {}, {}
      for j = 1, K do
        local g = gl[u][j]
        local c, b, p = g // (B * T), (g % (B * T)) // T, g % T
        local row = rows_of(ctx, c)[b]:totable()
        local parts, toks = {}, {}
        for q = math.max(1, p - BEFORE), math.min(T - 1, p + AFTER) do
          local s = tok:decode({row[q + 1]})
          toks[#toks + 1] = s
          if q == p then s = "[[" .. s .. "]]" elseif sl and q == sl[u][j] then s = "{{" .. s .. "}}" end
          parts[#parts + 1] = s
        end
        local text = table.concat(parts)
        contexts[u][j] = text
        lines[#lines + 1] = ("%s\t%d\t%.6g\t%d\t%d\t%d\t%s"):format(names[u], j - 1, vl[u][j], c, b, p,
          (text:gsub("[\t\n]", " ")))
        ylabels[j] = ("%.3f %s"):format(vl[u][j], (text:gsub("\n", " ")))
        grid[j] = around[u - 1][pl[u][j]]
      end
      if u <= a.figures then
        local xs = {}
        for w = 1, BEFORE + 1 + AFTER do xs[w] = tostring(w - 1 - BEFORE) end
        mi.plot.imshow(mi.stack(grid), {out = ctx.figures, name = "unit_" .. names[u],
          title = ("%s %s: top %d contexts (%s)"):format(a.unit, names[u], K, a.unit == "attn" and
            "[[destination]] {{attended token}}, colour: its top attention" or "[[top token]]"),
          x = xs, y = ylabels, xlabel = "position relative to the top token", palette = "Blues",
          max_label = 60, aspect = "auto", width = 1000, height = 120 + 26 * K})
      end
    end
    local f = assert(io.open(ctx.figures .. "/top_contexts.tsv", "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    return {units = names, values = values, position = gid, attended = src, contexts = contexts,
            unit = a.unit, layer = a.unit ~= "attn" and ctx.layer or nil}
  end,
}
