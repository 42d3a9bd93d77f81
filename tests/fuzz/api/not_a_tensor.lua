-- fuzz-api (FUZZ_API_REPORT=1): the Lua-written tensor functions and the *_like constructors given
-- something that is not a tensor failed inside miwb ("flatten: attempt to call a nil value (method
-- 'dim')", "tensor.lua:532: attempt to index a nil value (local 'x')"); they now say what they expected.
local function fails(f, want)
  local ok, e = pcall(f)
  assert(not ok and tostring(e):find(want, 1, true), "error '" .. tostring(e) .. "' lacks '" .. want .. "'")
  assert(not tostring(e):find("attempt to", 1, true), "an internal error: " .. tostring(e))
end
fails(function() return mi.flatten(5) end, "flatten: expected a tensor as the first argument, got number")
fails(function() return mi.argsort({}) end, "argsort: expected a tensor as the first argument, got table")
fails(function() return mi.allclose(nil, mi.ones(1)) end, "allclose: expected a tensor as the first argument, got nil")
fails(function() return mi.zeros_like(nil) end, "zeros_like: expected a tensor, got nil")
fails(function() return mi.full_like(3, 1) end, "full_like: expected a tensor, got number")
fails(function() return mi.rand_like("x") end, "rand_like: expected a tensor, got string")
fails(function() return mi.randn_like({}) end, "randn_like: expected a tensor, got table")
assert(mi.flatten(mi.ones(2, 3)):numel() == 6 and mi.zeros_like(mi.ones(2)):sum():item() == 0)
