-- test_tensor_api.lua: the tensor API as a TransformerLens / torch user writes it (issue 16):
-- options tables, keyword arguments, diag offsets, any/all over a dim, Python slice strings,
-- comparison operators, einops gaps, and TransformerLens's tensor utils. Expected values come
-- from PyTorch (tests/fixtures/tensor_api.json, made by tests/fixtures/gen_tensor_api.py), from
-- the independent RNG reference of tests/fixtures/lua_tensor.json, or from closed forms.
local T = require("testlib")
local mi = require("miwb")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local rng_fx = mi.json.decode(read("tests/fixtures/lua_tensor.json")).rand

-- ================================================================ options tables

T.test("options: {seed = S} seeds rand/randn/randint as mi.Generator(S) does", function()
  -- the stream itself against the independent Python reference
  T.near_table(mi.rand({6}, {seed = 42}):totable(), rng_fx.seed42_6, 0, "rand{seed = 42}")
  T.near_table(mi.rand(4, {seed = 7}):totable(), rng_fx.seed7_4, 0, "rand{seed = 7}")
  T.truthy(mi.randn({4, 4}, {seed = 5}):equal(mi.randn({4, 4}, mi.Generator(5))), "randn{seed = 5}")
  T.truthy(mi.randint(0, 10, {5}, {seed = 0}):equal(mi.randint(0, 10, {5}, mi.Generator(0))), "randint{seed = 0}")
  T.truthy(mi.randint(10, {3}, {generator = mi.Generator(1)}):equal(mi.randint(0, 10, 3, mi.Generator(1))),
           "randint{generator = G}")
  -- a seed does not touch the default stream
  mi.manual_seed(7)
  mi.randn(3, {seed = 1})
  T.near_table(mi.rand(4):totable(), rng_fx.seed7_4, 0, "default stream untouched")
end)

T.test("options: dtype where it applies", function()
  T.eq(mi.randint(0, 10, {5}, {seed = 0, dtype = "float32"}):dtype(), "float32")
  T.eq(mi.zeros({2}, {dtype = "int64"}):dtype(), "int64")
  T.eq(mi.full({2}, 1, {dtype = "bool"}):dtype(), "bool")
  T.raises(function() mi.randn(2, {dtype = "int64"}) end, "randn: only float32")
end)

T.test("options: an unknown key names the key, the function and the options", function()
  T.raises(function() mi.randn({4, 4}, {sed = 5}) end, "randn: unknown option 'sed' (options: dtype, generator, seed)")
  T.raises(function() mi.rand(2, {generater = mi.Generator(1)}) end, "rand: unknown option 'generater'")
  T.raises(function() mi.randint(0, 10, {5}, {seeds = 0}) end, "randint: unknown option 'seeds'")
  T.raises(function() mi.zeros(2, {seed = 1}) end, "zeros: unknown option 'seed' (options: dtype)")
  T.raises(function() mi.tensor({1}, {dtyp = "int64"}) end, "tensor: unknown option 'dtyp'")
  T.raises(function() mi.randn(2, {seed = 1, generator = mi.Generator(1)}) end, "not both")
end)

T.test("options: mi.utils.check_opts is the same check for the Lua library", function()
  local o = {fold_ln = true}
  T.eq(mi.utils.check_opts("from_pretrained", o, {"fold_ln", "center_unembed"}), o, "returns opts")
  T.eq(mi.utils.check_opts("f", nil, {"a"}), nil, "nil passes")
  T.raises(function() mi.utils.check_opts("from_pretrained", {fold_lm = true}, {"fold_ln", "center_unembed"}) end,
           "from_pretrained: unknown option 'fold_lm' (options: center_unembed, fold_ln)")
  T.raises(function() mi.utils.check_opts("g", {x = 1}, {a = true, b = true}) end, "g: unknown option 'x' (options: a, b)")
  T.raises(function() mi.utils.check_opts("g", 5, {"a"}) end, "g: options must be a table, got number")
  T.raises(function() mi.utils.check_opts("g", {1}, {"a"}) end, "g: options take names as keys")
end)

-- ================================================================ diag, any/all, keyword arguments
-- (values against torch: the "issue 16" cases of tests/fixtures/lua_tensor.json, run by test_tensor.lua)

