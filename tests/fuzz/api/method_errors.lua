-- fuzz-api (FUZZ_API_REPORT=1, seeds 1-11): errors of model and cache methods that were Lua runtime
-- errors from inside miwb ("attempt to index a number value (local 'tok')", "attempt to compare
-- string with number") now name the method and the argument.
local m = mi.HookedTransformer{n_layers = 1, d_model = 8, n_ctx = 8, d_head = 4, n_heads = 2, d_vocab = 11,
                               attn_only = true}
local _, cache = m:run_with_cache(mi.tensor{{1, 2, 3}}:long())
local function fails(f, want)
  local ok, e = pcall(f)
  assert(not ok, "no error, expected " .. want)
  assert(tostring(e):find(want, 1, true), "error '" .. tostring(e) .. "' lacks '" .. want .. "'")
  assert(not tostring(e):find("attempt to", 1, true), "an internal error: " .. tostring(e))
end
fails(function() m:set_tokenizer(5) end, "set_tokenizer: expected a tokenizer")
fails(function() m:load_state_dict(mi.zeros(2)) end, "load_state_dict: expected a table")
fails(function() m:load_state_dict({}, 5) end, "load_state_dict")
fails(function() m:accumulated_bias(cache) end, "accumulated_bias: layer must be an integer")
fails(function() m:tokens_to_residual_directions(nil) end, "tokens_to_residual_directions: expected a token id")
fails(function() m:hooks(nil) end, "hooks: expected a list")
fails(function() cache:stack_head_results("a") end, "stack_head_results: layer must be an integer or nil, got string")
fails(function() cache:accumulated_resid(mi.zeros(2)) end, "accumulated_resid: layer must be an integer or nil, got tensor")
fails(function() cache:decompose_resid(1, "x") end, "decompose_resid: mlp_input must be a boolean")
fails(function() cache:stack_head_results(7) end, "cache:stack_head_results: layer 7 is out of range")
fails(function() cache:apply_ln_to_stack(nil) end, "apply_ln_to_stack: residual_stack must be a tensor")
fails(function() cache:logit_attrs(mi.zeros(1, 3, 8), print) end, "tokens_to_residual_directions")
fails(function() cache:save({}) end, "cache:save: path must be a string")
