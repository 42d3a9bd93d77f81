-- miwb.analysis: the experiments of the ARENA "Intro to Mech Interp" notebook as functions.
--
-- Shapes follow TransformerLens: patterns [batch, head, q, k] (or [head, q, k] in a cache whose
-- batch dim was removed), tokens [batch, pos] int64, scores [layer, head]. Heads are named
-- "L.H" (0-based), as the notebook's detectors do.
local M = {}

local function mi() return require("miwb") end

-- ---------------------------------------------------------------- argument checks
-- mi.analysis.* are wrapped by mi.utils.name_errors (see _install at the end): a message raised
-- here with level 0 ("expected a HookedTransformer as model, got nil") reaches the user as
-- "file:line: mi.analysis.head_ablation_scores: expected a HookedTransformer as model, got nil".

local function fail(fmt, ...) error(fmt:format(...), 0) end
local function typename(x) return mi().utils.typename(x) end

local function want_model(model)
  if typename(model) ~= "miwb.HookedTransformer" then
    fail("expected a HookedTransformer as model, got %s", typename(model))
  end
end

local function want_cache(cache)
  if typename(cache) ~= "miwb.ActivationCache" then
    fail("expected an ActivationCache as cache, got %s", typename(cache))
  end
end

-- x a tensor (of dtype, with one of the numbers of dims in `dims` when given)
local function want_tensor(x, what, dtype, dims)
  if not mi().is_tensor(x) then fail("expected a tensor as %s, got %s", what, typename(x)) end
  if dtype and x:dtype() ~= dtype then fail("%s must be %s, got %s", what, dtype, x:dtype()) end
  if dims then
    for _, d in ipairs(dims) do if x:dim() == d then return end end
    fail("%s must have %s dims, got shape [%s]", what, table.concat(dims, " or "), table.concat(x:shape(), ","))
  end
end

-- what a number or other value is, for messages
local function shown(x) return type(x) == "number" and tostring(x) or typename(x) end

-- x an integer (3.0 counts) >= lo and < hi (hi may be nil), returned as a Lua integer
local function want_int(x, what, lo, hi)
  local i = type(x) == "number" and math.tointeger(x)
  if not i then fail("%s must be an integer, got %s", what, shown(x)) end
  if i < lo then fail("%s must be at least %d, got %d", what, lo, i) end
  if hi and i >= hi then fail("%s must be below %d, got %d", what, hi, i) end
  return i
end

-- a layer or head number of the model (0-based)
local function want_index(model, x, what, field, noun)
  local i = type(x) == "number" and math.tointeger(x)
  if not i then fail("%s must be a %s number, got %s", what, noun, shown(x)) end
  local n = model.cfg[field]
  if i < 0 or i >= n then fail("%s %d is out of range for a model of %d %ss", what, i, n, noun) end
  return i
end
local function want_layer(model, l, what) return want_index(model, l, what, "n_layers", "layer") end
local function want_head(model, h, what) return want_index(model, h, what, "n_heads", "head") end

local function want_number(x, what)
  if x ~= nil and type(x) ~= "number" then fail("%s must be a number, got %s", what, typename(x)) end
end

local function want_list(x, what)
  if type(x) ~= "table" or mi().is_tensor(x) or getmetatable(x) then
    fail("expected a list as %s, got %s", what, typename(x))
  end
end

-- ---------------------------------------------------------------- repeated random tokens

local function bos_id(model)
  want_model(model)
  local tok = model.tokenizer
  if tok then
    local id = tok:bos_token_id()
    if id then return id end
  end
  if model.cfg.bos_token_id then return model.cfg.bos_token_id end
  return 0
end
M.bos_id = bos_id

