-- fuzz-api (FUZZ_API_REPORT=1, seeds 1-8, and the stricter check that the message names the
-- function): misuse of these mi.* / mi.utils.* functions failed inside miwb ("attempt to index a
-- number value (local 'opts')", "bad argument #1 to 'matmul'", "bad argument #3 to '_check_name'",
-- "tensor.lua:552: full: ...", "calc_fan_in_and_fan_out: ..." for init_xavier_normal_); each error
-- now names the function called and the argument.
local m = mi.HookedTransformer{n_layers = 1, d_model = 8, n_ctx = 8, d_head = 4, n_heads = 2, d_vocab = 11,
                               attn_only = true}
local function fails(want, f, ...)
  local ok, e = pcall(f, ...)
  e = tostring(e)
  assert(not ok and e:find(want, 1, true), "error '" .. e .. "' lacks '" .. want .. "'")
  assert(not e:find("attempt to", 1, true) and not e:find("lua/miwb/", 1, true), "an internal error: " .. e)
end
fails("save_pretrained: options must be a table, got number", mi.save_pretrained, m, "x", 5)
fails("save_pretrained: folder must be a string, got nil", mi.save_pretrained, m)
fails("get_act_name: layer_type must be a string, got miwb.HookedTransformer", mi.utils.get_act_name, "pre", 0, m)
fails("init_xavier_normal_: gain must be a number, got miwb.HookedTransformer", mi.utils.init_xavier_normal_, mi.ones(2, 2), m)
fails("init_xavier_uniform_: gain must be a number, got table", mi.utils.init_xavier_uniform_, mi.ones(2, 2), {{}})
fails("init_xavier_normal_: defined for 1, 2 or 3 dims, got shape []", mi.utils.init_xavier_normal_, mi.tensor(3))
fails("mm: other must be a tensor, got number", mi.ones(2, 2).mm, mi.ones(2, 2), 5)
fails("bmm: other must be a tensor, got string", mi.ones(1, 2, 2).bmm, mi.ones(1, 2, 2), "a")
fails("json.read: path must be a string, got function", mi.json.read, print)
fails("json.write: path must be a string, got nil", mi.json.write, nil, {})
fails("read_file: path must be a string, got nil", mi.utils.read_file, nil)
fails("full_like: full: expected a shape and a fill value", mi.full_like, mi.ones(2))
fails("ones_like: ones: unknown dtype", mi.ones_like, mi.ones(2), ":, 1:")
fails("assert_close: actual must be a tensor, a number or nested lists of numbers, got nil", mi.assert_close, nil, mi.ones(1))
fails("tokenize_dataset: files must be a path or a list of paths, got number", mi.tokenize_dataset, nil, 5)
fails("allclose: other must be a tensor or a number, got string", mi.allclose, mi.ones(4), "q")
fails("isclose: other must be a tensor or a number, got table", mi.isclose, mi.ones(4), {})
-- seeds 24, 31, 38: json.object(model) replaced the model's metatable, so later model and cache
-- methods failed with "attempt to call a nil value (method 'tokens_to_residual_directions')"
fails("json.object: the table already has a metatable (miwb.HookedTransformer)", mi.json.object, m)
fails("json.object: expected a table, got number", mi.json.object, 5)
assert(m(mi.tensor{{1, 2}}:long()):dim() == 3, "the model still works")
local o = mi.json.object(mi.json.object({}))
assert(mi.json.encode(o) == "{}")
local tmp = os.tmpname()
fails("json.write: json.encode: cannot encode an infinity", mi.json.write, tmp, {1 / 0})
fails("json.write: unknown option 'dim'", mi.json.write, tmp, {}, {dim = 1})
os.remove(tmp)
fails("tokenize_dataset: tokenizer must be a string, got nil", mi.tokenize_dataset, nil, "x")
fails("assert_close: rtol must be a number, got tensor", mi.assert_close, mi.ones(1), mi.ones(1), {rtol = mi.ones(1)})
-- the fuzzer's targets grew mi.metrics, mi.patching and mi.toy: the patch setters, SAE.new's
-- `where` and toy.induction_circuit's options failed inside miwb ("attempt to index a nil value
-- (local 'index')", "attempt to concatenate a table value (local 'where')")
local P = mi.patching
fails("layer_pos_patch_setter: index must be a list of 2 integers (layer first), got nil", P.layer_pos_patch_setter, mi.ones(1, 2), nil, mi.ones(1, 2))
fails("layer_head_pattern_patch_setter: expected a tensor as corrupted_activation, got string", P.layer_head_pattern_patch_setter, "a", {0, 0}, mi.ones(1))
fails("layer_pos_head_vector_patch_setter: expected a tensor as clean_activation, got nil", P.layer_pos_head_vector_patch_setter, mi.ones(1, 2, 2), {0, 1, 1})
fails("SAE.new: where (the name its messages start with) must be a string, got table", mi.SAE.new, {}, {}, {})
fails("toy.induction_circuit: options must be a table, got function", mi.toy.induction_circuit, print)
-- FUZZ_API_REPORT=names: a cache given as the model raised from the cache ("ActivationCache:
-- 'hook_cfg' is not in the cache", at patching.lua's line); mi.patching and mi.metrics now go
-- through the same wrapper as mi.analysis, so inner messages come at the user's line, named
local _, cache = m:run_with_cache(mi.tensor{{1, 2, 3}}:long())
fails("mi.patching.get_act_patch_attn_head_k_all_pos: the first argument must be a HookedTransformer", P.get_act_patch_attn_head_k_all_pos, cache, mi.tensor{{1, 2, 3}}:long(), cache, print)
fails("mi.patching.get_act_patch_attn_head_all_pos_every: get_act_patch_attn_head_out_all_pos: corrupted_tokens must be an int64 tensor", P.get_act_patch_attn_head_all_pos_every, m, "x", cache, print)
fails("mi.metrics.logit_diff: answer_tokens must be a token id", mi.metrics.logit_diff, nil)
fails("save_pretrained: needs a model, or a state dict and opts.cfg; got miwb.ActivationCache", mi.save_pretrained, cache, "x")
local a, c = mi.zeros(1, 3), mi.ones(1, 3)
assert(P.layer_pos_patch_setter(a, {0, 1}, c):sum():item() == 1, "the setter copies position 1 only")
-- (an ad-hoc run over mi.plot, mi.html, mi.steering and mi.sae found only these two html helpers)
fails("html_escape: expected a string, got nil", mi.html.html_escape, nil)
fails("x: the folder must be a string, got table", mi.html.mkdir_p, "x", {})
assert(mi.html.html_escape("<a&b>") == "&lt;a&amp;b&gt;")
mi.assert_close({1, 2}, mi.tensor{1, 2})
assert(mi.allclose(mi.ones(2), 1) and not mi.isclose(mi.ones(2), 2):any())
