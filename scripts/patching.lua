-- patching.lua: which components carry a copying task, by activation patching, path patching and
-- attribution patching (the gradient estimate), and where the estimate fails.
-- The task, the form of the indirect-object task that a 2-layer attention-only model can do: each
-- prompt is BOS, a random token sequence R, then R again up to its second-to-last token; the
-- answer is R's last token, which only an induction circuit can recall. The corrupted prompt
-- replaces the first copy by other random tokens, so the answer is no longer in context; the
-- metric is the logit difference between the clean answer and the corrupted prompt's "answer",
-- normalized so that the clean run scores 1 and the corrupted run 0.
--   miwb scripts/patching.lua [--model M] [--seq_len 10] [--batch 8] [--seed S] [--out DIR]
local mi = require("miwb")
local E = mi.experiment

local args = E.parse_args(arg, "patching", {seq_len = 10, batch = 8}, {
  seq_len = "length of the copying task's sequence", batch = "sequences per batch"})
local model, model_name = E.load_model(args.model)
print("model: " .. model_name)
local n, B = args.seq_len, args.batch
local L, H = model.cfg.n_layers, model.cfg.n_heads

-- clean [B, 2n]: BOS, R, R[0..n-2]; corrupted: BOS, R', R[0..n-2]
local g = mi.Generator(args.seed)
local lo = math.min(4, model.cfg.d_vocab - 1)
local R = mi.randint(lo, model.cfg.d_vocab, {B, n}, g)
local R2 = mi.randint(lo, model.cfg.d_vocab, {B, n}, g)
local bos = mi.full({B, 1}, mi.analysis.bos_id(model), {dtype = "int64"})
local clean = mi.cat({bos, R, R:narrow(1, 0, n - 1)}, 1)
local corrupted = mi.cat({bos, R2, R:narrow(1, 0, n - 1)}, 1)
local answer, wrong = R:select(1, n - 1), R2:select(1, n - 1)
local P = clean:size(1)

local ld = mi.metrics.logit_diff(answer, wrong)
local clean_logits, clean_cache = model:run_with_cache(clean)
local clean_ld, corrupted_ld = ld:value(clean_logits), ld:value(model(corrupted))
print(("logit difference: clean %.3f, corrupted %.3f"):format(clean_ld, corrupted_ld))
-- the normalized metric: 1 = clean behaviour, 0 = corrupted (it says which position it reads, so
-- patched runs compute the logits there only)
local span = clean_ld - corrupted_ld
local metric = mi.metrics.custom(function(logits) return (ld:value(logits) - corrupted_ld) / span end, {-1},
                                 function(logits) return ld:grad(logits) / span end)

local t0 = os.clock()
local resid = mi.patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)        -- [L, P]
local heads = mi.patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric) -- [L, H]
local every = mi.patching.get_act_patch_attn_head_all_pos_every(model, corrupted, clean_cache, metric) -- [5, L, H]
print(("activation patching: %d patched runs in %.2f s of CPU"):format(L * P + 6 * L * H, os.clock() - t0))

