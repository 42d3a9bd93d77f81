-- test_tl_habits.lua: what a TransformerLens user reaches for first (issue 16), and TransformerLens
-- 2.12's own unit tests that need no downloaded model (tests/unit/test_utils.py: Slice,
-- override_or_use_default_value; test_hooked_transformer_config.py; test_use_attn_result.py;
-- test_hooks.py's semantics, run here on the bundled model), written from their inputs and
-- expectations. Every options table rejects unknown keys; no silent surprises.
local T = require("testlib")
local mi = require("miwb")
local A = mi.analysis

local model = mi.from_pretrained_no_processing("models/attn_only_2L")   -- shortformer, no LN
-- a small random GPT-2-style model (LayerNorm, MLPs) for the helpers that scale by LN
local gpt = mi.HookedTransformer{d_model = 16, d_head = 4, n_layers = 2, n_ctx = 16, d_vocab = 20,
                                 act_fn = "gelu", seed = 1}
local gtok = mi.randint(0, 20, {2, 6}, mi.Generator(7))
local _, gcache = gpt:run_with_cache(gtok)

local function maxdiff(a, b) return (a - b):abs():max():item() end
local function close(a, b, tol, what)
  T.eq(table.concat(a:shape(), ","), table.concat(b:shape(), ","), (what or "") .. " shape")
  local d = maxdiff(a, b)
  if not (d <= tol) then error((what or "close") .. ": max difference " .. d, 2) end
end


-- ---------------------------------------------------------------- options tables
T.test("an unknown option raises, naming the key and the function (model, cache, analysis, plot, loading)", function()
  T.raises(function() return model("hi", {return_typ = "loss"}) end, "forward: unknown option 'return_typ'")
  T.raises(function() return model:generate("hi", {max_tokens = 5}) end, "generate: unknown option 'max_tokens'")
  T.raises(function() return model:run_with_cache("hi", {names_filer = "x"}) end,
           "run_with_cache: unknown option 'names_filer'")
  T.raises(function() return model:run_with_hooks("hi", {fwd_hook = {}}) end, "run_with_hooks: unknown option 'fwd_hook'")
  T.raises(function() return model:to_tokens("hi", {prepend_bo = false}) end, "to_tokens: unknown option 'prepend_bo'")
  T.raises(function() model:add_hook("hook_embed", function() end, {permanent = true}) end,
           "add_hook: unknown option 'permanent'")
  T.raises(function() model:reset_hooks{including_permanet = true} end, "reset_hooks: unknown option 'including_permanet'")
  T.raises(function() return gcache:accumulated_resid{lyer = 1} end, "accumulated_resid: unknown option 'lyer'")
  T.raises(function() return gcache:stack_head_results{pos_slise = -1} end, "stack_head_results: unknown option 'pos_slise'")
  T.raises(function() return A.induction_scores(model, nil, {sed = 1}) end, "analysis.induction_scores: unknown option 'sed'")
  T.raises(function() return A.generate_repeated_tokens(model, 5, 1, {seeed = 1}) end,
           "analysis.generate_repeated_tokens: unknown option 'seeed'")
  T.raises(function() return mi.plot.imshow(mi.zeros(2, 2), {titel = "x"}) end, "plot.imshow: unknown option 'titel'")
  T.raises(function() return mi.plot.line({{1, 2}}, {xlable = "x"}) end, "plot.line: unknown option 'xlable'")
  T.raises(function() return mi.from_pretrained("models/attn_only_2L", {center_unembd = false}) end,
           "from_pretrained: unknown option 'center_unembd'")
  T.raises(function() return mi.HookedTransformer({d_model = 4, d_head = 2, n_layers = 1, n_ctx = 4, d_vocab = 5,
                                                   attn_only = true}, {tokeniser = "x"}) end,
           "HookedTransformer: unknown option 'tokeniser'")
end)

