-- test_steering.lua: steering hooks against the residual stream edited by hand (stop the model at
-- the block, add the vector, start again), generation against a greedy loop written here, and
-- mean_difference against means of cached activations.
local T = require("testlib")
local mi = require("miwb")

local model = mi.HookedTransformer({d_model = 16, d_head = 4, n_heads = 2, n_layers = 2, n_ctx = 24, d_vocab = 13,
                                    attn_only = true, normalization_type = "None",
                                    positional_embedding_type = "shortformer", seed = 3})
local g = mi.Generator(9)
local tokens = mi.randint(0, 13, {2, 6}, g)
local v = mi.randn({16}, g)

T.test("add: the same as adding coeff * vector to the residual stream by hand", function()
  local hook = mi.steering.add(v, 3.5)
  local got = model:run_with_hooks(tokens, {fwd_hooks = {{"blocks.1.hook_resid_pre", hook}}})
  local resid = model(tokens, {stop_at_layer = 1})
  local want = model(resid + v * 3.5, {start_at_layer = 1})
  mi.assert_close(got, want, 1e-5, 1e-5)
  T.truthy((got - model(tokens)):abs():max():item() > 1e-3, "steering changes the logits")
end)

T.test("add with pos: only that position of the stream moves", function()
  local _, c0 = model:run_with_cache(tokens, {names_filter = "blocks.1.hook_resid_post"})
  local _, c1 = model:run_with_cache(tokens, {names_filter = "blocks.1.hook_resid_post",
    fwd_hooks = {{"blocks.1.hook_resid_post", mi.steering.add(v, 2, {pos = -2})}}})
  local d = c1["blocks.1.hook_resid_post"] - c0["blocks.1.hook_resid_post"]   -- cache copies before hooks
  T.truthy(d:abs():max():item() == 0, "the cache holds the activation before the hook")
  local logits0, logits1 = model(tokens), model:run_with_hooks(tokens, {fwd_hooks = {{"blocks.1.hook_resid_post",
    mi.steering.add(v, 2, {pos = -2})}}})
  local diff = (logits1 - logits0):abs():amax({0, 2})                          -- [P]
  for p = 0, 5 do
    if p == 4 then T.truthy(diff[p]:item() > 1e-3, "position 4 moves")
    else T.eq(diff[p]:item(), 0, "position " .. p .. " stays") end
  end
end)

T.test("generate with a steering hook: the greedy loop with the same hook", function()
  local hooks = {{"blocks.0.hook_resid_post", mi.steering.add(v, 4)}}
  local got = model:generate(tokens:narrow(0, 0, 1), {fwd_hooks = hooks, max_new_tokens = 5, do_sample = false})
  local t = tokens:narrow(0, 0, 1)
  for _ = 1, 5 do
    local logits = model:run_with_hooks(t, {fwd_hooks = hooks})
    local _, nxt = logits[{{}, -1}]:max(-1)
    t = mi.cat({t, nxt:view(1, 1)}, 1)
  end
  T.truthy(got:equal(t), "same tokens")
  local plain = model:generate(tokens:narrow(0, 0, 1), {max_new_tokens = 5, do_sample = false})
  T.truthy(not plain:equal(got), "steering changed the continuation")
end)

T.test("mean_difference: means of the cached activations at pos", function()
  local a = mi.randint(0, 13, {3, 5}, g)
  local b = mi.randint(0, 13, {4, 5}, g)
  local name = "blocks.1.hook_resid_pre"
  local got = mi.steering.mean_difference(model, a, b, name, 2)
  local _, ca = model:run_with_cache(a)
  local _, cb = model:run_with_cache(b)
  local want = ca[name][{{}, 2}]:mean(0) - cb[name][{{}, 2}]:mean(0)
  mi.assert_close(got, want, 1e-6, 1e-6)
  -- (TransformerLens's get_act_name has no compact form for resid_pre: "resid_pre1" is not one)
  mi.assert_close(mi.steering.mean_difference(model, a, b, mi.utils.get_act_name("resid_pre", 1)),
                  ca[name][{{}, -1}]:mean(0) - cb[name][{{}, -1}]:mean(0), 1e-6, 1e-6)
end)

T.test("mean_difference with strings: each prompt's own last token", function()
  local bundled = mi.from_pretrained_no_processing("models/attn_only_2L")
  local A, B = {"In the beginning", "And God said"}, {"The computer program", "A network"}
  local got = mi.steering.mean_difference(bundled, A, B, "blocks.1.hook_resid_pre")
  local function last(s)
    local _, c = bundled:run_with_cache(s)
    return c["blocks.1.hook_resid_pre"][{0, -1}]
  end
  local want = (last(A[1]) + last(A[2])) / 2 - (last(B[1]) + last(B[2])) / 2
  mi.assert_close(got, want, 1e-5, 1e-5)
end)

T.test("bad input names the function and the shapes; no hook stays", function()
  local e = T.raises(function()
    model:run_with_hooks(tokens, {fwd_hooks = {{"blocks.1.hook_resid_pre", mi.steering.add(mi.ones(5))}}})
  end, "steering.add: vector [5] does not fit blocks.1.hook_resid_pre [2,6,16]")
  T.raises(function() mi.steering.add(mi.ones(2, 16)) end, "steering.add: vector must be a tensor [d_model], got [2,16]")
  T.raises(function() mi.steering.add(v, "x") end, "coeff must be a number")
  T.raises(function() mi.steering.add(v, 1, {position = 1}) end, "unknown option 'position'")
  T.raises(function() mi.steering.mean_difference(model, tokens, tokens, "blocks.9.hook_resid_pre") end,
           "is not a hook point")
  T.raises(function() mi.steering.mean_difference(model, tokens, tokens, "blocks.1.hook_resid_pre", 9) end,
           "pos 9 is outside prompts_a's 6 positions")
  T.raises(function() mi.steering.mean_difference(model, {}, tokens, "blocks.1.hook_resid_pre") end, "prompts_a")
  T.eq(#model._persistent, 0)
  mi.assert_close(model(tokens), model:run_with_hooks(tokens, {}), 0, 0)
end)

T.test("scripts/steering.lua on the bundled model", function()
  local out = os.tmpname()
  os.remove(out)
  local miwb = (os.getenv("MIWB_BUILD") or "build") .. "/miwb"
  local p = io.popen(miwb .. " scripts/steering.lua --tokens 4 --out " .. out .. " 2>&1")
  local text = p:read("a")
  local ok = p:close()
  T.truthy(ok, text)
  local r = mi.json.read(out .. "/results.json")
  T.eq(#r.prompts, 3)
  for _, pr in ipairs(r.prompts) do
    T.truthy(pr.kl > 0.1, "the vector moves the next-token distribution")
    T.truthy(pr.gains[1].shift > 0 and pr.losses[1].shift < 0)
    T.near(pr.gains[1].after - pr.gains[1].before, pr.gains[1].shift, 1e-4)
  end
  local f = assert(io.open(r.figures.scatter, "rb"))
  T.eq(f:read(4), "\137PNG")
  f:close()
  os.execute("rm -rf " .. out)
end)

T.done()