T.test("diag(-1) reads the diagonal below the main one (the notebook's previous-token score)", function()
  -- an attention pattern [q, k] whose row q puts 0.75 on k = q - 1 and the rest on k = 0
  local n = 6
  local p = mi.zeros(n, n)
  p[{0, 0}] = 1
  for q = 1, n - 1 do p[{q, q - 1}] = 0.75; p[{q, 0}] = p[{q, 0}]:item() + 0.25 end
  local d = p:diag(-1)
  T.eq(table.concat(d:shape(), ","), "5")
  T.near(d:mean():item(), (0.75 * 4 + 1.0) / 5, 1e-6, "mean of diag(-1)") -- q = 1 has k = 0 twice
  T.near(p:diag():mean():item(), 1 / 6, 1e-6, "main diagonal")
  d[0] = 5 -- a copy, as torch.diag
  T.near(p[{1, 0}]:item(), 1.0, 0, "diag(-1) is a copy")
  T.raises(function() p:diag(0.5) end, "diag: diagonal must be an integer")
end)

T.test("any/all: over every element a Lua boolean, over a dim a bool tensor", function()
  local m = mi.tensor{{true, false}, {false, false}}
  T.eq(m:any(), true); T.eq(m:all(), false)
  T.eq(m:any(1):dtype(), "bool")
  T.eq(table.concat(m:any(1):long():totable(), ","), "1,0")
  T.eq(table.concat(m:all(0, true):shape(), ","), "1,2")
  T.raises(function() m:any(2) end, "any: dim 2 out of range")
end)

T.test("keyword arguments: unknown names and a parameter given twice raise", function()
  local a = mi.ones(2, 3)
  T.raises(function() a:sum{dims = 1} end, "sum: unknown option 'dims' (options: dim, keepdim)")
  T.raises(function() a:std{dim = 1, corection = 0} end, "std: unknown option 'corection' (options: dim, keepdim, unbiased, correction)")
  T.raises(function() a:sum(1, {dim = 0}) end, "sum: 'dim' given both by position and by name")
  T.raises(function() a:std{dim = 1, unbiased = false, correction = 0} end, "std: give unbiased or correction, not both")
  T.raises(function() a:topk{k = 1, dim = 0, larger = true} end, "topk: unknown option 'larger'")
  T.raises(function() a:flatten{start = 1} end, "flatten: unknown option 'start'")
  T.raises(function() a:flatten(0, 1, 2) end, "flatten: 3 arguments, at most 2")
  T.raises(function() mi.cat({a, a}, {axis = 1}) end, "cat: unknown option 'axis'")
  T.raises(function() a:diagonal{offset = 1, dim = 0} end, "diagonal: unknown option 'dim'")
  -- a list is still a list of dims, a shape or a list of tensors, not options
  T.eq(a:sum({0, 1}):item(), 6.0)
end)

T.test("assert_close: torch's float32 defaults (rtol 1.3e-6, atol 1e-5), exact for int64, options by name", function()
  local a = mi.full({3}, 100)
  mi.assert_close(a * (1 + 1e-6), a)             -- 1e-4 <= 1e-5 + 1.3e-4
  T.raises(function() mi.assert_close(a * (1 + 2e-6), a) end, "assert_close: 3 of 3 elements differ")
  mi.assert_close(a * (1 + 2e-6), a, {rtol = 3e-6, atol = 0})
  mi.assert_close(mi.full({2}, 1e-6), mi.zeros(2)) -- atol covers it
  T.raises(function() mi.assert_close(mi.full({2}, 1e-6), mi.zeros(2), {atol = 1e-7}) end, "2 of 2 elements differ")
  T.raises(function() mi.assert_close(mi.tensor({1, 2}, "int64"), mi.tensor({1, 3}, "int64")) end, "1 of 2 elements differ")
  T.raises(function() mi.assert_close(a, a, {rtol = 1e-5, msg = "logits", tol = 1}) end, "assert_close: unknown option 'tol'")
  T.raises(function() mi.assert_close(a, a + 1, {msg = "logits"}) end, "logits: assert_close:")
end)

