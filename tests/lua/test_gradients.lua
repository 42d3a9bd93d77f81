-- test_gradients.lua: gradients at hook points (run_with_cache{incl_bwd}, grad_output,
-- bwd_hooks) against PyTorch autograd in float64 (tests/fixtures/gen_grads.py) on the fixture
-- models of gen_model.py, and against central finite differences made here through forward hooks.
local T = require("testlib")
local mi = require("miwb")

local function fixture(name)
  local model, sd = T.fixture_model(name)
  return model, sd.tokens
end

local ld = mi.metrics.logit_diff(3, 5)

for _, name in ipairs({"gpt2", "attn2", "lnpre", "solu_ln", "solu_lnpre", "solu"}) do
  T.test(name .. ": every hook point's gradient equals PyTorch autograd's (loss and logit difference)", function()
    local model, tokens = fixture(name)
    local ref = mi.load("tests/fixtures/grads/" .. name .. ".safetensors")
    local loss, cache = model:run_with_cache(tokens, {incl_bwd = true, return_type = "loss"})
    local _, cache2 = model:run_with_cache(tokens, {incl_bwd = true, grad_output = ld})
    local n, skipped = 0, {}
    for _, h in ipairs(model:hook_names()) do
      local want, want2 = ref["loss." .. h], ref["ld." .. h]
      if model:_has_grad(h) then
        T.truthy(want ~= nil, "reference for " .. h)
        local got = cache[h .. "_grad"]
        local scale = want:abs():max():item()
        mi.assert_close(got, want, 1e-4, 1e-5 * math.max(1, scale))
        mi.assert_close(cache2[h .. "_grad"], want2, 1e-4, 1e-5 * math.max(1, want2:abs():max():item()))
        n = n + 1
      else
        T.truthy(not cache:has(h .. "_grad"), h .. " has no gradient in the cache")
        skipped[#skipped + 1] = h
      end
    end
    T.truthy(n >= 10, n .. " hook points checked")
    -- the cache lists the gradients after the activations, last hook point first
    local keys = cache:keys()
    T.truthy(keys[#keys]:find("_grad$") and keys[#keys - n + 1]:find("_grad$"))
  end)
end

-- d metric / d every hook activation against central differences made through forward hooks
-- (a few random elements of each)
local function finite_differences(cfg, per_hook, min)
  local model = mi.HookedTransformer(cfg)
  local tokens = mi.randint(0, cfg.d_vocab, {2, 6}, mi.Generator(1))
  local _, cache = model:run_with_cache(tokens, {incl_bwd = true, grad_output = ld})
  local g = mi.Generator(4)
  local n = 0
  for _, h in ipairs(model:hook_names()) do
    if cache:has(h .. "_grad") then
      local act = cache[h]
      local flat = act:reshape(-1)
      for _ = 1, per_hook do
        local i = mi.randint(0, flat:numel(), {1}, g)[0]:item()
        local function at(d)
          return ld:value(model:run_with_hooks(tokens, {fwd_hooks = {{h, function(a)
            local f = a:reshape(-1)
            f[i] = f[i]:item() + d
          end}}}))
        end
        local eps = h:find("hook_scale") and 1e-3 or 1e-2   -- a scale is small: a smaller step
        local fd = (at(eps) - at(-eps)) / (2 * eps)
        local an = cache[h .. "_grad"]:reshape(-1)[i]:item()
        T.near(an, fd, 2e-3 + 2e-2 * math.abs(fd), h .. "[" .. i .. "]")
        n = n + 1
      end
    end
  end
  T.truthy(n >= min, n .. " elements checked")
end

T.test("gradients against central finite differences through forward hooks", function()
  finite_differences({d_model = 16, d_head = 4, n_heads = 3, n_layers = 2, n_ctx = 12, d_vocab = 23,
    d_mlp = 24, act_fn = "gelu_new", normalization_type = "LN", seed = 7}, 2, 30)
end)

-- the features of the Hugging Face families in combinations no fixture family has: gated MLPs
-- with the tanh gelus, RMSPre, partial rotary in adjacent pairs, a single key/value head, parallel blocks
T.test("finite differences: gated gelu_fast / gelu_pytorch_tanh / gelu / silu, RMSPre, rotary pairs, GQA, parallel", function()
  local base = {d_model = 16, d_head = 4, n_heads = 4, n_layers = 2, n_ctx = 12, d_vocab = 23, d_mlp = 20,
                positional_embedding_type = "rotary", gated_mlp = true, seed = 11}
  local variants = {
    {act_fn = "gelu_fast", normalization_type = "RMSPre", rotary_dim = 2, rotary_adjacent_pairs = true,
     n_key_value_heads = 1, parallel_attn_mlp = true},
    {act_fn = "gelu_pytorch_tanh", normalization_type = "RMS", n_key_value_heads = 2},
    {act_fn = "gelu", normalization_type = "LNPre", parallel_attn_mlp = true},
    {act_fn = "silu", normalization_type = "LN", n_key_value_heads = 2, rotary_dim = 2},
  }
  for _, v in ipairs(variants) do
    local cfg = {}
    for k, x in pairs(base) do cfg[k] = x end
    for k, x in pairs(v) do cfg[k] = x end
    finite_differences(cfg, 1, 25)
  end
end)

T.test("bwd_hooks read and edit the gradient flowing back", function()
  local model, tokens = fixture("gpt2")
  local _, cache = model:run_with_cache(tokens, {incl_bwd = true, return_type = "loss"})
  local seen = {}
  model:run_with_hooks(tokens, {return_type = "loss", bwd_hooks = {{function(n) return n:find("resid_pre") end,
    function(grad, hook) seen[hook.name] = grad:clone() end}}})
  mi.assert_close(seen["blocks.1.hook_resid_pre"], cache["blocks.1.hook_resid_pre_grad"], 1e-6, 1e-7)
  mi.assert_close(seen["blocks.0.hook_resid_pre"], cache["blocks.0.hook_resid_pre_grad"], 1e-6, 1e-7)
  -- stopping the gradient at block 1's input leaves nothing for block 0 and the embeddings
  local _, c2 = model:run_with_cache(tokens, {incl_bwd = true, return_type = "loss",
    bwd_hooks = {{"blocks.1.hook_resid_pre", function(grad) grad:zero_() end}}})
  T.eq(c2["blocks.0.attn.hook_v_grad"]:abs():max():item(), 0)
  T.eq(c2["hook_embed_grad"]:abs():max():item(), 0)
  mi.assert_close(c2["blocks.1.attn.hook_v_grad"], cache["blocks.1.attn.hook_v_grad"], 1e-6, 1e-7)
end)

T.test("bwd_hooks on attn.hook_result and shortformer's hook_pos_embed: edits reach only their branch", function()
  local model, tokens = fixture("attn2")   -- use_attn_result, shortformer
  local _, cache = model:run_with_cache(tokens, {incl_bwd = true, return_type = "loss"})
  -- zeroing head 2's result gradient in layer 1 zeroes that head's z gradient only
  local _, c2 = model:run_with_cache(tokens, {incl_bwd = true, return_type = "loss",
    bwd_hooks = {{"blocks.1.attn.hook_result", function(grad) grad[{{}, {}, 2}] = 0 end}}})
  T.eq(c2["blocks.1.attn.hook_z_grad"][{{}, {}, 2}]:abs():max():item(), 0)
  mi.assert_close(c2["blocks.1.attn.hook_z_grad"][{{}, {}, 1}], cache["blocks.1.attn.hook_z_grad"][{{}, {}, 1}], 1e-6, 1e-7)
  -- the positions' gradient is the sum over blocks of the Q/K inputs': a hook sees it whole
  local seen
  model:run_with_hooks(tokens, {return_type = "loss", bwd_hooks = {{"hook_pos_embed", function(g) seen = g:clone() end}}})
  mi.assert_close(seen, cache["hook_pos_embed_grad"], 1e-6, 1e-7)
  T.truthy(seen:abs():max():item() > 0)
end)

T.test("bad gradient requests: errors naming the function and shapes; the model stays clean", function()
  local model, tokens = fixture("gpt2")
  T.raises(function() model:run_with_cache(tokens, {incl_bwd = true}) end,
           "run_with_cache: a backward pass needs a scalar: return_type = 'loss' or grad_output")
  T.raises(function() model:run_with_cache(tokens, {incl_bwd = true, grad_output = function(l) return 1, mi.zeros(2, 7) end}) end,
           "run_with_cache: grad_output's gradient is [2,7], expected the logits' shape [2,7,53]")
  T.raises(function() model:run_with_cache(tokens, {incl_bwd = true, grad_output = function(l) return l, l end}) end,
           "grad_output returned a tensor [2,7,53] as the metric, expected a number")
  T.raises(function() model:run_with_cache(tokens, {grad_output = ld}) end, "grad_output needs incl_bwd = true")
  T.raises(function() model:run_with_hooks(tokens, {bwd_hooks = {{"blocks.0.hook_resid_pre", function() end}}}) end,
           "run_with_hooks: a backward pass needs a scalar")
  T.raises(function() model:run_with_hooks(tokens, {return_type = "loss", bwd_hooks = {{"blocks.0.attn.hook_result", function() end}}}) end,
           "'blocks.0.attn.hook_result' is not a hook point of this model")
  T.raises(function() model:run_with_hooks(tokens, {return_type = "loss", bwd_hooks = {{"blocks.0.hook_resid_pre",
    function() error("boom") end}}}) end, "boom")
  T.eq(#model._persistent, 0)
  local loss = model(tokens, {return_type = "loss"})
  local l2, c = model:run_with_cache(tokens, {incl_bwd = true, return_type = "loss"})
  T.near(l2:item(), loss:item(), 1e-6)
  T.truthy(c:has("hook_embed_grad"))
end)

T.done()
