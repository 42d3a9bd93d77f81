-- The analysis library on models whose answers are known without running the code under test:
-- a hand-built model with a planted previous-token head (0.1) and induction head (1.2), and
-- random models for the notebook's identities (checked against the forward pass's own cache).
local T = require("testlib")
local mi = require("miwb")
local A = mi.analysis

local toy = mi.toy.induction_circuit{seed = 1}
local S = 30
local rep = A.generate_repeated_tokens(toy, S, 4, {seed = 7})
local _, rep_cache = toy:run_with_cache(rep)

T.test("generate_repeated_tokens: [batch, 1+2S], BOS first, second copy equal to the first", function()
  local s = rep:shape()
  T.eq(s[1], 4); T.eq(s[2], 1 + 2 * S)
  T.eq(rep:dtype(), "int64")
  local t = rep:totable()
  for b = 1, 4 do
    T.eq(t[b][1], A.bos_id(toy))
    for i = 2, S + 1 do T.eq(t[b][i], t[b][i + S], "repeat at " .. i) end
  end
  local again = A.generate_repeated_tokens(toy, S, 4, {seed = 7})
  T.eq((again - rep):abs():sum():item(), 0, "same seed, same tokens")
end)

T.test("get_log_probs of uniform logits is -log(V) everywhere", function()
  local V = 7
  local logits = mi.zeros(2, 5, V)
  local toks = mi.randint(0, V, {2, 5})
  local lp = A.get_log_probs(logits, toks)
  T.eq(table.concat(lp:shape(), ","), "2,4")
  T.near(lp:max():item(), -math.log(V), 1e-5)
  T.near(lp:min():item(), -math.log(V), 1e-5)
end)