-- ================================================================ Python subscripts as strings
-- (values against torch over many random subscripts: tests/fixtures/lua_tensor.json)

T.test("subscript strings: views, assignment, and errors that show the grammar", function()
  local x = mi.arange(24):view(2, 3, 4)
  T.truthy(x[":, 1:"]:shares_storage(x), "a view")
  T.eq(table.concat(x["None, ..., None"]:shape(), ","), "1,2,3,4,1")
  x["..., -1"] = 0
  T.eq(x:sum():item(), 276 - (3 + 7 + 11 + 15 + 19 + 23))
  T.raises(function() return x["1:a"] end, "index: cannot read '1:a' in the subscript \"1:a\" (integers, start:stop:step, ..., None)")
  T.raises(function() return x["::-1"] end, "index: step must be greater than zero")
  T.raises(function() return x["0,,1"] end, "index: empty item in the subscript")
  T.raises(function() return x["..., 0, ..."] end, "only one \"...\"")
  T.raises(function() return x["0, 0, 0, 0"] end, "index: 4 items for a tensor of shape [2,3,4]")
  T.raises(function() return x["5"] end, "")
  T.raises(function() x.foo = 1 end, "cannot set field 'foo' of a tensor")
  T.eq(x.sumx, nil, "an unknown name is nil, as a table's")
end)

-- ================================================================ einops and einsum gaps
-- (values against torch: tests/fixtures/lua_tensor.json)

T.test("einops numeric axes: where einops takes them, and a clear error elsewhere", function()
  local x = mi.arange(12):view(2, 6):float()
  -- closed form: the two halves of each row added
  T.eq(table.concat(mi.reduce(x, "b (2 s) -> b s", "sum"):long():view(-1):totable(), ","), "3,5,7,15,17,19")
  T.eq(table.concat(mi.repeat_axes(mi.arange(3), "s -> (2 s)"):totable(), ","), "0,1,2,0,1,2")
  T.raises(function() mi.rearrange(x, "b (2 s) -> b s") end,
           "rearrange: the number 2 on the left of 'b (2 s) -> b s' is an anonymous axis")
  T.raises(function() mi.repeat_axes(x, "b (2 s) -> b s 3") end, "repeat_axes: the number 2 on the left")
  T.raises(function() mi.reduce(x, "b s -> b 2 s", "sum") end, "reduce: the number 2 on the right")
  T.raises(function() mi.reduce(x, "b (4 s) -> b s", "sum") end, "dim 1 of size 6 cannot be split by 4")
  T.raises(function() mi.reduce(x, "b s -> b", function(t) return t end) end,
           "reduce: the reduction gave [2,6], expected a tensor of 1 dims")
end)

T.test("einsum: ... and repeated axes, errors naming the spec", function()
  local z = mi.tensor{{1, 2}, {3, 4}}
  T.eq(mi.einsum("i i ->", z):item(), 5.0, "trace")
  T.eq(mi.einsum("i j, j i ->", z, z):item(), 1 + 6 + 6 + 16, "trace of a product (no repeat)")
  T.raises(function() mi.einsum("i i ->", mi.zeros(2, 3)) end,
           "einsum: \"i i ->\": axis 'i' is repeated in operand 0 with sizes 2 and 3")
  T.raises(function() mi.einsum("... i, ... i -> ...", mi.zeros(2, 3), mi.zeros(4, 3)) end,
           "the dims under ... do not broadcast")
  T.raises(function() mi.einsum("a b c ... -> a", z) end, "operand 0 has shape [2,2] but its term names 3 dims")
end)

-- ================================================================ comparison operators

T.test("x > 0.5 and friends raise naming the method to write; a == b stays identity", function()
  local x = mi.rand(3)
  T.raises(function() return x > 0.5 end, "write x:gt(0.5) for x > 0.5")
  T.raises(function() return x < 0.5 end, "write x:lt(0.5) for x < 0.5")
  T.raises(function() return x >= 1 end, "write x:ge(1) for x >= 1")
  T.raises(function() return x <= 1 end, "write x:le(1) for x <= 1")
  T.raises(function() return x < x end, "write x:lt(y) for x < y")
  T.eq(x == x, true); T.eq(x == x:clone(), false)
end)

T.done()
