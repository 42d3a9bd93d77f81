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

T.done()