T.test("detectors find exactly the planted heads", function()
  local _, prev = A.prev_attn_detector(toy, rep_cache)
  local _, ind = A.induction_attn_detector(toy, rep_cache)
  local _, cur = A.current_attn_detector(toy, rep_cache)
  local _, first = A.first_attn_detector(toy, rep_cache)
  T.eq(table.concat(prev, " "), "0.1")
  T.eq(table.concat(ind, " "), "1.2")
  T.eq(#cur, 0, "no current-token head")
  T.eq(#first, 0, "no first-token head")
end)

T.test("induction scores through a pattern hook match the cached patterns' diagonal", function()
  local scores = A.induction_scores(toy, rep)
  T.eq(table.concat(A.heads_above(scores, 0.5), " "), "1.2")
  -- independent: average the diagonal of the cached pattern by explicit loops
  local p = rep_cache("pattern", 1):totable()          -- [b][h][q][k]
  local sum, n = 0, 0
  for b = 1, #p do
    -- the whole diagonal at offset 1-S, as the notebook: query rows S-1 .. 2S (0-based)
    for q = S - 1, 2 * S do sum = sum + p[b][3][q + 1][q - S + 2]; n = n + 1 end
  end
  T.near(scores[{1, 2}]:item(), sum / n, 1e-5)
end)

T.test("detect_head (TransformerLens patterns) scores the planted heads near 1", function()
  local toks = rep[0]
  local prev = A.detect_head(toy, toks, "previous_token_head")
  local ind = A.detect_head(toy, toks, "induction_head")
  T.truthy(prev[{0, 1}]:item() > 0.95, "prev-token head")
  T.truthy(ind[{1, 2}]:item() > 0.45, "induction head (half the sequence has no earlier copy)")
  local _, best = ind:reshape({-1}):max(0)
  T.eq(best:item(), 1 * toy.cfg.n_heads + 2)
  local abs = A.detect_head(toy, toks, "previous_token_head", {error_measure = "abs"})
  T.truthy(abs[{0, 1}]:item() > abs[{0, 0}]:item())
  T.raises(function() A.detect_head(toy, toks, "bogus_head") end, "detection pattern")
  T.raises(function() A.detect_head(toy, toks, mi.zeros(3, 3)) end, "detection pattern must be")
end)

T.test("ablating the planted heads costs the most loss on the second copy", function()
  local scores = A.head_ablation_scores(toy, rep, {slice = {S, 2 * S}})
  local flat = scores:reshape({-1})
  local _, top = flat:topk(2, 0)
  local got = {top[0]:item(), top[1]:item()}
  table.sort(got)
  local H = toy.cfg.n_heads
  T.eq(got[1], 0 * H + 1); T.eq(got[2], 1 * H + 2)
  T.truthy(flat:max():item() > 1.0, "loss increase > 1 nat")
  local mean = A.head_ablation_scores(toy, rep, {slice = {S, 2 * S}, mode = "mean", act = "z"})
  T.truthy(mean[{1, 2}]:item() > 1.0)
end)

-- the naive loop of the notebook: one full rerun per head with a hook on its v or z
local function naive_ablation(model, tokens, act, mode, from, to)
  local function loss_of(per) return per:narrow(1, from, to - from):mean():item() end
  local base = loss_of(model(tokens, {return_type = "loss", loss_per_token = true}))
  local L, H = model.cfg.n_layers, model.cfg.n_heads
  local out = mi.zeros(L, H)
  for l = 0, L - 1 do
    local name = mi.utils.get_act_name(act, l)
    local _, cache = model:run_with_cache(tokens, {names_filter = name})
    local means = cache[name]:mean({0, 1})
    for h = 0, H - 1 do
      local per = model:run_with_hooks(tokens, {return_type = "loss", loss_per_token = true, fwd_hooks = {{name,
        function(x) if mode == "zero" then x[{{}, {}, h}] = 0 else x[{{}, {}, h}] = means[h] end end}}})
      out[{l, h}] = loss_of(per) - base
    end
  end
  return out
end

T.test("head_ablation_scores (start_at_layer, batched copies, sliced unembedding) = full reruns with a hook", function()
  local models = {
    ln_mlp = mi.HookedTransformer({d_model = 24, d_head = 6, n_heads = 4, n_layers = 3, n_ctx = 16, d_vocab = 37,
                                   d_mlp = 32, act_fn = "gelu_new", seed = 11}),
    shortformer = mi.HookedTransformer({d_model = 24, d_head = 6, n_heads = 4, n_layers = 2, n_ctx = 16,
                                        d_vocab = 37, attn_only = true, normalization_type = "None",
                                        positional_embedding_type = "shortformer", use_attn_result = true, seed = 12}),
  }
  local tokens = mi.randint(0, 37, {3, 12}, mi.Generator(5))
  for mname, model in pairs(models) do
    for _, c in ipairs({{"v", "zero", nil}, {"z", "mean", {4, 11}}, {"v", "mean", {2, -3}}}) do
      local act, mode, slice = c[1], c[2], c[3]
      local from, to = 0, 11
      if slice then from, to = slice[1], slice[2] < 0 and 11 + slice[2] or slice[2] end
      local want = naive_ablation(model, tokens, act, mode, from, to)
      for _, bh in ipairs({1, 3, 4}) do                -- heads per batched run: 1, 3 + 1, all
        local got = A.head_ablation_scores(model, tokens, {act = act, mode = mode, slice = slice, batch_heads = bh})
        local err = (got - want):abs():max():item()
        T.truthy(err < 1e-5, ("%s %s %s batch_heads %d: max error %.3g"):format(mname, act, mode, bh, err))
      end
      T.truthy(want:abs():max():item() > 1e-3, "the ablations move the loss")
    end
  end
  -- grouped-query attention: z per query head (the last layer through the linear shortcut); v is
  -- a key/value head shared by several query heads, which the function refuses to call a head's score
  local gqa = mi.HookedTransformer({d_model = 24, d_head = 6, n_heads = 4, n_key_value_heads = 2, n_layers = 2,
                                    n_ctx = 16, d_vocab = 37, attn_only = true, normalization_type = "None",
                                    positional_embedding_type = "rotary", seed = 13})
  for _, mode in ipairs({"zero", "mean"}) do
    local want = naive_ablation(gqa, tokens, "z", mode, 0, 11)
    local err = (A.head_ablation_scores(gqa, tokens, {act = "z", mode = mode}) - want):abs():max():item()
    T.truthy(err < 1e-5, ("gqa z %s: max error %.3g"):format(mode, err))
  end
  T.raises(function() A.head_ablation_scores(gqa, tokens) end,
           "act 'v' would ablate a key/value head, which 2 query heads share under grouped-query attention")
  -- a permanent hook downstream of the last layer's heads: the shortcut would skip it, so the
  -- function reruns instead (the naive loop runs permanent hooks too)
  local sf = models.shortformer
  sf:add_perma_hook("blocks.1.hook_resid_post", function(x) return x:tanh() * 3 end)
  local want = naive_ablation(sf, tokens, "v", "zero", 0, 11)
  local err = (A.head_ablation_scores(sf, tokens) - want):abs():max():item()
  sf:reset_hooks({including_permanent = true})
  T.truthy(err < 1e-5, ("permanent hook: max error %.3g"):format(err))
  local model = models.ln_mlp
  T.raises(function() A.head_ablation_scores(model, tokens, {slice = {5, 20}}) end,
           "slice {5, 20} is outside the 11 predicted positions")
  T.raises(function() A.head_ablation_scores(model, tokens, {batch_heads = 0}) end, "batch_heads must be a positive integer")
end)

T.test("ablating all heads except the circuit keeps the second-copy loss low", function()
  local clean = toy(rep, {return_type = "loss", loss_per_token = true})
  local kept = A.ablate_all_except(toy, rep, {"0.1", "1.2"}, {loss_per_token = true})
  local none = A.ablate_all_except(toy, rep, {}, {loss_per_token = true})
  local function second(l) return l:narrow(1, S, S):mean():item() end
  T.truthy(math.abs(second(kept) - second(clean)) < 0.2)
  T.truthy(second(none) > second(clean) + 1)
  T.raises(function() A.ablate_all_except(toy, rep, {"7.0"}) end, "no head")
end)

T.test("OV circuit of the planted copying head: top-1 accuracy 1, chunked as dense", function()
  local ov = A.full_ov_circuit(toy, 1, 2)
  T.near(A.top_1_acc(ov, {chunk = 7}), 1.0, 1e-9)
  -- chunking against the dense computation on a random factored matrix
  local Am, Bm = mi.randn(23, 5), mi.randn(5, 23)
  local dense = Am:matmul(Bm):argmax(-1):totable()
  local hits = 0
  for i = 1, 23 do if dense[i] == i - 1 then hits = hits + 1 end end
  T.near(A.top_1_acc(mi.FactoredMatrix(Am, Bm), {chunk = 4}), hits / 23, 1e-9)
  local eff = A.effective_ov_circuit(toy, {"1.2", {1, 0}})
  T.truthy(A.top_1_acc(eff) > 0.9)
end)

T.test("positional QK pattern of the planted previous-token head", function()
  local pos = A.pos_qk_pattern(toy, 0, 1)
  T.truthy(pos:diagonal(-1, 0, 1):mean():item() > 0.99)
  T.near(pos[{0, 0}]:item(), 1, 1e-6)
  T.near(pos:sum(-1):mean():item(), 1, 1e-5)
end)

T.test("K-composition of the planted pair stands far above the random baseline", function()
  local comp = A.composition_scores(toy)
  local base = A.random_comp_baseline(toy, 50, {seed = 3})
  local m, s = base:mean():item(), base:std():item()
  local k = comp.K[{1, 2}]:item()
  -- closed form for the planted pair without noise: 1/sqrt(d_vocab)
  T.near(k, 1 / math.sqrt(toy.cfg.d_vocab), 0.02)
  T.truthy(k > m + 20 * s, ("K-comp %.4f vs baseline %.4f +- %.4f"):format(k, m, s))
  T.truthy(comp.K[{1, 2}]:item() > comp.Q[{1, 2}]:item() * 3)
  -- the baseline of the notebook's shapes (d_model 768, d_head 64) has mean near 0.036
  local fake = {cfg = {d_head = 64, d_model = 768}}
  T.near(A.random_comp_baseline(fake, 20, {seed = 1}):mean():item(), 0.036, 0.003)
end)

T.test("get_comp_score closed forms", function()
  T.near(A.get_comp_score(mi.eye(4), mi.eye(4)), 0.5, 1e-6)   -- 2 / (2 * 2)
  local a = mi.zeros(3, 3); a[{0, 0}] = 1
  local b = mi.zeros(3, 3); b[{1, 1}] = 1
  T.near(A.get_comp_score(a, b), 0, 1e-9)
end)

-- identities of the notebook on random models
local function random_attn_only(pos_type)
  local cfg = mi.HookedTransformerConfig{d_model = 24, d_head = 6, n_heads = 3, n_layers = 2,
    n_ctx = 20, d_vocab = 31, attn_only = true, normalization_type = "None",
    positional_embedding_type = pos_type, use_attn_result = true, seed = 5}
  local m = mi.HookedTransformer(cfg)
  -- give the biases non-zero values so that the identities must account for them
  local sd = m:state_dict()
  local g = mi.Generator(11)
  for name, t in pairs(sd) do
    if name:match("%.b_") then t:copy_(mi.randn(t:shape(), g) * 0.1) end
  end
  return m
end

for _, pos_type in ipairs{"standard", "shortformer"} do
  T.test("logit attribution rows sum to the correct-token logits (" .. pos_type .. ")", function()
    local m = random_attn_only(pos_type)
    local toks = mi.randint(0, 31, {1, 12}, mi.Generator(2))
    local logits, cache = m:run_with_cache(toks, {remove_batch_dim = true})
    local attr = A.logit_attribution_all(m, cache, toks)
    local t, lg = toks[0]:totable(), logits[0]
    local bU = m.b_U
    local sums = attr:sum(-1):totable()
    for i = 1, 11 do
      local want = lg[{i - 1, t[i + 1]}]:item() - bU[t[i + 1]]:item()
      T.near(sums[i], want, 1e-3, "position " .. (i - 1))
    end
    if pos_type == "shortformer" then
      -- the notebook's two-layer form agrees with the general one (no b_O there: compare parts)
      local two = A.logit_attribution(cache("embed"), cache("result", 0), cache("result", 1), m.W_U, toks[0])
      T.near_table(two:narrow(1, 1, 6):totable(), attr:narrow(1, 1, 6):totable(), 1e-4)
    end
  end)
end

T.test("decomposed q and k sum to the cached q and k of layer 1 (shortformer)", function()
  local m = random_attn_only("shortformer")
  local toks = mi.randint(0, 31, {1, 10}, mi.Generator(4))
  local _, cache = m:run_with_cache(toks, {remove_batch_dim = true})
  local dqk = A.decompose_qk_input(cache)
  T.eq(table.concat(dqk:shape(), ","), "5,10,24")
  local bO = m.b_O[0]
  T.near((dqk:sum(0) + bO - (cache("resid_pre", 1) + cache("pos_embed"))):abs():max():item(), 0, 1e-4)
  for h = 0, 2 do
    local dq, dk = A.decompose_q(dqk, h, m), A.decompose_k(dqk, h, m)
    local q = dq:sum(0) + bO:matmul(m.W_Q[1][h]) + m.b_Q[1][h]
    local k = dk:sum(0) + bO:matmul(m.W_K[1][h]) + m.b_K[1][h]
    T.near((q - cache("q", 1)[{{}, h}]):abs():max():item(), 0, 1e-4)
    T.near((k - cache("k", 1)[{{}, h}]):abs():max():item(), 0, 1e-4)
    local sc = A.decompose_attn_scores(dq, dk)
    T.eq(table.concat(sc:shape(), ","), "5,5,10,10")
  end
end)

T.done()