T.test("config fields miwb does not implement raise (use_local_attn, num_experts, ...)", function()
  local base = {d_model = 8, d_head = 2, n_layers = 1, n_ctx = 8, d_vocab = 10, attn_only = true}
  for field, value in pairs({use_local_attn = true, post_embedding_ln = true, num_experts = 4, window_size = 4,
                             output_logits_soft_cap = 30.0, load_in_4bit = true}) do
    local c = {}
    for k, v in pairs(base) do c[k] = v end
    c[field] = value
    T.raises(function() return mi.HookedTransformerConfig(c) end, field, field)
  end
  -- TransformerLens's own defaults are fine
  local c = {}
  for k, v in pairs(base) do c[k] = v end
  c.output_logits_soft_cap, c.load_in_4bit = -1.0, false
  T.truthy(mi.HookedTransformerConfig(c))
end)

-- ---------------------------------------------------------------- generate
T.test("generate: top_p keeps the nucleus (checked against the softmax), tiny top_p is greedy, bad values raise", function()
  local prompt = model:to_tokens("In the beginning God created the")
  local probs = model(prompt)[0][-1]:softmax(-1)
  local p, ids = probs:sort(-1, true)
  local nucleus, cum = {}, 0
  for k = 0, p:size(0) - 1 do
    nucleus[ids[k]:item()] = true
    cum = cum + p[k]:item()
    if cum > 0.3 then break end
  end
  local outside_without = 0
  for seed = 1, 30 do
    local t = model:generate(prompt, {top_p = 0.3, max_new_tokens = 1, seed = seed})
    local id = t[{0, -1}]:item()
    T.truthy(nucleus[id], "sampled token " .. id .. " is outside the top_p = 0.3 nucleus")
    local u = model:generate(prompt, {max_new_tokens = 1, seed = seed})
    if not nucleus[u[{0, -1}]:item()] then outside_without = outside_without + 1 end
  end
  T.truthy(outside_without > 0, "plain sampling never left the nucleus: the check could not fail")
  local greedy = model:generate(prompt, {do_sample = false, max_new_tokens = 4})
  local tiny = model:generate(prompt, {top_p = 1e-9, max_new_tokens = 4, seed = 5})
  T.eq(table.concat(tiny:totable()[1], ","), table.concat(greedy:totable()[1], ","))
  T.raises(function() return model:generate(prompt, {top_p = 1.5}) end, "top_p must be in (0, 1]")
  T.eq(type(model:generate("The", {max_new_tokens = 2, seed = 1})), "string")
  T.eq(type(model:generate("The", {max_new_tokens = 2, seed = 1, return_type = "tokens"})), "userdata")
end)

