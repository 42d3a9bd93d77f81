-- test_patching.lua: mi.patching against a naive patcher written here (one full run_with_hooks
-- per index, the patch made by blending with a one-hot mask rather than by assignment) and
-- against float64 PyTorch grids (tests/fixtures/gen_patching.py).
local T = require("testlib")
local mi = require("miwb")
local P = mi.patching

local function small_models()
  return {
    gpt2 = mi.HookedTransformer({d_model = 16, d_head = 4, n_heads = 3, n_layers = 2, n_ctx = 12, d_vocab = 23,
                                 d_mlp = 24, act_fn = "gelu_new", normalization_type = "LN", seed = 7}),
    attn = mi.HookedTransformer({d_model = 16, d_head = 4, n_heads = 4, n_layers = 3, n_ctx = 12, d_vocab = 19,
                                 attn_only = true, normalization_type = "None",
                                 positional_embedding_type = "shortformer", use_attn_result = true, seed = 8}),
  }
end

-- bigger weights than the default init, so that patches move the metric visibly
local function boost(model, f)
  f = f or 6
  for _, n in ipairs(model:state_dict_names()) do
    local t = model._core:param(n)
    if n:find("W_") then t:copy_(t * f) end
  end
  return model
end

local function metric_for(a, b)
  -- logit difference at the last position, averaged over the batch
  return function(logits)
    local last = logits:select(1, -1)
    return (last:select(1, a) - last:select(1, b)):mean():item()
  end
end

