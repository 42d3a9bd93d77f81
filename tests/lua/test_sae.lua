-- test_sae.lua: mi.SAE against float64 formulas of SAELens written in Python
-- (tests/fixtures/gen_sae.py: five SAE folders in SAELens 6 and older layouts, with expected
-- features and reconstructions, and the fixture GPT-2-style model's logits with each SAE spliced
-- in); the error term by what it must preserve; lying folders written here.
local T = require("testlib")
local mi = require("miwb")

local FIX = "tests/fixtures/sae/"
local CASES = {"standard_v6", "jumprelu_norm", "topk_layernorm", "hook_z_old", "topk_old"}

local function fixture_model()
  local model, sd = T.fixture_model("gpt2")
  return model, sd.tokens
end

local model, tokens = fixture_model()
local plain_logits = model(tokens)
local n_names = #model:hook_names()

for _, case in ipairs(CASES) do
  T.test(case .. ": encode, decode and forward match the reference", function()
    local sae = mi.SAE.load(FIX .. case)
    local e = mi.load(FIX .. case .. "/expected.safetensors")
    local f = sae:encode(e.x)
    mi.assert_close(f, e.acts, 1e-4, 1e-5)
    T.truthy(f:gt(0):sum():item() > 0, "some features fire")
    mi.assert_close(sae:decode(f), e.recons, 1e-4, 1e-5)
    mi.assert_close(sae:forward(e.x), e.recons, 1e-4, 1e-5)
    if sae.cfg.architecture == "topk" then
      T.truthy(f:gt(0):sum(-1):max():item() <= sae.cfg.k, "at most k features per row")
    end
  end)

  T.test(case .. ": spliced into the model (no error term), hook points cached", function()
    local sae = mi.SAE.load(FIX .. case)
    local e, meta = mi.load(FIX .. case .. "/expected.safetensors")
    T.eq(sae.cfg.hook_name, meta.hook)
    model:add_sae(sae)
    local ok, err = pcall(function()
      local logits, cache = model:run_with_cache(tokens)
      mi.assert_close(logits, e["model.logits"], 1e-4, 1e-4)
      mi.assert_close(cache[meta.hook .. ".hook_sae_acts_post"], e["model.acts"], 1e-4, 1e-4)
      for _, s in ipairs({"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_output"}) do
        T.truthy(cache:has(meta.hook .. "." .. s), s .. " is cached")
      end
      T.truthy(not cache:has(meta.hook .. ".hook_sae_error"), "no error term, no hook_sae_error")
    end)
    model:reset_saes()
    if not ok then error(err, 0) end
    T.eq(#model:hook_names(), n_names, "reset_saes removes its hook points")
    mi.assert_close(model(tokens), plain_logits, 0, 0)
  end)
end

T.test("with the error term the model's outputs are unchanged, and feature edits reach them", function()
  local sae = mi.SAE.load(FIX .. "standard_v6")
  local point = sae.cfg.hook_name
  model:add_sae(sae, {use_error_term = true})
  local ok, err = pcall(function()
    local logits, cache = model:run_with_cache(tokens)       -- caching the features runs the SAE
    T.truthy(cache:has(point .. ".hook_sae_error"))
    mi.assert_close(logits, plain_logits, 1e-5, 1e-5)
    model:reset_hooks()                                      -- leaves the SAE
    T.eq(#model:saes(), 1)
    -- zeroing feature j takes acts_j * W_dec[j] out of the stream (norm none): the same as
    -- subtracting it at the hook point by hand
    local acts = cache[point .. ".hook_sae_acts_post"]
    local _, j = acts:sum({0, 1}):max(0)
    j = j:item()
    local edited = model:run_with_hooks(tokens, {fwd_hooks = {{point .. ".hook_sae_acts_post",
      function(f) f[{{}, {}, j}] = 0 end}}})
    model:reset_saes()
    local delta = acts[{{}, {}, j}]:unsqueeze(-1) * sae.W_dec[j]
    local want = model:run_with_hooks(tokens, {fwd_hooks = {{point, function(x) return x - delta end}}})
    mi.assert_close(edited, want, 1e-4, 1e-5)
    T.truthy((edited - plain_logits):abs():max():item() > 1e-3, "the edit changes the logits")
  end)
  model:reset_saes()
  if not ok then error(err, 0) end
end)

T.test("save and load again; norm_scaling_factor folds as SAELens does", function()
  local sae = mi.SAE.load(FIX .. "jumprelu_norm")
  local dir = os.tmpname(); os.remove(dir)
  sae:save(dir)
  local back = mi.SAE.load(dir)
  local e = mi.load(FIX .. "jumprelu_norm/expected.safetensors")
  mi.assert_close(back:encode(e.x), e.acts, 1e-4, 1e-5)
  T.eq(back.cfg.hook_name, sae.cfg.hook_name)
  local old = mi.SAE.load(FIX .. "topk_old")
  local folded = mi.SAE.load(FIX .. "topk_old", {norm_scaling_factor = 2.5})
  local x = e.x
  mi.assert_close(folded:forward(x), old:forward(x * 2.5) / 2.5, 1e-4, 1e-5)
  T.eq(folded.cfg.normalize_activations, "none")
  os.execute("rm -rf " .. dir)
end)

-- lying folders
local made = {}
local function folder(cfg, weights)
  local dir = os.tmpname(); os.remove(dir)
  made[#made + 1] = dir
  os.execute("mkdir -p " .. dir)
  if cfg then mi.json.write(dir .. "/cfg.json", cfg) end
  if weights then mi.save(dir .. "/sae_weights.safetensors", weights) end
  return dir
end
local function good_w(d_in, d_sae)
  return {W_enc = mi.randn(d_in, d_sae), b_enc = mi.zeros(d_sae), W_dec = mi.randn(d_sae, d_in), b_dec = mi.zeros(d_in)}
end
local CFG = {architecture = "standard", d_in = 32, d_sae = 8, metadata = {hook_name = "blocks.0.hook_resid_pre"}}

T.test("lying files: each an error naming the function, the file and the shapes", function()
  local w = good_w(32, 8); w.W_enc = mi.randn(32, 7)
  local d = folder(CFG, w)
  T.raises(function() mi.SAE.load(d) end, "SAE.load: " .. d .. ": W_enc is [32,7], but d_in 32 and d_sae 8 make it [32,8]")
  w = good_w(32, 8); w.b_dec = nil
  T.raises(function() mi.SAE.load(folder(CFG, w)) end, "b_dec is missing")
  local jr = {architecture = "jumprelu", d_in = 32, d_sae = 8, hook_name = "blocks.0.hook_resid_pre"}
  T.raises(function() mi.SAE.load(folder(jr, good_w(32, 8))) end, "threshold is missing")
  T.raises(function() mi.SAE.load(folder({architecture = "topk", d_in = 32, d_sae = 8}, good_w(32, 8))) end,
           "topk needs k")
  T.raises(function() mi.SAE.load(folder({architecture = "gated", d_in = 32, d_sae = 8}, good_w(32, 8))) end,
           "architecture 'gated' is not supported")
  T.raises(function() mi.SAE.load(folder({architecture = "standard", d_in = 3.5, d_sae = 8}, good_w(32, 8))) end,
           "d_in must be a positive integer")
  T.raises(function() mi.SAE.load(folder(nil, good_w(32, 8))) end, "cfg.json")
  T.raises(function() mi.SAE.load(folder(CFG, nil)) end, "sae_weights.safetensors")
  -- a truncated weights file
  d = folder(CFG, good_w(32, 8))
  local f = io.open(d .. "/sae_weights.safetensors", "rb"); local data = f:read("a"); f:close()
  f = io.open(d .. "/sae_weights.safetensors", "wb"); f:write(data:sub(1, #data - 100)); f:close()
  T.raises(function() mi.SAE.load(d) end, "sae_weights.safetensors")
  w = good_w(32, 8); w.extra = mi.zeros(2)
  T.raises(function() mi.SAE.load(folder(CFG, w)) end, "unexpected tensor 'extra'")
end)

T.test("bad use: d_in against the hook point, shapes, dots; the model is left clean", function()
  local small = mi.SAE.new({d_in = 16, d_sae = 8, hook_name = "blocks.1.hook_resid_pre"}, good_w(16, 8))
  T.raises(function() model:add_sae(small) end,
           "add_sae: the SAE's d_in 16 does not match blocks.1.hook_resid_pre [batch, pos, 32]")
  local nowhere = mi.SAE.new({d_in = 32, d_sae = 8, hook_name = "blocks.7.hook_resid_pre"}, good_w(32, 8))
  T.raises(function() model:add_sae(nowhere) end, "'blocks.7.hook_resid_pre' is not a hook point of this model")
  local sae = mi.SAE.new(CFG, good_w(32, 8))
  T.raises(function() model:add_sae(sae, {use_error = true}) end, "unknown option 'use_error'")
  T.raises(function() sae:encode(mi.zeros(2, 5)) end, "SAE:encode: x is [2,5], its last dim must be d_in 32")
  T.raises(function() sae:decode(mi.zeros(2, 5)) end, "SAE:decode: f must be [..., d_sae 8], got [2,5]")
  T.raises(function() sae.encode(mi.zeros(2, 32)) end, "call it with a colon")
  T.eq(#model:hook_names(), n_names)
  T.eq(#model:saes(), 0)
  mi.assert_close(model(tokens), plain_logits, 0, 0)
  model:add_sae(sae)
  T.raises(function() model:add_sae(sae) end, "already spliced in at blocks.0.hook_resid_pre")
  model:reset_saes()
  T.eq(#model:hook_names(), n_names)
end)

-- SAE training: the hand-written gradients against central finite differences, then recovery
-- of planted sparse features
for _, arch in ipairs({{k = 3}, {l1_coeff = 0.3}}) do
  T.test("SAE training gradients against finite differences (" .. (arch.k and "topk" or "L1") .. ")", function()
    local g = mi.Generator(5)
    local d, S, N = 6, 10, 5
    local sae = mi.SAE.new({architecture = arch.k and "topk" or "standard", k = arch.k, d_in = d, d_sae = S},
      {W_enc = mi.randn({d, S}, g), b_enc = mi.randn({S}, g) * 0.5, W_dec = mi.randn({S, d}, g) * 0.5,
       b_dec = mi.randn({d}, g) * 0.1})
    local x = mi.randn({N, d}, g) * 2
    local _, grads = sae:_loss_grad(x, arch.l1_coeff)
    local checked = 0
    for _, name in ipairs({"W_enc", "b_enc", "W_dec", "b_dec"}) do
      local p = sae[name]
      local flat = p:reshape(-1)
      for _, i in ipairs({0, 3, flat:numel() - 1}) do
        local h = 1e-2
        local old = flat[i]:item()
        flat[i] = old + h
        local lp = sae:_loss_grad(x, arch.l1_coeff)
        flat[i] = old - h
        local lm = sae:_loss_grad(x, arch.l1_coeff)
        flat[i] = old
        local fd = (lp - lm) / (2 * h)
        local an = grads[name]:reshape(-1)[i]:item()
        T.near(an, fd, 2e-2 * math.max(1, math.abs(fd)), name .. "[" .. i .. "]")
        checked = checked + 1
      end
    end
    T.eq(checked, 12)
  end)
end

T.test("SAE.train recovers planted sparse features", function()
  local g = mi.Generator(2)
  local d, S, N = 16, 32, 4000
  local dirs = mi.randn({S, d}, g)
  dirs = dirs / dirs:norm(2, -1, true)
  -- each row: 2 random features with random positive magnitudes
  local codes = mi.zeros(N, S)
  local idx = mi.randint(0, S, {N, 2}, g)
  codes:scatter_add_(1, idx, mi.rand({N, 2}, g) + 0.5)
  local acts = codes:matmul(dirs) + 0.3
  local sae, hist = mi.SAE.train(acts, {d_sae = 64, k = 4, steps = 600, batch = 256, lr = 3e-3, seed = 1})
  T.truthy(hist[#hist].fvu < 0.1, "fraction of variance unexplained " .. hist[#hist].fvu)
  T.truthy(hist[#hist].fvu < hist[1].fvu, "training lowers the loss")
  T.eq(sae.cfg.architecture, "topk")
  T.raises(function() mi.SAE.train(acts, {d_sae = 8}) end, "give opts.k (top-k) or opts.l1_coeff")
  T.raises(function() mi.SAE.train(acts, {d_sae = 8, k = 2, stepz = 3}) end, "unknown option 'stepz'")
end)

T.test("scripts/sae_features.lua on the bundled model (a short run)", function()
  local out = os.tmpname(); os.remove(out)
  made[#made + 1] = out
  local miwb = (os.getenv("MIWB_BUILD") or "build") .. "/miwb"
  local p = io.popen(miwb .. " scripts/sae_features.lua --text /usr/share/common-licenses/GPL-3 --steps 60 " ..
                     "--d_sae 64 --k 8 --ctx 32 --features 3 --out " .. out .. " 2>&1")
  local text = p:read("a")
  T.truthy(p:close(), text)
  local r = mi.json.read(out .. "/results.json")
  T.truthy(r.fvu > 0 and r.fvu < 1, "fvu " .. tostring(r.fvu))
  T.truthy(r.l0 <= 8)
  T.eq(#r.features, 3)
  T.eq(#r.features[1].top, 5)
  T.truthy(r.features[1].top[1].activation >= r.features[1].top[5].activation)
  T.truthy(r.sae_loss >= r.clean_loss - 0.05, "an SAE in place of the stream does not beat the model")
  -- the SAE it wrote loads back, in SAELens's format
  local sae = mi.SAE.load(out .. "/sae")
  T.eq(sae.cfg.architecture, "topk"); T.eq(sae.cfg.k, 8); T.eq(sae.cfg.hook_name, "blocks.1.hook_resid_pre")
end)

for _, d in ipairs(made) do os.execute("rm -rf " .. d) end
T.done()