-- ---------------------------------------------------------------- the cache helpers
T.test("cache helpers: TransformerLens's argument order and names, pos_slice (Slice inputs)", function()
  local L, H = gpt.cfg.n_layers, gpt.cfg.n_heads
  local full = gcache:stack_head_results()                              -- [L*H, 2, 6, d]
  local last = gcache:stack_head_results{pos_slice = -1}
  T.eq(table.concat(last:shape(), ","), (L * H) .. ",2,16")
  close(last, full:select(2, -1), 0, "pos_slice = -1")
  -- stack_head_results(layer, return_labels, incl_remainder, pos_slice, apply_ln)
  local two, labels = gcache:stack_head_results(-1, true, true, {0, 4, 2})
  T.eq(labels[#labels], "remainder")
  T.eq(table.concat(two:shape(), ","), (L * H + 1) .. ",2,2,16")
  close(two:sum(0), gcache[{"resid_post", -1}]:index_select(1, mi.tensor({0, 2}, "int64")), 1e-5, "parts sum")
  -- accumulated_resid(layer, incl_mid, apply_ln, pos_slice, mlp_input, return_labels)
  local acc, al = gcache:accumulated_resid(1, false, false, {indices = {0, 5}}, false, true)
  T.eq(table.concat(al, ","), "0_pre,1_pre")
  close(acc[1], gcache[{"resid_pre", 1}]:index_select(1, mi.tensor({0, 5}, "int64")), 0, "indices")
  -- apply_ln with a pos_slice scales each kept position by its own cached scale
  local ln_all = gcache:accumulated_resid{apply_ln = true}
  local ln_last = gcache:accumulated_resid{apply_ln = true, pos_slice = -1}
  close(ln_last, ln_all:select(-2, -1), 1e-6, "apply_ln with pos_slice")
  -- decompose_resid(layer, mlp_input, mode, apply_ln, pos_slice, incl_embeds, return_labels)
  local dec, dl = gcache:decompose_resid(nil, false, "attn", false, 2, false, true)
  T.eq(table.concat(dl, ","), "0_attn_out,1_attn_out")
  close(dec[1], gcache[{"attn_out", 1}]:select(1, 2), 0, "decompose_resid pos 2")
  T.raises(function() return gcache:accumulated_resid(1, false, false, nil, false, true, "extra") end,
           "accumulated_resid: at most 6 arguments")
  -- logit_attrs(residual_stack, tokens, incorrect_tokens, pos_slice, batch_slice, has_batch_dim):
  -- TransformerLens scales the stack by ln_final itself
  local stack = gcache:accumulated_resid{layer = -1}
  local tok = mi.tensor({{1, 2, 3, 4, 5, 6}, {6, 5, 4, 3, 2, 1}}, "int64")
  local la = gcache:logit_attrs(stack, tok)
  local scaled = gcache:apply_ln_to_stack(stack, -1)
  close(la, (scaled * gpt:tokens_to_residual_directions(tok)):sum(-1), 1e-6, "logit_attrs")
  local s1 = gcache:apply_ln_to_stack(stack, -1, false, nil, {1, 2})
  close(s1, scaled:narrow(1, 1, 1), 1e-6, "batch_slice")
end)

T.test("shortformer: the decompositions leave hook_pos_embed out and sum to resid_post exactly", function()
  local tokens = A.generate_repeated_tokens(model, 10, 2, {seed = 3})
  local _, cache = model:run_with_cache(tokens)
  local stack, labels = cache:get_full_resid_decomposition{return_labels = true}
  for _, l in ipairs(labels) do T.truthy(l ~= "pos_embed", "pos_embed is not in a shortformer's residual stream") end
  close(stack:sum(0), cache[{"resid_post", -1}], 1e-5, "full decomposition")
  local dec, dl = cache:decompose_resid{return_labels = true}
  T.eq(table.concat(dl, ","), "embed,0_attn_out,1_attn_out")
  close(dec:sum(0), cache[{"resid_post", -1}], 1e-5, "decompose_resid")
end)

T.test("logit_attribution_all works on a cache with a batch dim: parts + b_U = the correct-token logits", function()
  local tokens = A.generate_repeated_tokens(model, 8, 3, {seed = 4})
  local logits, cache = model:run_with_cache(tokens)
  local attr, labels = A.logit_attribution_all(model, cache, tokens)
  local P = tokens:size(1)
  T.eq(table.concat(attr:shape(), ","), "3," .. (P - 1) .. "," .. (1 + 2 * model.cfg.n_heads))
  T.eq(labels[1], "Direct"); T.eq(labels[#labels], "L1H7")
  local nxt = tokens:narrow(1, 1, P - 1)
  local correct = logits:narrow(1, 0, P - 1):gather(-1, nxt:unsqueeze(-1)):squeeze(-1)
  local total = attr:sum(-1) + model.b_U:index_select(0, nxt:reshape(-1)):view(3, P - 1)
  close(total, correct, 1e-4, "sum of the parts")
  -- the same rows from caches without batch dim
  local _, c1 = model:run_with_cache(tokens[{{1, 2}}], {remove_batch_dim = true})
  close(A.logit_attribution_all(model, c1, tokens[1]), attr[1], 1e-5, "row 1")
end)

T.test("run_with_hooks / add_hook with a hook point this model lacks raise (blocks.0.hook_mlp_out on attn-only)", function()
  T.raises(function()
    model:run_with_hooks("hi", {fwd_hooks = {{"blocks.0.hook_mlp_out", function() end}}})
  end, "'blocks.0.hook_mlp_out' is not a hook point of this model")
  T.raises(function() model:add_hook("blocks.0.hook_mlp_out", function() end) end, "not a hook point")
  T.raises(function() model:run_with_cache("hi", {names_filter = "blocks.0.hook_mlp_out"}) end, "not a hook point")
end)

T.test("to_tokens warns when it cuts a text to n_ctx", function()
  local long = string.rep("and the ", 400)
  local t
  local got = T.warnings(function() t = model:to_tokens(long) end)
  T.eq(t:size(1), model.cfg.n_ctx)
  T.eq(#got, 1)
  T.truthy(got[1]:find("cut to the model's n_ctx = 256", 1, true), got[1])
  T.eq(#T.warnings(function() model:to_tokens("short") end), 0)
  T.truthy(model:to_tokens(long, {truncate = false}):size(1) > 256)
end)

T.test("plot.attention_patterns: one head's [q, k] pattern is not titled head 0; 60 tokens all labelled", function()
  local dir = os.tmpname()
  os.remove(dir)
  local tokens = A.generate_repeated_tokens(model, 29, 1, {seed = 0})   -- 59 tokens
  local _, cache = model:run_with_cache(tokens, {remove_batch_dim = true})
  local st = model:to_str_tokens(tokens)
  local function script(path) local f = assert(io.open((path:gsub("%.png$", ".gp")))); local s = f:read("a"); f:close(); return s end
  local gp = script(mi.plot.attention_patterns(st, cache[{"pattern", 1}][4], {layer = 1, out = dir .. "/one.png"}))
  T.truthy(not gp:find("L1H0", 1, true) and not gp:find("Head 0", 1, true), "a single head titled head 0")
  gp = script(mi.plot.attention_patterns(st, cache[{"pattern", 1}][4], {layer = 1, head = 4, out = dir .. "/h4.png"}))
  T.truthy(gp:find("L1H4", 1, true), "opts.head names it")
  -- every key position has a tick label
  local xt = gp:match("set xtics %((.-)%)")
  local n = 0
  for _ in xt:gmatch('" %d+') do n = n + 1 end
  T.eq(n, #st, "x tick labels")
  os.execute("rm -rf '" .. dir .. "'")
end)

T.test("colour bars: a scale's ends are labelled (6.06 is not read as 5); non-negative scores stay >= 0", function()
  local dir = os.tmpname()
  os.remove(dir)
  local function script(path) local f = assert(io.open((path:gsub("%.png$", ".gp")))); local s = f:read("a"); f:close(); return s end
  local d = mi.tensor({{0.06, 0.2, 6.06}, {0.02, 2.23, -0.0007}})
  local gp = script(mi.plot.imshow(d, {out = dir .. "/abl.png"}))
  T.truthy(gp:find('"6.06" 6.0', 1, true) and gp:find('"-6.06" -6.0', 1, true), gp:match("set cbtics[^\n]*"))
  -- composition scores (>= 0) centred on their baseline: the bar starts at 0, white at the baseline
  local scores = mi.tensor({{0.02, 0.25}, {0.05, 0.1}})
  gp = script(mi.plot.comp_scores(scores, "K", 0.1, {out = dir .. "/k.png"}))
  T.truthy(gp:find("set cbrange [0:", 1, true), gp:match("set cbrange[^\n]*"))
  os.execute("rm -rf '" .. dir .. "'")
end)

-- ---------------------------------------------------------------- helpers
T.test("ActivationCache(cache_dict, model, has_batch_dim), ActivationCache.load(path, model)", function()
  local path = os.tmpname() .. ".safetensors"
  gcache:save(path)
  local back = mi.ActivationCache.load(path, gpt)
  T.eq(table.concat(back:keys(), ","), table.concat(gcache:keys(), ","), "keys in firing order")
  close(back[{"resid_post", 1}], gcache[{"resid_post", 1}], 0, "values")
  close(back:accumulated_resid{apply_ln = true}, gcache:accumulated_resid{apply_ln = true}, 0, "helpers work")
  os.remove(path)
  -- without a model (this used to crash in its iterator): keys sorted, items iterate
  local c = mi.ActivationCache({["hook_embed"] = mi.ones(2), ["blocks.0.hook_resid_pre"] = mi.zeros(2)})
  T.eq(table.concat(c:keys(), ","), "blocks.0.hook_resid_pre,hook_embed")
  local n = 0
  for name, t in c:items() do n = n + 1; T.truthy(mi.is_tensor(t), name) end
  T.eq(n, 2)
  T.raises(function() return mi.ActivationCache({x = 1}) end, "'x' is a number, not a tensor")
end)

T.test("utils.test_prompt prints as TransformerLens's (ranks, logits, probabilities from the model's own logits)", function()
  local lines = {}
  local real = io.stdout
  io.stdout = {write = function(_, ...) for _, s in ipairs{...} do lines[#lines + 1] = s end end}
  local ok, ranks = pcall(mi.utils.test_prompt, "In the beginning God", "created", model, {top_k = 2})
  io.stdout = real
  assert(ok, ranks)
  local text = table.concat(lines)
  local prompt_toks = model:to_str_tokens("In the beginning God")
  local ans = model:to_str_tokens(" created", {prepend_bos = false})
  T.truthy(text:find("Tokenized prompt: ['" .. table.concat(prompt_toks, "', '") .. "']\n", 1, true), text)
  T.truthy(text:find("Tokenized answer: ['" .. table.concat(ans, "', '") .. "']\n", 1, true), text)
  -- the first answer token: rank = how many tokens are more likely
  local tokens = mi.cat({model:to_tokens("In the beginning God")[0], model:to_tokens(" created", {prepend_bos = false})[0]}, 0)
  local logits = model(tokens)[0]
  local P = #prompt_toks
  local probs = logits[P - 1]:softmax(-1)
  local a = tokens[P]:item()
  local rank = probs:gt(probs[a]:item()):sum():item()
  T.truthy(text:find(("Performance on answer token:\nRank: %-8d Logit: %5.2f Prob: %6s Token: |%s|\n"):format(
    rank, logits[{P - 1, a}]:item(), ("%.2f%%"):format(100 * probs[a]:item()), ans[1]), 1, true), text)
  local _, top = probs:max(0)
  T.truthy(text:find(("Top 0th token. Logit: %5.2f"):format(logits[{P - 1, top:item()}]:item()), 1, true), text)
  T.truthy(text:find("Ranks of the answer tokens: [('" .. ans[1] .. "', " .. rank .. ")", 1, true), text)
  T.eq(ranks[1][1][2], rank)
end)

-- TransformerLens's get_act_name docstring examples, and its compact-form rule
T.test("get_act_name: TransformerLens's examples; 'resid_pre3' is not a compact form", function()
  local g = mi.utils.get_act_name
  T.eq(g("k", 6, "a"), "blocks.6.attn.hook_k")
  T.eq(g("pre", 2), "blocks.2.mlp.hook_pre")
  T.eq(g("embed"), "hook_embed")
  T.eq(g("normalized", 27, "ln2"), "blocks.27.ln2.hook_normalized")
  T.eq(g("k6"), "blocks.6.attn.hook_k")
  T.eq(g("scale4ln1"), "blocks.4.ln1.hook_scale")
  T.eq(g("pre5"), "blocks.5.mlp.hook_pre")
  T.eq(g("resid_pre3"), "hook_resid_pre3")
  T.eq(g("resid_pre", 3), "blocks.3.hook_resid_pre")
  T.eq(g("attn", 0), "blocks.0.attn.hook_pattern")
end)

-- tests/unit/test_hooked_transformer_config.py
T.test("cfg:is_layer_norm_activation() (TransformerLens's config tests)", function()
  local d = {n_layers = 2, d_vocab = 100, d_model = 6, n_ctx = 5, d_head = 2, attn_only = true}
  local function with(act) local c = {} for k, v in pairs(d) do c[k] = v end c.act_fn = act return c end
  T.eq(mi.HookedTransformerConfig(with("solu_ln")):is_layer_norm_activation(), true)
  T.eq(mi.HookedTransformerConfig(with("solu")):is_layer_norm_activation(), false)
  T.eq(mi.HookedTransformerConfig(with("relu")):is_layer_norm_activation(), false)
  T.eq(mi.HookedTransformerConfig(with("gelu")):is_layer_norm_activation(), false)
  local cfg = mi.HookedTransformerConfig(d)
  T.truthy(mi.HookedTransformerConfig(cfg) == cfg, "a config object unwraps to itself")
end)

-- tests/unit/test_utils.py: override_or_use_default_value and Slice
T.test("override_or_use_default_value (TransformerLens's cases)", function()
  local f = mi.utils.override_or_use_default_value
  T.eq(f(true, true), true); T.eq(f(true, false), false); T.eq(f(false, true), true); T.eq(f(false, false), false)
  T.eq(f(true, nil), true); T.eq(f(false, nil), false); T.eq(f(true), true); T.eq(f(false), false)
end)

T.test("utils.Slice: TransformerLens's shapes and values, indices, the one-integer drop", function()
  local S = mi.utils.Slice
  local ref = mi.tensor({{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}}, "int64")
  local function shape(t) return table.concat(t:shape(), ",") end
  T.eq(shape(S({indices = {0}}):apply(ref)), "1,5")
  T.eq(shape(S({stop = 1}):apply(ref)), "1,5")            -- Python's (1,) tuple: slice(None, 1)
  T.eq(shape(S(mi.tensor({0}, "int64")):apply(ref)), "1,5")
  T.eq(shape(S(0):apply(ref)), "5")
  T.eq(shape(S(mi.tensor(0, "int64")):apply(ref)), "5")
  T.eq(shape(S(nil):apply(ref)), "2,5")
  T.eq(table.concat(S({indices = {0}}):apply(ref):totable()[1], ","), "1,2,3,4,5")
  T.eq(table.concat(S(0):apply(ref):totable(), ","), "1,2,3,4,5")
  T.eq(table.concat(S({indices = {0, 1}}):indices(2):totable(), ","), "0,1")
  T.eq(S(0):indices(2):item(), 0)
  T.raises(function() return S({indices = {0, 2, 5}}):indices() end, "max_ctx")
  T.eq(table.concat(S({1, 5, 2}):apply(mi.arange(10)):totable(), ","), "1,3")
  T.eq(table.concat(S({start = -3}):apply(mi.arange(10)):totable(), ","), "7,8,9")
  T.raises(function() return S({3}) end, "ambiguous")
  T.eq(table.concat(S.unwrap(2):apply(ref, 1):shape(), ","), "2,1", "unwrap keeps the dim")
end)

-- tests/unit/test_use_attn_result.py, and test_hooks.py's conditional hooks
T.test("set_use_attn_result: same logits, hook_result appears; hooks on it need it; other switches raise", function()
  local m = mi.HookedTransformer{d_model = 128, d_head = 8, n_heads = 16, n_ctx = 128, n_layers = 1,
                                 attn_only = true, d_vocab = 10, seed = 2}
  local x = mi.arange(1, 9):unsqueeze(0)
  local normal = m(x)
  T.raises(function() m:add_hook("blocks.0.attn.hook_result", function(r) return r end) end, "not a hook point")
  m:set_use_attn_result(true)
  T.eq(m.cfg.use_attn_result, true)
  close(m(x), normal, 1e-5, "logits")
  local seen
  m:add_hook("blocks.0.attn.hook_result", function(r) seen = r:sum(-2) end)
  local _, cache = m:run_with_cache(x)
  m:reset_hooks()
  close(seen + m.b_O[0], cache[{"attn_out", 0}], 1e-4, "heads' results sum to attn_out")
  m:set_use_attn_result(false)
  T.raises(function() m:add_hook("blocks.0.attn.hook_result", function() end) end, "not a hook point")
  m:set_use_split_qkv_input(false)
  T.raises(function() m:set_use_split_qkv_input(true) end, "do not support use_split_qkv_input")
  T.raises(function() m:set_use_hook_mlp_in(true) end, "use_hook_mlp_in")
end)

-- tests/unit/test_hooks.py (there on solu-1l, here on the bundled model): counting calls on hook_embed
local function counter()
  local c = {count = 0}
  c.inc = function() c.count = c.count + 1 end
  return c
end
local embed = function(name) return name == "hook_embed" end
local prompt = "Hello World!"

T.test("hooks: run_with_hooks leaves nothing behind; permanent hooks survive reset_hooks and run_with_hooks", function()
  local c = counter()
  model:run_with_hooks(prompt, {fwd_hooks = {{embed, c.inc}}})
  T.eq(c.count, 1)
  model(prompt)
  T.eq(c.count, 1, "no hook left")
  local p = counter()
  model:add_perma_hook(embed, p.inc)
  model:run_with_hooks(prompt, {fwd_hooks = {}})
  T.eq(p.count, 1)
  model:reset_hooks()
  model(prompt)
  T.eq(p.count, 2, "a permanent hook survives reset_hooks()")
  model:remove_all_hook_fns()
  model(prompt)
  T.eq(p.count, 3, "and remove_all_hook_fns()")
  model:reset_hooks{including_permanent = true}
  model(prompt)
  T.eq(p.count, 3, "gone with including_permanent")
end)

T.test("hooks: context levels (nested contexts, a failing inner one, reset_hooks inside, with a permanent hook)", function()
  local c = counter()
  model:hooks({{embed, c.inc}}, function()
    T.eq(model.context_level, 1)
    model(prompt)
    T.eq(c.count, 1)
    model:hooks({{embed, c.inc}}, function()
      T.eq(model.context_level, 2)
      model(prompt)
      T.eq(c.count, 3, "2 from outer, 1 from inner")
    end)
    model(prompt)
    T.eq(c.count, 4, "the inner context's hook is gone, the outer one stays")
  end)
  T.eq(model.context_level, 0)
  model(prompt)
  T.eq(c.count, 4)
  -- a failing inner context removes its hooks only
  local d = counter()
  model:hooks({{embed, d.inc}}, function()
    local ok = pcall(model.hooks, model, {{embed, function() error("fail") end}}, function() model(prompt) end)
    T.eq(ok, false)
    model(prompt)
    T.eq(d.count, 2)
  end)
  -- reset_hooks inside a context removes its hooks
  local e = counter()
  model:hooks({{embed, e.inc}}, function()
    model:reset_hooks()
    model(prompt)
  end)
  T.eq(e.count, 0)
  -- a permanent hook and a context's
  local p = counter()
  model:add_perma_hook(embed, p.inc)
  model:hooks({{embed, p.inc}}, function() model(prompt) end)
  model(prompt)
  T.eq(p.count, 3, "1 + 1 inside, 1 after")
  model:reset_hooks{including_permanent = true}
  -- add_hook with a level; reset_hooks{level = n} removes that level only
  local f = counter()
  model:add_hook(embed, f.inc, {level = 5})
  model:add_hook(embed, f.inc)
  model:reset_hooks{level = 5}
  model(prompt)
  T.eq(f.count, 1)
  model:reset_hooks()
end)

T.test("hooks: prepend runs a hook before those already on the hook point (TransformerLens's test)", function()
  local name = "blocks.1.hook_resid_post"
  local function zero(z) z:fill_(0) end
  local function noise(z) return mi.randn(z:shape(), mi.Generator(1)) * 0.1 end
  local tokens = mi.arange(5):unsqueeze(0)
  for zero_first = 0, 1 do
    model:reset_hooks()
    for i = 0, 1 do model:add_hook(name, i == zero_first and zero or noise, {prepend = true}) end
    local logits = model(tokens)
    -- no normalization: zero residual gives logits b_U exactly
    local is_bias = maxdiff(logits, model.b_U:expand(1, 5, model.cfg.d_vocab_out)) < 1e-6
    T.eq(is_bias, zero_first == 0, "zero hook added first, then noise prepended before it")
  end
  model:reset_hooks()
end)

T.done()