-- the naive patcher: every index in a full run; the patched slice is set by mask blending
local function naive(model, corrupted, clean_cache, metric, act_name, ranges, region)
  local out = {}
  local function rec(idx, d)
    if d > #ranges then
      local name = mi.utils.get_act_name(act_name, idx[1])
      local clean = clean_cache[name]
      local mask = mi.zeros(clean:shape())
      mask[region(idx)] = 1
      local logits = model:run_with_hooks(corrupted, {fwd_hooks = {{name, function(act)
        return act * (1 - mask) + clean * mask
      end}}})
      out[#out + 1] = metric(logits)
      return
    end
    for v = 0, ranges[d] - 1 do idx[d] = v; rec(idx, d + 1) end
    idx[d] = nil
  end
  rec({}, 1)
  return mi.tensor(out):view(ranges)
end

local function inputs(model, B, Pn, seed)
  local g = mi.Generator(seed)
  local clean = mi.randint(0, model.cfg.d_vocab, {B, Pn}, g)
  local corrupted = clean:clone()
  corrupted[{{}, 1}] = mi.randint(0, model.cfg.d_vocab, {B}, g)
  corrupted[{{}, 3}] = mi.randint(0, model.cfg.d_vocab, {B}, g)
  return clean, corrupted
end

local cases = {
  {"get_act_patch_resid_pre", "resid_pre", "LP", function(i) return {{}, i[2]} end},
  {"get_act_patch_resid_mid", "resid_mid", "LP", function(i) return {{}, i[2]} end, true},
  {"get_act_patch_attn_out", "attn_out", "LP", function(i) return {{}, i[2]} end},
  {"get_act_patch_mlp_out", "mlp_out", "LP", function(i) return {{}, i[2]} end, true},
  {"get_act_patch_attn_head_out_by_pos", "z", "LPH", function(i) return {{}, i[2], i[3]} end},
  {"get_act_patch_attn_head_q_by_pos", "q", "LPH", function(i) return {{}, i[2], i[3]} end},
  {"get_act_patch_attn_head_k_by_pos", "k", "LPH", function(i) return {{}, i[2], i[3]} end},
  {"get_act_patch_attn_head_v_by_pos", "v", "LPH", function(i) return {{}, i[2], i[3]} end},
  {"get_act_patch_attn_head_pattern_by_pos", "pattern", "LHP", function(i) return {{}, i[2], i[3]} end},
  {"get_act_patch_attn_head_pattern_dest_src_pos", "pattern", "LHPP", function(i) return {{}, i[2], i[3], i[4]} end},
  {"get_act_patch_attn_head_out_all_pos", "z", "LH", function(i) return {{}, {}, i[2]} end},
  {"get_act_patch_attn_head_q_all_pos", "q", "LH", function(i) return {{}, {}, i[2]} end},
  {"get_act_patch_attn_head_k_all_pos", "k", "LH", function(i) return {{}, {}, i[2]} end},
  {"get_act_patch_attn_head_v_all_pos", "v", "LH", function(i) return {{}, {}, i[2]} end},
  {"get_act_patch_attn_head_pattern_all_pos", "pattern", "LH", function(i) return {{}, i[2]} end},
}

local function ranges_of(model, code, Pn)
  local r = {}
  for ch in code:gmatch(".") do
    r[#r + 1] = ch == "L" and model.cfg.n_layers or ch == "H" and model.cfg.n_heads or Pn
  end
  return r
end

for mname, model in pairs(small_models()) do
  boost(model)
  local B, Pn = 2, 6
  local clean, corrupted = inputs(model, B, Pn, 11)
  local _, clean_cache = model:run_with_cache(clean)
  local metric = metric_for(3, 5)
  for _, c in ipairs(cases) do
    local fname, act, code, region, mlp_only = c[1], c[2], c[3], c[4], c[5]
    if not (mlp_only and model.cfg.attn_only) then
      T.test(mname .. ": " .. fname .. " equals one full patched run per index", function()
        local got = P[fname](model, corrupted, clean_cache, metric)
        local want = naive(model, corrupted, clean_cache, metric, act, ranges_of(model, code, Pn), region)
        T.eq(table.concat(got:shape(), ","), table.concat(want:shape(), ","), "shape")
        mi.assert_close(got, want, 1e-4, 1e-5)
        -- the patches must move the metric somewhere, or the comparison says little
        T.truthy((want - want:reshape(-1)[0]):abs():max():item() > 1e-3, "the grid is not constant")
        -- one patch per forward gives the same
        mi.assert_close(P[fname](model, corrupted, clean_cache, metric, {batch_size = 1}), want, 1e-4, 1e-5)
        -- the same metric as mi.metrics.logit_diff: logits computed at the last position only
        mi.assert_close(P[fname](model, corrupted, clean_cache, mi.metrics.logit_diff(3, 5, -1)), want, 1e-4, 1e-5)
      end)
    end
  end

  T.test(mname .. ": with a hook on the model, patched runs keep running it", function()
    -- a persistent hook that scales one head's output: the patched runs must include it
    local hname = mi.utils.get_act_name("z", 1)
    local function scale(z) z[{{}, {}, 1}] = z[{{}, {}, 1}] * 0.5 end
    model:add_hook(hname, scale)
    local ok, err = pcall(function()
      local _, cc = model:run_with_cache(clean)
      local want = naive(model, corrupted, cc, metric, "z", ranges_of(model, "LH", Pn), function(i) return {{}, {}, i[2]} end)
      mi.assert_close(P.get_act_patch_attn_head_out_all_pos(model, corrupted, cc, metric), want, 1e-4, 1e-5)
      mi.assert_close(P.get_act_patch_attn_head_out_all_pos(model, corrupted, cc, mi.metrics.logit_diff(3, 5)), want, 1e-4, 1e-5)
    end)
    model:reset_hooks()
    if not ok then error(err, 0) end
  end)

  T.test(mname .. ": the *_every helpers stack the single grids", function()
    local a = P.get_act_patch_attn_head_all_pos_every(model, corrupted, clean_cache, metric)
    T.eq(table.concat(a:shape(), ","), "5," .. model.cfg.n_layers .. "," .. model.cfg.n_heads)
    mi.assert_close(a[3], P.get_act_patch_attn_head_v_all_pos(model, corrupted, clean_cache, metric), 1e-5, 1e-6)
    local b = P.get_act_patch_attn_head_by_pos_every(model, corrupted, clean_cache, metric)
    T.eq(table.concat(b:shape(), ","), "5," .. model.cfg.n_layers .. "," .. Pn .. "," .. model.cfg.n_heads)
    mi.assert_close(b[4], P.get_act_patch_attn_head_pattern_by_pos(model, corrupted, clean_cache, metric):permute(0, 2, 1),
                    1e-5, 1e-6)
    if model.cfg.attn_only then
      T.raises(function() P.get_act_patch_block_every(model, corrupted, clean_cache, metric) end,
               "attention-only")
    else
      local e = P.get_act_patch_block_every(model, corrupted, clean_cache, metric)
      T.eq(table.concat(e:shape(), ","), "3," .. model.cfg.n_layers .. "," .. Pn)
      mi.assert_close(e[2], P.get_act_patch_mlp_out(model, corrupted, clean_cache, metric), 1e-5, 1e-6)
    end
  end)

  T.test(mname .. ": generic_activation_patch with index_df, keyword table and return_index_df", function()
    local rows = {{1, 4}, {0, 2}, {1, 0}}
    local got, df = P.generic_activation_patch(model, corrupted, clean_cache, metric, P.layer_pos_patch_setter,
                                               "resid_pre", {index_df = rows, return_index_df = true})
    T.eq(table.concat(got:shape(), ","), "3")
    T.eq(#df, 3)
    local full = P.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    for i, r in ipairs(rows) do T.near(got[i - 1]:item(), full[{r[1], r[2]}]:item(), 1e-5) end
    local g2, df2 = P.generic_activation_patch(model, corrupted, clean_cache, metric, P.layer_pos_patch_setter,
                                               "resid_pre", {"layer", "pos"}, {return_index_df = true})
    mi.assert_close(g2, full, 1e-6, 1e-6)
    T.eq(#df2, model.cfg.n_layers * Pn)
    T.eq(df2[2][1], 0); T.eq(df2[2][2], 1)   -- the last axis runs fastest
  end)

  T.test(mname .. ": a patch with the corrupted run's own activations changes nothing", function()
    local _, corr_cache = model:run_with_cache(corrupted)
    local base = metric(model(corrupted))
    local g = P.get_act_patch_attn_head_out_all_pos(model, corrupted, corr_cache, metric)
    mi.assert_close(g, mi.full(g:shape(), base), 1e-5, 1e-5)
  end)

  T.test(mname .. ": bad input is an error naming the function and the shapes; no hooks remain", function()
    local longer = mi.cat({corrupted, corrupted:narrow(1, 0, 1)}, 1)   -- [B, P+1]
    local e = T.raises(function() P.get_act_patch_resid_pre(model, longer, clean_cache, metric) end,
                       "get_act_patch_resid_pre")
    T.truthy(tostring(e):find("[2,7]", 1, true) and tostring(e):find("[2,6,16]", 1, true), "names both shapes: " .. tostring(e))
    T.raises(function() P.get_act_patch_resid_pre(model, corrupted, clean_cache, function() return {} end) end,
             "patching_metric returned a table, expected a number")
    T.raises(function() P.get_act_patch_resid_pre(model, corrupted, clean_cache, function(l) return l end) end,
             "patching_metric returned a tensor of shape")
    T.raises(function() P.get_act_patch_resid_pre(model, corrupted:float(), clean_cache, metric) end,
             "must be int64")
    T.raises(function() P.get_act_patch_resid_pre(model, corrupted, clean_cache, metric, {bogus = 1}) end,
             "unknown option 'bogus'")
    T.raises(function() model:get_act_patch_resid_pre(corrupted, clean_cache, metric) end)
    T.raises(function() P.generic_activation_patch(model, corrupted, clean_cache, metric,
                          P.layer_pos_patch_setter, "resid_pre", {"layer", "nope"}) end, "unknown axis 'nope'")
    local _, partial = model:run_with_cache(clean, {names_filter = "blocks.0.hook_resid_pre"})
    T.raises(function() P.get_act_patch_resid_pre(model, corrupted, partial, metric) end,
             "the clean cache has no 'blocks.1.hook_resid_pre'")
    T.eq(#model._persistent, 0, "no hooks left on the model")
    mi.assert_close(model(corrupted), model:run_with_hooks(corrupted, {}), 0, 0)
  end)
end

-- path patching in an attention-only model without normalization: there, with every other head
-- frozen, the sender's change reaches later residual streams as (z_corr - z_clean) @ W_O
-- exactly, so the receivers' inputs have a closed form
local function rel(a, b, what) T.near(a, b, 1e-5 * math.abs(b) + 1e-4, what) end

T.test("path_patch: sender -> logits and -> receivers' q/k/v match the closed form", function()
  local model = boost(small_models().attn, 2.5)
  local B, Pn = 2, 6
  -- inputs where every path below moves the metric (with boosted weights some patterns are
  -- one-hot, and a path through them can change nothing at the last position)
  local clean, corrupted = inputs(model, B, Pn, 7)
  local metric = metric_for(2, 7)
  local _, cc = model:run_with_cache(clean)
  local _, xc = model:run_with_cache(corrupted)
  local function delta(senders, upto)          -- the senders' change of the residual before block upto
    local d = mi.zeros(B, Pn, model.cfg.d_model)
    for _, s in ipairs(senders) do
      if s[1] < upto then
        local dz = xc[mi.utils.get_act_name("z", s[1])][{{}, {}, s[2]}] - cc[mi.utils.get_act_name("z", s[1])][{{}, {}, s[2]}]
        d = d + dz:matmul(model.W_O[{s[1], s[2]}])
      end
    end
    return d
  end
  local L = model.cfg.n_layers
  -- to the logits
  local senders = {{0, 1}, {1, 3}}
  local final = cc[mi.utils.get_act_name("resid_post", L - 1)] + delta(senders, L)
  local want = metric(final:matmul(model.W_U) + model.b_U)
  rel(P.path_patch(model, clean, corrupted, senders, "logits", metric), want)
  rel(P.path_patch(model, clean, corrupted, {"0.1", "1.3"}, "logits", metric), want)
  -- to q, k and v of later heads
  for _, case in ipairs({{{0, 1}, {{2, 1, "q"}}}, {{0, 2}, {{1, 2, "v"}, {2, 0, "k"}}}, {{1, 0}, {{2, 3, "q"}, {2, 3, "v"}}}}) do
    local snd, recv = case[1], case[2]
    local hooks = {}
    for _, r in ipairs(recv) do
      local l, h, comp = r[1], r[2], r[3]
      local x = cc[mi.utils.get_act_name("resid_pre", l)] + delta({snd}, l)
      if comp ~= "v" then x = x + model.W_pos:narrow(0, 0, Pn) end     -- shortformer: positions in q, k only
      local W = comp == "q" and model.W_Q or comp == "k" and model.W_K or model.W_V
      local b = comp == "q" and model.b_Q or comp == "k" and model.b_K or model.b_V
      local new = x:matmul(W[{l, h}]) + b[{l, h}]                        -- [B, P, dh]
      hooks[#hooks + 1] = {mi.utils.get_act_name(comp, l), function(act) act[{{}, {}, h}] = new end}
    end
    local want2 = metric(model:run_with_hooks(clean, {fwd_hooks = hooks}))
    local got = P.path_patch(model, clean, corrupted, snd, recv, metric)
    rel(got, want2)
    T.truthy(math.abs(want2 - metric(model(clean))) > 1e-2, "the path moves the metric: " .. want2 .. " vs " .. metric(model(clean)))
  end
  -- a sender downstream of the receiver changes nothing
  rel(P.path_patch(model, clean, corrupted, {2, 0}, {{1, 1, "q"}}, metric), metric(model(clean)))
end)

T.test("path_patch: bad input", function()
  local model = small_models().gpt2
  local clean, corrupted = inputs(model, 2, 5, 1)
  local m = metric_for(1, 2)
  T.raises(function() P.path_patch(model, clean, corrupted:narrow(1, 0, 4), {0, 1}, "logits", m) end,
           "path_patch: clean_tokens [2,5] and corrupted_tokens [2,4] must have the same shape")
  T.raises(function() P.path_patch(model, clean, corrupted, {5, 1}, "logits", m) end, "path_patch: sender: no head 5.1 in a model of 2 layers x 3 heads")
  T.raises(function() P.path_patch(model, clean, corrupted, {0, 1}, {{1, 1}}, m) end, "needs a component")
  T.raises(function() P.path_patch(model, clean, corrupted, {0, 1}, {{1, 1, "z"}}, m) end, "'q', 'k' or 'v'")
  T.raises(function() P.path_patch(model, clean, corrupted, {0, 1}, "logits", function() return "x" end) end,
           "path_patch: metric returned a string, expected a number")
  T.eq(#model._persistent, 0)
end)

-- attribution patching: in an attention-only model without normalization the logits are linear
-- in the last layer's attn_out, z, v and pattern, so there the gradient estimate is exact and must
-- equal activation patching's change of the metric; elsewhere it is checked against the
-- formula applied by hand to caches with gradients
T.test("attribution_patch: exact where the model is linear, the formula elsewhere", function()
  local model = boost(small_models().attn, 2.5)
  local B, Pn = 2, 6
  local clean, corrupted = inputs(model, B, Pn, 5)
  local m = mi.metrics.logit_diff(2, 7)
  local attr = P.attribution_patch(model, clean, corrupted, m)
  local _, cc = model:run_with_cache(clean)
  local base = m:value(model(corrupted))
  T.near(attr.corrupted_metric, base, 1e-5 * math.abs(base) + 1e-5)
  local L = model.cfg.n_layers
  local function last(t) return t[L - 1] end
  local function check(key, grid)
    mi.assert_close(last(attr[key]), last(grid) - base, 1e-3, 1e-3 * math.max(1, math.abs(base)))
    T.truthy(last(grid - base):abs():max():item() > 1e-2, key .. ": the patches move the metric")
  end
  check("attn_out", P.get_act_patch_attn_out(model, corrupted, cc, m))
  check("attn_head_out_all_pos", P.get_act_patch_attn_head_out_all_pos(model, corrupted, cc, m))
  check("attn_head_out_by_pos", P.get_act_patch_attn_head_out_by_pos(model, corrupted, cc, m))
  check("attn_head_v_all_pos", P.get_act_patch_attn_head_v_all_pos(model, corrupted, cc, m))
  check("attn_head_pattern_by_pos", P.get_act_patch_attn_head_pattern_by_pos(model, corrupted, cc, m))
  -- every grid: the formula by hand, and the shapes of the activation-patching functions
  -- (this cache holds hook_result's gradient too, which takes the backward per head: float32
  -- rounding differs from attribution_patch's run by some 1e-5 relative)
  local _, xc = model:run_with_cache(corrupted, {incl_bwd = true, grad_output = m})
  local H = model.cfg.n_heads
  for l = 0, L - 1 do
    local function d(a) local n = mi.utils.get_act_name(a, l); return (cc[n] - xc[n]) * xc[n .. "_grad"] end
    mi.assert_close(attr.resid_pre[l], d("resid_pre"):sum({0, 2}), 1e-5, 1e-6)
    mi.assert_close(attr.attn_head_q_by_pos[l], d("q"):sum({0, 3}), 1e-5, 1e-6)
    mi.assert_close(attr.attn_head_k_all_pos[l], d("k"):sum({0, 1, 3}), 1e-5, 1e-6)
    mi.assert_close(attr.attn_head_pattern_dest_src_pos[l], d("pattern"):sum(0), 1e-4, 1e-6)
  end
  T.eq(table.concat(attr.resid_pre:shape(), ","), L .. "," .. Pn)
  T.eq(table.concat(attr.attn_head_out_by_pos:shape(), ","), L .. "," .. Pn .. "," .. H)
  T.eq(table.concat(attr.attn_head_pattern_all_pos:shape(), ","), L .. "," .. H)
  T.eq(attr.mlp_out, nil)
  -- bad input
  T.raises(function() P.attribution_patch(model, clean, corrupted:narrow(1, 0, 5), m) end,
           "attribution_patch: clean_tokens [2,6] and corrupted_tokens [2,5] must have the same shape")
  T.raises(function() P.attribution_patch(model, clean, corrupted, function(l) return 1 end) end,
           "metric must return its value and its gradient")
  T.raises(function() P.attribution_patch(model, clean, corrupted, m, {acts = {"mlp_out"}}) end, "the model has no blocks.0.hook_mlp_out")
  T.eq(#model._persistent, 0)
end)

-- float64 PyTorch grids (tests/fixtures/gen_patching.py) on the fixture models of gen_model.py
local fixture_dir = "tests/fixtures/patching"
for _, name in ipairs({"gpt2", "attn2"}) do
  T.test("PyTorch float64 grids on fixture model " .. name, function()
    local ref = mi.json.read(fixture_dir .. "/" .. name .. ".json")
    local model = T.fixture_model(name)
    local clean = mi.tensor(ref.clean_tokens, "int64")
    local corrupted = mi.tensor(ref.corrupted_tokens, "int64")
    local _, clean_cache = model:run_with_cache(clean)
    local metric = metric_for(ref.answer, ref.wrong)
    local n = 0
    for fname, grid in pairs(ref.grids) do
      local got = P[fname](model, corrupted, clean_cache, metric)
      mi.assert_close(got, mi.tensor(grid), 1e-4, 1e-5)
      n = n + 1
    end
    T.truthy(n >= 4, "several grids checked")
  end)
end

-- grouped-query attention: the Llama fixture of gen_hf_families.py (4 query heads, 2 key/value heads)
local FXL = "tests/fixtures/hf_families/"

T.test("grouped-query attention: k/v grids have the key/value heads; each entry is its patched run", function()
  local model = mi.from_pretrained_no_processing(FXL .. "llama", {tokenizer = false})
  local corrupted = mi.load(FXL .. "llama_expect.safetensors").tokens
  local clean = mi.randint(0, model.cfg.d_vocab, corrupted:shape(), mi.Generator(3))
  local _, cc = model:run_with_cache(clean)
  local m = mi.metrics.logit_diff(3, 5)
  local k = P.get_act_patch_attn_head_k_all_pos(model, corrupted, cc, m)
  local v = P.get_act_patch_attn_head_v_by_pos(model, corrupted, cc, m)
  T.eq(table.concat(k:shape(), ","), "2,2")
  T.eq(table.concat(v:shape(), ","), "2,7,2")
  T.eq(table.concat(P.get_act_patch_attn_head_q_all_pos(model, corrupted, cc, m):shape(), ","), "2,4")
  -- each entry: one run patching that key/value head by hand
  for l = 0, 1 do
    for g = 0, 1 do
      local n = mi.utils.get_act_name("k", l)
      local want = m:value(model:run_with_hooks(corrupted, {fwd_hooks = {{n, function(a)
        a[{{}, {}, g}] = cc[n][{{}, {}, g}]
      end}}}))
      T.near(k[{l, g}]:item(), want, 1e-5 * math.max(1, math.abs(want)), "k " .. l .. "." .. g)
    end
  end
  local n = mi.utils.get_act_name("v", 1)
  local want = m:value(model:run_with_hooks(corrupted, {fwd_hooks = {{n, function(a)
    a[{{}, 4, 1}] = cc[n][{{}, 4, 1}]
  end}}}))
  T.near(v[{1, 4, 1}]:item(), want, 1e-5 * math.max(1, math.abs(want)), "v 1, pos 4, kv head 1")
  T.raises(function() P.get_act_patch_attn_head_all_pos_every(model, corrupted, cc, m) end,
           "get_act_patch_attn_head_all_pos_every: the model has grouped-query attention (n_key_value_heads 2, n_heads 4)")
  -- path patching into a receiver's k patches its key/value head: heads 2 and 3 share one
  local a = P.path_patch(model, clean, corrupted, "0.1", {{1, 2, "k"}}, m)
  local b = P.path_patch(model, clean, corrupted, "0.1", {{1, 3, "k"}}, m)
  T.near(a, b, 1e-6 * math.max(1, math.abs(a)))
  T.eq(#model._persistent, 0)
end)

T.test("attribution_patch on grouped-query attention: the formula with PyTorch's gradients (Llama fixture)", function()
  local model = mi.from_pretrained_no_processing(FXL .. "llama", {tokenizer = false})
  local exp = mi.load(FXL .. "llama_expect.safetensors")
  local ref = mi.load(FXL .. "llama_grads.safetensors")
  local corrupted = exp.tokens
  local clean = mi.randint(0, model.cfg.d_vocab, corrupted:shape(), mi.Generator(4))
  -- the metric: the mean next-token loss, its gradient (softmax - onehot) / count written out here
  local B, Pn, V = corrupted:size(0), corrupted:size(1), model.cfg.d_vocab_out
  local onehot = mi.zeros(B, Pn, V)
  for b = 0, B - 1 do for t = 0, Pn - 2 do onehot[{b, t, corrupted[{b, t + 1}]:item()}] = 1 end end
  local valid = mi.ones(B, Pn, 1)
  valid[{{}, Pn - 1}] = 0
  local count = B * (Pn - 1)
  local function loss(logits)
    local lp = logits:log_softmax(-1)
    return -(lp * onehot):sum():item() / count, (logits:softmax(-1) - onehot) * valid / count
  end
  local r = P.attribution_patch(model, clean, corrupted, loss)
  T.near(r.corrupted_metric, exp["raw.loss"]:item(), 1e-5)
  local _, cc = model:run_with_cache(clean)
  local n = 0
  for l = 0, model.cfg.n_layers - 1 do
    local function d(a)
      local name = mi.utils.get_act_name(a, l)
      return (cc[name] - exp["raw." .. name]:float()) * ref["loss." .. name]
    end
    local function close(got, want, what)
      mi.assert_close(got, want, 1e-3, 1e-4 * math.max(1, want:abs():max():item()))
      n = n + 1
    end
    close(r.attn_head_k_by_pos[l], d("k"):sum({0, 3}), "k")           -- [pos, kv head]
    close(r.attn_head_v_all_pos[l], d("v"):sum({0, 1, 3}), "v")       -- [kv head]
    close(r.attn_head_q_by_pos[l], d("q"):sum({0, 3}), "q")           -- [pos, head]
    close(r.attn_head_out_all_pos[l], d("z"):sum({0, 1, 3}), "z")
    close(r.attn_head_pattern_dest_src_pos[l], d("pattern"):sum(0), "pattern")
    close(r.resid_pre[l], d("resid_pre"):sum({0, 2}), "resid_pre")
    close(r.mlp_out[l], d("mlp_out"):sum({0, 2}), "mlp_out")
  end
  T.eq(table.concat(r.attn_head_k_all_pos:shape(), ","), "2,2")
  T.eq(n, 14)
end)

T.test("scripts/patching.lua on the bundled model", function()
  local out = os.tmpname(); os.remove(out)
  local miwb = (os.getenv("MIWB_BUILD") or "build") .. "/miwb"
  local p = io.popen(miwb .. " scripts/patching.lua --batch 4 --out " .. out .. " 2>&1")
  local text = p:read("a")
  T.truthy(p:close(), text)
  local r = mi.json.read(out .. "/results.json")
  T.truthy(r.clean_logit_diff > r.corrupted_logit_diff + 2, "the model does the task")
  -- the induction heads of the model card (1.1, 1.4) and its previous-token head (0.7) lead
  local top = {}
  for i = 1, 3 do top[r.top_heads[i].head] = true end
  T.truthy(top["1.1"] and top["1.4"] and top["0.7"], text)
  T.eq(#r.heads, 2); T.eq(#r.heads[1], 8); T.eq(#r.every, 5)
  for _, f in pairs(r.figures) do
    local fh = assert(io.open(f, "rb")); T.eq(fh:read(4), "\137PNG"); fh:close()
  end
  os.execute("rm -rf " .. out)
end)

T.done()