local function top_heads(grid, k)
  local flat = grid:reshape(-1)
  local vals, idx = flat:abs():topk(math.min(k, flat:numel()))
  local out = {}
  for i = 0, vals:size(0) - 1 do
    local j = idx[i]:item()
    out[#out + 1] = {head = ("%d.%d"):format(j // H, j % H), value = flat[j]:item()}
  end
  return out
end
local tops = top_heads(heads, 4)
print("heads whose output restores the most (patched at every position):")
for _, t in ipairs(tops) do print(("  %s  %.3f"):format(t.head, t.value)) end
local kinds = {"output", "query", "key", "value", "pattern"}
for i, kname in ipairs(kinds) do
  local t = top_heads(every[i - 1], 1)[1]
  print(("  by %s: %s %.3f"):format(kname, t.head, t.value))
end

-- path patching: the strongest layer-0 head into the keys of the strongest layer-1 heads, and
-- those heads straight to the logits (the run is clean, the sender's output corrupted: a value
-- near 0 means the path carries the behaviour)
local function best_in_layer(grid, l)
  local v, h = grid[l]:abs():max(0)
  return h:item()
end
local paths = {}
if L >= 2 then
  local s = {0, best_in_layer(heads, 0)}               -- the layer-0 head whose output matters most
  local r1 = {L - 1, best_in_layer(heads, L - 1)}
  local recv = {{r1[1], r1[2], "k"}}
  local v = mi.patching.path_patch(model, clean, corrupted, s, recv, metric)
  paths[#paths + 1] = {sender = s[1] .. "." .. s[2], receiver = r1[1] .. "." .. r1[2] .. ".k", value = v}
  v = mi.patching.path_patch(model, clean, corrupted, r1, "logits", metric)
  paths[#paths + 1] = {sender = r1[1] .. "." .. r1[2], receiver = "logits", value = v}
  print("path patching (clean run, sender corrupted; 1 = no effect, 0 = all of it):")
  for _, p in ipairs(paths) do print(("  %s -> %s: %.3f"):format(p.sender, p.receiver, p.value)) end
end

-- attribution patching: the same grids from the gradient (two forwards, one backward)
t0 = os.clock()
local attr = mi.patching.attribution_patch(model, clean, corrupted, metric)
print(("attribution patching: %.3f s of CPU"):format(os.clock() - t0))
local kinds = {{"resid_pre", resid, attr.resid_pre, function(i) return ("resid_pre %d @%d"):format(i // P, i % P) end}}
local ev = {"out", "q", "k", "v", "pattern"}
for i, kname in ipairs(ev) do
  kinds[#kinds + 1] = {"head " .. kname, every[i - 1], attr["attn_head_" .. kname .. "_all_pos"],
                       function(j) return ("%s %d.%d"):format(kname, j // H, j % H) end}
end
local xs, ys, labels, rows = {}, {}, {}, {}
for _, k in ipairs(kinds) do
  local a, b = k[2]:reshape(-1):totable(), k[3]:reshape(-1):totable()
  for i = 1, #a do
    xs[#xs + 1], ys[#ys + 1] = a[i], b[i]
    rows[#rows + 1] = {what = k[4](i - 1), activation = a[i], attribution = b[i]}
  end
end
table.sort(rows, function(p, q) return math.abs(p.activation - p.attribution) > math.abs(q.activation - q.attribution) end)
local disagree = {}
print("where attribution patching disagrees most with activation patching (normalized metric):")
for i = 1, 6 do
  local r = rows[i]
  if math.abs(r.activation - r.attribution) < 0.1 then break end
  disagree[#disagree + 1] = r
  print(("  %-18s activation %6.3f  attribution %6.3f"):format(r.what, r.activation, r.attribution))
end
local worst = {}
for _, r in ipairs(disagree) do worst[r.what] = true end
for i, r in ipairs(rows) do labels[i] = "" end
local lab = {}
for i = 1, #xs do lab[i] = "" end
do
  local i = 0
  for _, k in ipairs(kinds) do
    for j = 1, k[2]:numel() do
      i = i + 1
      local w = k[4](j - 1)
      if worst[w] then lab[i] = w end
    end
  end
end

local Hl = {}
for h = 0, H - 1 do Hl[#Hl + 1] = tostring(h) end
local toks = {}
for p = 0, P - 1 do toks[#toks + 1] = p == 0 and "BOS" or (p <= n and ("R" .. p) or ("R" .. (p - n) .. "'")) end
local figs = {
  resid = mi.plot.imshow(resid, {title = "Activation patching: resid_pre (clean into corrupted)",
    xlabel = "Position", ylabel = "Layer", x = toks, midpoint = 0, out = args.out .. "/act_patch_resid_pre.png"}),
  heads = mi.plot.imshow(heads, {title = "Activation patching: head outputs, all positions",
    xlabel = "Head", ylabel = "Layer", x = Hl, text_auto = ".2f", midpoint = 0, out = args.out .. "/act_patch_heads.png"}),
}
figs.attr_resid = mi.plot.imshow(attr.resid_pre, {title = "Attribution patching: resid_pre",
  xlabel = "Position", ylabel = "Layer", x = toks, midpoint = 0, out = args.out .. "/attr_patch_resid_pre.png"})
figs.attr_heads = mi.plot.imshow(attr.attn_head_out_all_pos, {title = "Attribution patching: head outputs, all positions",
  xlabel = "Head", ylabel = "Layer", x = Hl, text_auto = ".2f", midpoint = 0, out = args.out .. "/attr_patch_heads.png"})
figs.scatter = mi.plot.scatter(xs, ys, {text = lab, title = "Attribution against activation patching (every grid)",
  xlabel = "activation patching", ylabel = "attribution patching", out = args.out .. "/attr_vs_act.png"})
E.write_results(args.out, {model = model_name, clean_logit_diff = clean_ld, corrupted_logit_diff = corrupted_ld,
                           resid_pre = resid, heads = heads, every = every, top_heads = tops, paths = paths,
                           attribution = {resid_pre = attr.resid_pre, heads = attr.attn_head_out_all_pos},
                           disagreements = disagree, figures = figs})
print("figures and results.json in " .. args.out)