-- [batch, 1 + 2*seq_len]: BOS, then seq_len random tokens, then the same tokens again.
-- opts.seed makes it reproducible on any machine (miwb's documented generator);
-- opts.generator passes a mi.Generator to draw from.
function M.generate_repeated_tokens(model, seq_len, batch, opts)
  mi().utils.check_opts("analysis.generate_repeated_tokens", opts, {"seed", "generator", "low", "high"})
  want_model(model)
  want_int(seq_len, "seq_len", 0)
  opts = opts or {}
  local m = mi()
  batch = batch == nil and 1 or want_int(batch, "batch", 1)
  local g = opts.generator or (opts.seed and m.Generator(opts.seed)) or nil
  local lo = opts.low or 0
  local hi = opts.high or model.cfg.d_vocab
  local rand = m.randint(lo, hi, {batch, seq_len}, g)
  local prefix = m.full({batch, 1}, bos_id(model), {dtype = "int64"})
  return m.cat({prefix, rand, rand}, 1)
end

-- tokens, logits, cache of the model on repeated random tokens.
function M.run_and_cache_model_repeated_tokens(model, seq_len, batch, opts)
  mi().utils.check_opts("analysis.run_and_cache_model_repeated_tokens", opts,
                        {"seed", "generator", "low", "high", "cache_opts"})
  want_model(model)
  local o = opts or {}
  local tokens = M.generate_repeated_tokens(model, seq_len, batch,
                                            {seed = o.seed, generator = o.generator, low = o.low, high = o.high})
  local logits, cache = model:run_with_cache(tokens, opts and opts.cache_opts)
  return tokens, logits, cache
end

-- log-probability of each next token: [batch, pos-1]
function M.get_log_probs(logits, tokens)
  want_tensor(logits, "logits", "float32", {3})
  want_tensor(tokens, "tokens", "int64", {2})
  if tokens:size(0) ~= logits:size(0) or tokens:size(1) ~= logits:size(1) then
    fail("logits [%s] and tokens [%s] differ in batch or positions", table.concat(logits:shape(), ","),
         table.concat(tokens:shape(), ","))
  end
  local lp = logits:log_softmax(-1)
  local n = lp:size(1)
  local pred = lp:narrow(1, 0, n - 1)
  local nxt = tokens:narrow(1, 1, n - 1):unsqueeze(-1)
  return pred:gather(-1, nxt):squeeze(-1)
end

-- ---------------------------------------------------------------- head detectors

-- The pattern of a layer as [batch, head, q, k] whatever the cache holds.
local function pattern4(cache, layer)
  local p = cache("pattern", layer)
  if p:dim() == 3 then p = p:unsqueeze(0) end
  return p
end

-- Scores [L, H] of a per-head statistic of the pattern, averaged over batch and positions.
--   stat(p4) takes [batch, head, q, k] and returns [batch, head, n] values to average.
local function layer_scores(model, cache, threshold, stat)
  want_model(model)
  want_cache(cache)
  want_number(threshold, "threshold")
  local m = mi()
  local L, H = model.cfg.n_layers, model.cfg.n_heads
  local rows = {}
  for l = 0, L - 1 do
    local v = stat(pattern4(cache, l))        -- [batch, head, n]
    rows[#rows + 1] = v:mean({0, 2})          -- [head]
  end
  local scores = m.stack(rows, 0)             -- [L, H]
  assert(scores:size(1) == H)
  return scores
end

-- The heads whose score exceeds threshold, as "L.H" names, in layer then head order.
function M.heads_above(scores, threshold)
  want_tensor(scores, "scores", nil, {2})
  if type(threshold) ~= "number" then fail("threshold must be a number, got %s", typename(threshold)) end
  local out = {}
  local t = scores:totable()
  for l = 1, #t do
    for h = 1, #t[l] do
      if t[l][h] > threshold then out[#out + 1] = (l - 1) .. "." .. (h - 1) end
    end
  end
  return out
end

-- The notebook's detectors; each returns scores [L, H] and the list of heads above its threshold.
function M.current_attn_detector(model, cache, threshold)
  local s = layer_scores(model, cache, threshold, function(p) return p:diagonal(0, -2, -1) end)
  return s, M.heads_above(s, threshold or 0.3)
end

function M.prev_attn_detector(model, cache, threshold)
  local s = layer_scores(model, cache, threshold, function(p) return p:diagonal(-1, -2, -1) end)
  return s, M.heads_above(s, threshold or 0.35)
end

function M.first_attn_detector(model, cache, threshold)
  local s = layer_scores(model, cache, threshold, function(p) return p:select(-1, 0) end)
  return s, M.heads_above(s, threshold or 0.7)
end

-- On [BOS, R, R] with |R| = seq_len: attention from each token of the second copy to the
-- token after its first occurrence, the diagonal at offset 1 - seq_len.
function M.induction_attn_detector(model, cache, threshold, seq_len)
  if seq_len ~= nil then want_int(seq_len, "seq_len", 1) end
  local s = layer_scores(model, cache, threshold, function(p)
    local n = seq_len or (p:size(-1) - 1) // 2
    return p:diagonal(1 - n, -2, -1)
  end)
  return s, M.heads_above(s, threshold or 0.5)
end

-- Induction scores of all heads with a hook on hook_pattern (no cache kept): [L, H].
-- tokens default to repeated random tokens (seq_len 50, batch 10, opts.seed).
function M.induction_scores(model, tokens, opts)
  mi().utils.check_opts("analysis.induction_scores", opts, {"batch", "extra_hooks", "seq_len", "seed", "generator"})
  local m = mi()
  want_model(model)
  if tokens ~= nil then want_tensor(tokens, "tokens", "int64", {2}) end
  opts = opts or {}
  if tokens ~= nil and (opts.seq_len or opts.batch or opts.seed or opts.generator) then
    error("analysis.induction_scores: seq_len, batch, seed and generator make the tokens; these tokens were given", 2)
  end
  tokens = tokens or M.generate_repeated_tokens(model, opts.seq_len or 50, opts.batch or 10,
                                                {seed = opts.seed, generator = opts.generator})
  local seq_len = (tokens:size(1) - 1) // 2
  local store = m.zeros(model.cfg.n_layers, model.cfg.n_heads)
  local hooks = {{function(name) return name:match("hook_pattern$") ~= nil end,
                  function(pattern, hook)
                    local d = pattern:diagonal(1 - seq_len, -2, -1)  -- [batch, head, n]
                    store[hook:layer()] = d:mean({0, 2})
                  end}}
  for _, extra in ipairs(opts.extra_hooks or {}) do hooks[#hooks + 1] = extra end
  model:run_with_hooks(tokens, {return_type = "none", fwd_hooks = hooks})
  return store, tokens
end

-- TransformerLens's detect_head: detection patterns by name or a [n, n] matrix.
local function duplicate_pattern(toks)      -- toks: Lua list of ids
  local m = mi()
  local n = #toks
  local pat = m.zeros(n, n)
  for i = 1, n do
    for j = 1, i - 1 do
      if toks[i] == toks[j] then pat[{i - 1, j - 1}] = 1 end
    end
  end
  return pat
end

function M.detection_pattern(name, toks)
  local m = mi()
  if type(name) ~= "string" then fail("name must be a string, got %s", typename(name)) end
  want_list(toks, "toks")
  local n = #toks
  if name == "previous_token_head" then
    local pat = m.zeros(n, n)
    for i = 1, n - 1 do pat[{i, i - 1}] = 1 end
    return pat
  elseif name == "duplicate_token_head" then
    return duplicate_pattern(toks)
  elseif name == "induction_head" then
    local dup = duplicate_pattern(toks)
    local pat = m.zeros(n, n)
    -- shift right by one along keys; the first column is zero
    if n > 1 then pat[{{}, {1, n}}] = dup[{{}, {0, n - 1}}] end
    return pat:tril()
  end
  error("detect_head: detection pattern must be a tensor or one of previous_token_head, " ..
        "duplicate_token_head, induction_head; got " .. tostring(name), 3)
end

function M.detect_head(model, seq, pattern, opts)
  mi().utils.check_opts("analysis.detect_head", opts, {"cache", "error_measure", "exclude_bos", "exclude_current_token", "heads"})
  local m = mi()
  want_model(model)
  if type(pattern) ~= "string" and not m.is_tensor(pattern) then
    fail("pattern must be a pattern name or a tensor, got %s", typename(pattern))
  end
  opts = opts or {}
  local measure = opts.error_measure or "mul"
  if measure ~= "mul" and measure ~= "abs" then
    error("detect_head: error_measure must be 'mul' or 'abs', got " .. tostring(measure), 2)
  end
  if type(seq) == "table" and not m.is_tensor(seq) and type(pattern) == "string" then
    local rows = {}
    for _, s in ipairs(seq) do rows[#rows + 1] = M.detect_head(model, s, pattern, opts) end
    return m.stack(rows, 0):mean(0)
  end
  if m.is_tensor(seq) then want_tensor(seq, "seq", "int64", {1, 2}) end
  local tokens = m.is_tensor(seq) and seq or model:to_tokens(seq)
  if tokens:dim() == 2 then tokens = tokens[0] end
  local n = tokens:size(0)
  if not (n > 1 and n < model.cfg.n_ctx) then
    error("detect_head: the sequence must be non-empty and fit within the context window", 2)
  end
  local det = type(pattern) == "string" and M.detection_pattern(pattern, tokens:totable()) or pattern
  local ds = det:shape()
  if #ds ~= 2 or ds[1] ~= n or ds[2] ~= n then
    error(("detect_head: detection pattern must be [%d,%d], got [%s]"):format(n, n,
          table.concat(ds, ",")), 2)
  end
  local cache = opts.cache
  if not cache then
    local _
    _, cache = model:run_with_cache(tokens:unsqueeze(0), {
      names_filter = function(name) return name:match("hook_pattern$") ~= nil end,
      remove_batch_dim = true})
  end
  local L, H = model.cfg.n_layers, model.cfg.n_heads
  local wanted
  if opts.heads then
    wanted = {}
    for _, lh in ipairs(opts.heads) do wanted[lh[1] * H + lh[2]] = true end
  end
  local scores = m.full({L, H}, -1)
  for l = 0, L - 1 do
    local pats = cache("pattern", l)
    if pats:dim() == 4 then pats = pats[0] end
    for h = 0, H - 1 do
      if not wanted or wanted[l * H + h] then
        local a = pats[h]:clone()
        local score
        if measure == "mul" then
          if opts.exclude_bos then a[{{}, 0}] = 0 end
          if opts.exclude_current_token then a:diagonal(0, 0, 1):fill_(0) end
          score = (a * det):sum():item() / a:sum():item()
        else
          local diff = (a - det):abs()
          if opts.exclude_bos then diff[{{}, 0}] = 0 end
          if opts.exclude_current_token then diff:diagonal(0, 0, 1):fill_(0) end
          local raw = diff:mean():item() * n
          score = 1 - math.floor(raw * 1000 + 0.5) / 1000
        end
        scores[{l, h}] = score
      end
    end
  end
  return scores
end

-- ---------------------------------------------------------------- logit attribution

-- The notebook's logit_attribution: embed [seq, d], l0/l1 results [seq, H, d], W_U [d, V],
-- tokens [seq] -> [seq-1, 1 + 2H]: direct path, then layer 0 heads, then layer 1 heads.
function M.logit_attribution(embed, l0_results, l1_results, W_U, tokens)
  local m = mi()
  want_tensor(embed, "embed", nil, {2})
  want_tensor(l0_results, "l0_results", nil, {3})
  want_tensor(l1_results, "l1_results", nil, {3})
  want_tensor(W_U, "W_U", nil, {2})
  want_tensor(tokens, "tokens", "int64", {1})
  local n = tokens:size(0)
  local W_U_correct = W_U:index_select(1, tokens:narrow(0, 1, n - 1))     -- [d, seq-1]
  local direct = m.einsum("seq d, d seq -> seq", embed:narrow(0, 0, n - 1), W_U_correct):unsqueeze(-1)
  local l0 = m.einsum("seq h d, d seq -> seq h", l0_results:narrow(0, 0, n - 1), W_U_correct)
  local l1 = m.einsum("seq h d, d seq -> seq h", l1_results:narrow(0, 0, n - 1), W_U_correct)
  return m.cat({direct, l0, l1}, -1)
end

-- The same for any number of layers and any model: [seq-1, 1 + L*H] with labels {"Direct", "L0H0",
-- ...}, or [batch, seq-1, 1 + L*H] from a cache with a batch dim and tokens [batch, seq]. The
-- direct path is embed (+ pos_embed for standard positional embeddings) plus every layer's b_O;
-- each head's part is its result (cached hook_result, or z @ W_O) on the next token's W_U column.
function M.logit_attribution_all(model, cache, tokens)
  want_model(model)
  want_cache(cache)
  want_tensor(tokens, "tokens", "int64", {1, 2})
  if cache.has_batch_dim then
    if tokens:dim() == 1 then tokens = tokens:unsqueeze(0) end
    if tokens:dim() ~= 2 or tokens:size(0) ~= cache("embed"):size(0) then
      error(("logit_attribution_all: tokens [%s] do not match the cache's batch of %d"):format(
        table.concat(tokens:shape(), ","), cache("embed"):size(0)), 2)
    end
  elseif tokens:dim() == 2 then
    if tokens:size(0) ~= 1 then error("logit_attribution_all: a cache without batch dim takes one row of tokens", 2) end
    tokens = tokens[0]
  end
  local n = tokens:size(-1)
  local dirs = model:tokens_to_residual_directions(tokens:narrow(-1, 1, n - 1))    -- [..., seq-1, d]
  local direct = cache("embed")
  if model.cfg.positional_embedding_type ~= "shortformer" then direct = direct + cache("pos_embed") end
  for l = 0, model.cfg.n_layers - 1 do direct = direct + model.b_O[l] end
  local direct_attr = (direct:narrow(-2, 0, n - 1) * dirs):sum(-1):unsqueeze(-1)   -- [..., seq-1, 1]
  local heads = cache:stack_head_results(-1):narrow(-2, 0, n - 1)                  -- [L*H, ..., seq-1, d]
  local head_attr = (heads * dirs):sum(-1)                                          -- [L*H, ..., seq-1]
  local perm = {}
  for d = 1, head_attr:dim() - 1 do perm[d] = d end
  perm[#perm + 1] = 0
  local labels = {"Direct"}
  for l = 0, model.cfg.n_layers - 1 do
    for h = 0, model.cfg.n_heads - 1 do labels[#labels + 1] = ("L%dH%d"):format(l, h) end
  end
  return mi().cat({direct_attr, head_attr:permute(table.unpack(perm))}, -1), labels
end

-- ---------------------------------------------------------------- ablations

-- A head given as "L.H" or {l, h} -> l, h (0-based), checked against the model's shape.
function M.parse_head(model, k, op)
  want_model(model)
  if op ~= nil and type(op) ~= "string" then fail("op (the name for messages) must be a string, got %s", typename(op)) end
  local L, H = model.cfg.n_layers, model.cfg.n_heads
  local l, h
  if type(k) == "string" then
    l, h = k:match("^(%d+)%.(%d+)$")
    l, h = tonumber(l), tonumber(h)
  elseif type(k) == "table" then
    l, h = k[1], k[2]
  end
  if not (l and h and l >= 0 and l < L and h >= 0 and h < H) then
    error((op or "head") .. ": no head " .. tostring(k) .. " in a model of " .. L .. " layers x " .. H .. " heads", 3)
  end
  return l, h
end

-- Per layer, the mean over batch and positions of attn.hook_<act> on tokens: means[l] = [H, dh].
local function mean_head_acts(model, tokens, act)
  local _, cache = model:run_with_cache(tokens, {names_filter = function(n)
    return n:match("attn%.hook_" .. act .. "$") ~= nil end})
  local means = {}
  for l = 0, model.cfg.n_layers - 1 do means[l] = cache(act, l):mean({0, 1}) end
  return means
end

-- For every head, the loss increase when its v or z (opts.act, default "v") is ablated:
-- opts.mode "zero" (default) or "mean" (mean over batch and positions of the clean run).
-- opts.slice = {from, to} limits the loss to those predicted positions (e.g. the second
-- half of a repeated sequence). Returns [L, H].
-- One clean run keeps every layer's resid_pre; each ablation of layer l then starts there
-- (start_at_layer), several heads' ablated copies side by side in one batch (opts.batch_heads
-- heads per run, default as many as fit in about 2048 rows), and only the slice's positions are
-- unembedded; the last layer of an attention-only model without a final normalization needs no
-- pass at all (see linear_last). The same numbers as a full rerun per head with the hook (tested).
function M.head_ablation_scores(model, tokens, opts)
  mi().utils.check_opts("analysis.head_ablation_scores", opts, {"act", "mode", "progress", "slice", "batch_heads"})
  local m = mi()
  want_model(model)
  if m.is_tensor(tokens) then want_tensor(tokens, "tokens", "int64", {1, 2}) end
  opts = opts or {}
  local act = opts.act or "v"
  local mode = opts.mode or "zero"
  if act ~= "v" and act ~= "z" then error("head_ablation_scores: act must be 'v' or 'z'", 2) end
  if mode ~= "zero" and mode ~= "mean" then error("head_ablation_scores: mode must be 'zero' or 'mean'", 2) end
  if not m.is_tensor(tokens) then tokens = model:to_tokens(tokens) end
  if tokens:dim() == 1 then tokens = tokens:unsqueeze(0) end
  local L, H = model.cfg.n_layers, model.cfg.n_heads
  local B, P = tokens:size(0), tokens:size(1)
  local from, to = 0, P - 1
  if opts.slice then
    want_list(opts.slice, "opts.slice")
    want_int(opts.slice[1], "opts.slice[1]", math.mininteger)
    if opts.slice[2] ~= nil then want_int(opts.slice[2], "opts.slice[2]", math.mininteger) end
    from, to = opts.slice[1], opts.slice[2] or P - 1
    if from < 0 then from = P - 1 + from end
    if to < 0 then to = P - 1 + to end
    if from < 0 or to > P - 1 or to <= from then
      error(("head_ablation_scores: slice {%s, %s} is outside the %d predicted positions"):format(
        tostring(opts.slice[1]), tostring(opts.slice[2]), P - 1), 2)
    end
  end
  local batch_heads = opts.batch_heads or math.max(1, 2048 // (B * P))
  if math.type(batch_heads) ~= "integer" or batch_heads < 1 then
    error("head_ablation_scores: batch_heads must be a positive integer, got " .. tostring(opts.batch_heads), 2)
  end
  local cfg = model.cfg
  local G = cfg.n_key_value_heads or H
  if act == "v" and G ~= H then
    error(("head_ablation_scores: act 'v' would ablate a key/value head, which %d query heads share under " ..
           "grouped-query attention (n_key_value_heads %d, n_heads %d): use act = 'z' to ablate one query head")
          :format(H // G, G, H), 2)
  end
  -- The last layer of an attention-only model with no final normalization (the seed notebook's
  -- model) and no hooks of the model's own: the logits are linear in each head's z there, so
  -- ablating head h moves them by exactly (z'_h - z_h) @ (W_O[h] @ W_U), products of inner size
  -- d_head instead of a pass with a full unembedding.
  local linear_last = cfg.attn_only and cfg.normalization_type == nil and
                      not (cfg.output_logits_soft_cap and cfg.output_logits_soft_cap > 0) and
                      #model._persistent == 0 and not model._splices
  local names = {}
  for l = 0, L - 1 do
    names[#names + 1] = m.utils.get_act_name("resid_pre", l)
    if mode == "mean" then names[#names + 1] = m.utils.get_act_name(act, l) end
  end
  local zname, rname = m.utils.get_act_name("z", L - 1), m.utils.get_act_name("resid_post", L - 1)
  if linear_last then names[#names + 1] = zname; names[#names + 1] = rname end
  -- the clean run unembeds the slice's positions only: for the loss (core), or (linear_last) for
  -- the logits the last layer's ablations start from, the loss taken from them
  local n = to - from
  local target = tokens:narrow(1, from + 1, n):reshape(B * n, 1)
  local function loss_of_logits(lg) local lp <close> = lg:log_softmax(1); return -lp:gather(1, target):mean():item() end
  local function loss_of(per_token) return per_token:narrow(1, from, to - from):mean():item() end
  local store, wanted = {}, {}
  for _, nm in ipairs(names) do wanted[nm] = true end
  local clean_loss = model:_run(tokens, {return_type = linear_last and "none" or "loss", loss_per_token = true},
                                {cache_names = wanted, cache = store, loss_slice = {from, to}})
  local logits, base
  if linear_last then
    -- the slice's final residual through the model's own unembedding (start_at_layer = n_layers)
    logits = model:_run(store[rname]:narrow(1, from, n):contiguous(), {start_at_layer = L}):reshape(B * n, -1)
    base = loss_of_logits(logits)
  else
    base = loss_of(clean_loss)
  end
  local scores = m.zeros(L, H)
  local progress, done = opts.progress, 0
  for l = 0, L - 1 do
    local name = m.utils.get_act_name(act, l)
    local mean = mode == "mean" and store[name]:mean({0, 1}) or nil   -- [H, dh]
    local resid = store[m.utils.get_act_name("resid_pre", l)]
    if l == L - 1 and linear_last then
      local z = store[zname]:narrow(1, from, n)                            -- [B, n, H, dh]
      local W_O = model.W_O[l]
      for h = 0, H - 1 do
        local zh = z[{{}, {}, h}]:reshape(B * n, -1)                         -- [B*n, dh]
        -- mean-ablating v gives z'_h = pattern @ mean_v = mean_v (each pattern row sums to 1)
        local dz = mean and (mean[h]:unsqueeze(0) - zh) or -zh
        -- hundreds of MB per head: freed at once (<close>), so the next head reuses the memory
        local wou <close> = W_O[h]:matmul(model.W_U)                     -- [dh, V]
        local ablated <close> = dz:matmul(wou)
        ablated:add_(logits)
        scores[{l, h}] = loss_of_logits(ablated) - base
        done = done + 1
        if progress then progress(done, L * H) end
      end
      goto next_layer
    end
    for h0 = 0, H - 1, batch_heads do
      local k = math.min(batch_heads, H - h0)
      local rows = k * B
      local tk = tokens:unsqueeze(0):expand(k, B, P):reshape(rows, P)
      local function ablate(x)                        -- copy i ablates head h0 + i
        for i = 0, k - 1 do
          local slot = x[{{i * B, (i + 1) * B}, {}, h0 + i}]   -- [B, pos, dh]
          if mean then slot:copy_(mean[h0 + i]) else slot:zero_() end
        end
      end
      local o = {return_type = "loss", loss_per_token = true, fwd_hooks = {{name, ablate}}}
      local input = tk
      if l > 0 then
        input = resid:unsqueeze(0):expand(k, B, P, resid:size(2)):reshape(rows, P, resid:size(2))
        o.start_at_layer, o.tokens = l, tk
      end
      local loss = model:_run(input, o, {loss_slice = {from, to}})
      for i = 0, k - 1 do
        scores[{l, h0 + i}] = loss_of(loss:narrow(0, i * B, B)) - base
        done = done + 1
        if progress then progress(done, L * H) end
      end
    end
    ::next_layer::
  end
  return scores
end

-- Loss (or logits, opts.return_type) with every head except `keep` ("L.H" names or {l, h})
-- ablated at hook_z (zero, or mean with opts.mode = "mean").
function M.ablate_all_except(model, tokens, keep, opts)
  mi().utils.check_opts("analysis.ablate_all_except", opts, {"loss_per_token", "mode", "return_type"})
  want_model(model)
  want_list(keep, "keep")
  opts = opts or {}
  local H = model.cfg.n_heads
  local kept = {}
  for _, k in ipairs(keep) do
    local l, h = M.parse_head(model, k, "ablate_all_except")
    kept[l * H + h] = true
  end
  local means = opts.mode == "mean" and mean_head_acts(model, tokens, "z") or nil
  return model:run_with_hooks(tokens, {
    return_type = opts.return_type or "loss", loss_per_token = opts.loss_per_token,
    fwd_hooks = {{function(n) return n:match("attn%.hook_z$") ~= nil end, function(z, hook)
      local l = hook:layer()
      for h = 0, H - 1 do
        if not kept[l * H + h] then
          local slot = z[{{}, {}, h}]
          if means then slot:copy_(means[l][h]) else slot:zero_() end
        end
      end
    end}}})
end

-- ---------------------------------------------------------------- circuits

-- W_E W_V W_O W_U of one head as a FactoredMatrix [d_vocab, d_vocab].
function M.full_ov_circuit(model, layer, head)
  local m = mi()
  want_model(model)
  want_layer(model, layer, "layer")
  want_head(model, head, "head")
  return m.FactoredMatrix(model.W_E:matmul(model.W_V[layer][head]),
                          model.W_O[layer][head]:matmul(model.W_U))
end

-- Several heads together: their W_V side by side, W_O stacked ("L.H" names or {l, h}).
function M.effective_ov_circuit(model, heads)
  local m = mi()
  want_model(model)
  want_list(heads, "heads")
  if #heads == 0 then fail("heads is empty") end
  local vs, os_ = {}, {}
  for _, k in ipairs(heads) do
    local l, h = M.parse_head(model, k, "effective_ov_circuit")
    vs[#vs + 1] = model.W_V[l][h]
    os_[#os_ + 1] = model.W_O[l][h]
  end
  return m.FactoredMatrix(model.W_E:matmul(m.cat(vs, 1)), m.cat(os_, 0):matmul(model.W_U))
end

-- Fraction of rows i whose largest entry (top-k with k > 1) lies in column i, computed in
-- row chunks of opts.chunk so that the full [V, V] matrix is never formed.
function M.top_k_accuracy(fm, k, opts)
  mi().utils.check_opts("analysis.top_k_accuracy", opts, {"chunk", "progress"})
  local m = mi()
  if typename(fm) ~= "miwb.FactoredMatrix" then fail("expected a FactoredMatrix as fm, got %s", typename(fm)) end
  k = k == nil and 1 or want_int(k, "k", 1)
  opts = opts or {}
  local chunk = opts.chunk == nil and 1000 or want_int(opts.chunk, "opts.chunk", 1)
  local n = fm.A:size(-2)
  local hits = 0
  for start = 0, n - 1, chunk do
    local len = math.min(chunk, n - start)
    local rows = fm.A:narrow(-2, start, len):matmul(fm.B)          -- [len, V]
    local idx = m.arange(start, start + len, 1, {dtype = "int64"}):unsqueeze(-1)
    if k == 1 then
      hits = hits + rows:argmax(-1, true):eq(idx):sum():item()
    else
      local _, top = rows:topk(k, -1)
      hits = hits + top:eq(idx):sum():item()
    end
    if opts.progress then opts.progress(start + len, n) end
  end
  return hits / n
end

function M.top_1_acc(fm, opts) return M.top_k_accuracy(fm, 1, opts) end

-- softmax(mask(W_pos W_Q W_K^T W_pos^T / sqrt(d_head))) of one head: [n_ctx, n_ctx];
-- masked (future) entries get -1e6 before the softmax as in the notebook.
function M.pos_qk_pattern(model, layer, head)
  local m = mi()
  want_model(model)
  want_layer(model, layer, "layer")
  want_head(model, head, "head")
  if not model.W_pos then
    fail("the model has no learned positional embedding W_pos (positional_embedding_type %s)",
         tostring(model.cfg.positional_embedding_type))
  end
  local W_pos = model.W_pos
  local q = W_pos:matmul(model.W_Q[layer][head])
  local k = W_pos:matmul(model.W_K[layer][head])
  local scores = q:matmul(k.T) / math.sqrt(model.cfg.d_head)
  local n = scores:size(0)
  local mask = m.ones(n, n):tril():bool()
  scores = m.where(mask, scores, m.full({n, n}, -1.0e6))
  return scores:softmax(-1)
end

-- [2 + H, seq, d]: embed, pos_embed and each layer-0 head's result (cache without batch dim).
function M.decompose_qk_input(cache)
  local m = mi()
  want_cache(cache)
  local embed = cache("embed"):unsqueeze(0)
  local pos = cache("pos_embed"):unsqueeze(0)
  local res = cache("result", 0):permute({1, 0, 2})     -- [H, seq, d]
  return m.cat({embed, pos, res}, 0)
end

function M.decompose_q(decomposed, head, model, layer)
  want_tensor(decomposed, "decomposed", nil, {3})
  want_model(model)
  want_head(model, head, "head")
  if layer ~= nil then want_layer(model, layer, "layer") end
  return mi().einsum("c seq d, d dh -> c seq dh", decomposed, model.W_Q[layer or 1][head])
end

function M.decompose_k(decomposed, head, model, layer)
  want_tensor(decomposed, "decomposed", nil, {3})
  want_model(model)
  want_head(model, head, "head")
  if layer ~= nil then want_layer(model, layer, "layer") end
  return mi().einsum("c seq d, d dh -> c seq dh", decomposed, model.W_K[layer or 1][head])
end

-- [nQ, nK, seqQ, seqK]: y_i W_Q W_K^T y_j^T (unscaled, as the notebook).
function M.decompose_attn_scores(dq, dk)
  want_tensor(dq, "dq", nil, {3})
  want_tensor(dk, "dk", nil, {3})
  return mi().einsum("nQ seqQ dh, nK seqK dh -> nQ nK seqQ seqK", dq, dk)
end

-- W_E W_Q^1 (W_K^1)^T (W_O^0)^T (W_V^0)^T W_E^T as a FactoredMatrix, query side first.
function M.find_K_comp_full_circuit(model, prev_head, ind_head)
  local m = mi()
  want_model(model)
  if model.cfg.n_layers < 2 then fail("the model needs 2 layers (heads of layer 0 and 1), it has %d", model.cfg.n_layers) end
  want_head(model, prev_head, "prev_head")
  want_head(model, ind_head, "ind_head")
  local W_E = model.W_E
  local Q = W_E:matmul(model.W_Q[1][ind_head])                                 -- [V, dh]
  local K = W_E:matmul(model.W_V[0][prev_head]):matmul(model.W_O[0][prev_head])
              :matmul(model.W_K[1][ind_head])                                   -- [V, dh]
  return m.FactoredMatrix(Q, K.T)
end

-- ||W_A W_B||_F / (||W_A||_F ||W_B||_F)
function M.get_comp_score(W_A, W_B)
  want_tensor(W_A, "W_A", nil, {2})
  want_tensor(W_B, "W_B", nil, {2})
  return W_A:matmul(W_B):norm():item() / (W_A:norm():item() * W_B:norm():item())
end

-- Composition scores between the heads of layer `from` (default 0) and layer `to` (default 1):
-- {Q = [H, H], K = [H, H], V = [H, H]} with rows the writing head, as the notebook.
function M.composition_scores(model, from, to)
  local m = mi()
  want_model(model)
  from = want_layer(model, from or 0, "from")
  to = want_layer(model, to or 1, "to")
  local H = model.cfg.n_heads
  local out = {Q = m.zeros(H, H), K = m.zeros(H, H), V = m.zeros(H, H)}
  for a = 0, H - 1 do
    local W_A = model.W_V[from][a]:matmul(model.W_O[from][a])                  -- [d, d]
    for b = 0, H - 1 do
      local W_QK = model.W_Q[to][b]:matmul(model.W_K[to][b].T)
      local W_OV = model.W_V[to][b]:matmul(model.W_O[to][b])
      out.Q[{a, b}] = M.get_comp_score(W_A, W_QK)
      out.K[{a, b}] = M.get_comp_score(W_A, W_QK.T)
      out.V[{a, b}] = M.get_comp_score(W_A, W_OV)
    end
  end
  return out
end

-- Kaiming-uniform init as torch's nn.init.kaiming_uniform_(W, a=sqrt(5)) for W [n, fan_out,
-- fan_in]... torch computes fan_in from dim 1 of a 3-D [4, d_head, d_model] tensor times the
-- receptive field (d_model): bound = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)).
local function kaiming_uniform(shape, g)
  local m = mi()
  local fan_in = shape[2]
  for i = 3, #shape do fan_in = fan_in * shape[i] end
  local gain = math.sqrt(2 / (1 + 5))
  local bound = gain * math.sqrt(3 / fan_in)
  return m.rand(shape, g) * (2 * bound) - bound
end

-- n_samples composition scores of random W_OV and W_QK built from Kaiming-uniform factors of
-- the model's shapes, as the notebook's baseline. Returns a 1-D tensor of scores.
function M.random_comp_baseline(model, n_samples, opts)
  mi().utils.check_opts("analysis.random_comp_baseline", opts, {"progress", "seed"})
  local m = mi()
  -- only the shapes are used: a table {cfg = {d_head = , d_model = }} will do
  local cfg = type(model) == "table" and model.cfg
  if not (type(cfg) == "table" and math.type(cfg.d_head) == "integer" and math.type(cfg.d_model) == "integer") then
    fail("expected a HookedTransformer (or a table with cfg.d_head and cfg.d_model) as model, got %s", typename(model))
  end
  want_int(n_samples, "n_samples", 0)
  opts = opts or {}
  local g = m.Generator(opts.seed or 0)
  local dh, d = model.cfg.d_head, model.cfg.d_model
  local out = m.zeros(n_samples)
  for i = 0, n_samples - 1 do
    local W = kaiming_uniform({4, dh, d}, g)
    out[i] = M.get_comp_score(W[0].T:matmul(W[1]), W[2].T:matmul(W[3]))
    if opts.progress then opts.progress(i + 1, n_samples) end
  end
  return out
end

-- mi.analysis: the functions above, each naming itself in its errors (M keeps the unwrapped ones
-- for the calls between them)
function M._install(m)
  m.analysis = m.utils.name_errors_table(M, "mi.analysis.")
  package.loaded["miwb.analysis"] = m.analysis
end

return M
