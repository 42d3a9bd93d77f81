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
  T.raises(function() a:std{dim = 1, corection = 0} end, "std: unknown option 'corection' (options: dim, unbiased, keepdim, correction)")
  T.raises(function() a:sum(1, {dim = 0}) end, "sum: 'dim' given both by position and by name")
  T.raises(function() a:std{dim = 1, unbiased = false, correction = 0} end, "std: give unbiased or correction, not both")
  T.raises(function() a:topk{k = 1, dim = 0, larger = true} end, "topk: unknown option 'larger'")
  T.raises(function() a:flatten{start = 1} end, "flatten: unknown option 'start'")
  T.raises(function() a:flatten(0, 1, 2) end, "flatten: 3 arguments, at most 2")
  T.raises(function() mi.cat({a, a}, {axis = 1}) end, "cat: unknown option 'axis'")
  T.raises(function() a:diagonal{offset = 1, dim = 0} end, "diagonal: unknown option 'dim'")
  -- std/var take torch's positional order (dim, unbiased, keepdim): x:std(0, false) is biased
  local v = mi.tensor{1, 2, 3, 4}
  T.near(v:std(0, false):item(), math.sqrt(1.25), 1e-6, "std(0, false) biased")
  T.near(v:var(0, true, true):item(), 5 / 3, 1e-6, "var(0, true, true) unbiased")
  T.eq(table.concat(v:var(0, true, true):shape(), ","), "1", "keepdim third")
  T.raises(function() a:sum(0, true, false) end, "sum: unexpected argument #4 (sum takes dim, keepdim)")
  -- a list is still a list of dims, a shape or a list of tensors, not options
  T.eq(a:sum({0, 1}):item(), 6.0)
end)

T.test("options: *_like take a dtype by name; eye and to take theirs by name", function()
  local x = mi.ones(2)
  T.eq(mi.zeros_like(x, {dtype = "int64"}):dtype(), "int64", "zeros_like{dtype}")
  T.eq(mi.full_like(x, 3, {dtype = "int64"}):sum():item(), 6)
  T.eq(mi.ones_like(mi.arange(2)):dtype(), "int64", "x's dtype by default")
  T.raises(function() mi.zeros_like(x, {dtyp = "int64"}) end, "zeros_like: unknown option 'dtyp' (options: dtype)")
  T.eq(table.concat(mi.eye{n = 2, m = 3}:shape(), ","), "2,3")
  T.eq(x:to{dtype = "int64"}:dtype(), "int64")
  T.raises(function() mi.eye(2, {k = 1}) end, "eye: unknown option 'k' (options: n, m)")
end)

T.test("options: the error points at the caller's line", function()
  local line = debug.getinfo(1, "l").currentline
  local err = T.raises(function() local y = mi.ones(2):sum{dims = 0}; return y end, "sum: unknown option")
  T.truthy(err:find("test_tensor_api.lua:" .. (line + 1) .. ":", 1, true), "C method: " .. err)
  err = T.raises(function() local y = mi.zeros_like(mi.ones(2), {dtyp = 1}); return y end, "zeros_like: unknown option")
  T.truthy(err:find("test_tensor_api.lua:" .. (line + 3) .. ":", 1, true), "Lua library function: " .. err)
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
  -- torch's rule for special values: equal infinities are close, NaN only with equal_nan
  local s = mi.tensor{1 / 0, -1 / 0, 0 / 0}
  mi.assert_close(s, s, {equal_nan = true})
  T.raises(function() mi.assert_close(s, s) end, "1 of 3 elements differ")
  T.eq(table.concat(s:isclose(s):long():totable(), ","), "1,1,0")
  T.eq(table.concat(s:isclose(s, {equal_nan = true}):long():totable(), ","), "1,1,1")
  T.eq(s:allclose(s, {equal_nan = true}), true); T.eq(s:allclose(s), false)
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
  T.raises(function() mi.rearrange(x, "a b -> b a", {c = 3}) end,
           "rearrange: a size is given for 'c', which is not an axis of 'a b -> b a'")
  T.raises(function() mi.rearrange(x, "a (b p) -> a b p", {p = 1.5}) end, "the size of 'p' must be a positive integer")
  T.raises(function() mi.repeat_axes(x, "a b -> a b n", 3) end, "repeat_axes: axis sizes must be a table")
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
  T.raises(function() mi.einsum("ij,jk->ik", z, z) end,
           "einsum: \"ij,jk->ik\": axis names are separated by spaces here, as in einops: \"i j, j k -> i k\"")
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

-- ================================================================ TransformerLens's utils, ported
-- TransformerLens 2.12 tests/unit/test_utils.py (is_square, is_lower_triangular,
-- calc_fan_in_and_fan_out, TestInitKaiming, TestInitXavier) and tests/unit/factored_matrix
-- (test_constructor, test_multiply_by_scalar): their inputs and expectations, written here.
local U = mi.utils

local square_failures = {
  function() return mi.tensor({}) end, function() return mi.tensor(2) end, function() return mi.ones(2, 3) end,
  function() return mi.zeros(2) end, function() return mi.ones(3, 3, 3) end, function() return mi.ones(1, 1, 1, 1) end,
}

T.test("TL utils: is_square", function()
  T.eq(U.is_square(mi.ones(3, 3)), true); T.eq(U.is_square(mi.zeros(1, 1)), true)
  for i, f in ipairs(square_failures) do T.eq(U.is_square(f()), false, "failed case " .. i) end
end)

T.test("TL utils: is_lower_triangular", function()
  for i, x in ipairs{mi.eye(4), mi.ones(4, 4):tril(), mi.ones(4, 4):triu().T, mi.zeros(4, 4)} do
    T.eq(U.is_lower_triangular(x), true, "pass case " .. i)
  end
  for i, f in ipairs(square_failures) do T.eq(U.is_lower_triangular(f()), false, "square failure " .. i) end
  for i, x in ipairs{mi.ones(4, 4):triu(), mi.ones(4, 4):tril().T, mi.ones(3, 3)} do
    T.eq(U.is_lower_triangular(x), false, "fail case " .. i)
  end
end)

T.test("TL utils: calc_fan_in_and_fan_out", function()
  local a, b = U.calc_fan_in_and_fan_out(mi.tensor{1, 2, 3, 4, 5}); T.eq(a, 1); T.eq(b, 5)
  a, b = U.calc_fan_in_and_fan_out(mi.tensor{{1, 2, 3}, {4, 5, 6}}); T.eq(a, 2); T.eq(b, 3)
  a, b = U.calc_fan_in_and_fan_out(mi.rand(2, 25, 5)); T.eq(a, 25); T.eq(b, 10)
  T.raises(function() U.calc_fan_in_and_fan_out(mi.tensor{{{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}}}) end,
           "calc_fan_in_and_fan_out: defined for 1, 2 or 3 dims, got shape [1,2,2,2]")
  T.raises(function() U.calc_fan_in_and_fan_out(mi.tensor(1)) end, "got shape []")
end)

-- np.isclose(got, want, rtol = 1e-2)
local function close(got, want, what) T.near(got, want, 1e-2 * math.abs(want), what) end

-- the checks TransformerLens makes on a [2, d_model, 137], a [d_mlp, d_model] and a
-- [d_model * 123] tensor filled by init, with std(fan_in, fan_out) the expected deviation
local function check_init(init, uniform, std_of, opts)
  for _, d_model in ipairs{4096} do
    for _, d_mlp in ipairs{256, 512} do
      mi.manual_seed(1234)
      local x = init(mi.zeros(2, d_model, 137), opts)
      local cases = {{x, d_model, 2 * 137}, {init(mi.zeros(d_mlp, d_model), opts), d_mlp, d_model},
                     {init(mi.zeros(d_model * 123), opts), 1, d_model * 123}}
      for i, c in ipairs(cases) do
        local t, std = c[1], std_of(c[2], c[3])
        close(t:std():item(), std, ("std, tensor %d, d_model %d, d_mlp %d"):format(i, d_model, d_mlp))
        if uniform then
          close(t:max():item(), math.sqrt(3) * std, "max, tensor " .. i)
          close(t:min():item(), -math.sqrt(3) * std, "min, tensor " .. i)
        end
      end
      mi.manual_seed(1234)
      T.truthy(init(mi.zeros(2, d_model, 137), opts):allclose(x, 1e-2), "same seed, same numbers")
    end
  end
end

T.test("TL utils: init_kaiming_uniform_ and init_kaiming_normal_ (TestInitKaiming)", function()
  for _, nl in ipairs{"linear", "relu"} do
    local gain = nl == "relu" and math.sqrt(2) or 1
    local std = function(fan_in) return gain / math.sqrt(fan_in) end
    check_init(U.init_kaiming_uniform_, true, std, {nonlinearity = nl})
    check_init(U.init_kaiming_normal_, false, std, {nonlinearity = nl})
  end
end)

T.test("TL utils: init_xavier_uniform_ and init_xavier_normal_ (TestInitXavier)", function()
  local std = function(fan_in, fan_out) return math.sqrt(2 / (fan_in + fan_out)) end
  check_init(U.init_xavier_uniform_, true, std)
  check_init(U.init_xavier_normal_, false, std)
end)

T.test("init_*: gain, mode, a, nonlinearity and a seeded generator, by position or by name", function()
  local p = mi.zeros(300, 200)
  -- fan_out mode, tanh gain 5/3, extra gain 2: bound 2 * 5/3 * sqrt(3 / 200)
  U.init_kaiming_uniform_(p, {mode = "fan_out", nonlinearity = "tanh", gain = 2, seed = 3})
  T.near(p:abs():max():item(), 2 * 5 / 3 * math.sqrt(3 / 200), 2e-3, "bound")
  T.truthy(p:le(2 * 5 / 3 * math.sqrt(3 / 200)):all(), "within the bound")
  -- leaky_relu with slope a: gain sqrt(2 / (1 + a^2)); positional as TransformerLens
  local q = U.init_kaiming_normal_(mi.zeros(400, 300), 0.5, "leaky_relu", 1, "fan_in", mi.Generator(4))
  close(q:std():item(), math.sqrt(2 / 1.25) / math.sqrt(400), "leaky_relu std")
  T.truthy(U.init_xavier_normal_(mi.zeros(5, 5), {generator = mi.Generator(9)})
             :equal(U.init_xavier_normal_(mi.zeros(5, 5), {seed = 9})), "seed = generator with that seed")
  T.truthy(U.init_xavier_uniform_(mi.zeros(5, 5), 3, {seed = 1}):abs():max():item() <= 3 * math.sqrt(6 / 10), "gain")
  T.raises(function() U.init_kaiming_uniform_(p, {mode = "fan_avg"}) end, "init_kaiming_uniform_: mode must be 'fan_in' or 'fan_out'")
  T.raises(function() U.init_kaiming_uniform_(p, {nonlinearity = "gelu"}) end, "unsupported nonlinearity 'gelu'")
  T.raises(function() U.init_xavier_uniform_(p, {gian = 2}) end, "init_xavier_uniform_: unknown option 'gian'")
end)

T.test("TL FactoredMatrix: has_leading_dims (test_constructor)", function()
  local f = mi.FactoredMatrix(mi.randn(5, 3), mi.randn(3, 7))
  T.eq(f.has_leading_dims, false)
  T.eq(table.concat({f.ldim, f.mdim, f.rdim}, ","), "5,3,7")
  f = mi.FactoredMatrix(mi.ones(5, 3), mi.ones(2, 4, 3, 7))
  T.eq(f.has_leading_dims, true)
  T.eq(table.concat(f.A:shape(), ","), "2,4,5,3"); T.eq(table.concat(f.shape, ","), "2,4,5,7")
  f = mi.FactoredMatrix(mi.ones(4, 5, 3), mi.ones(2, 4, 3, 7))
  T.eq(f.has_leading_dims, true); T.eq(table.concat(f.shape, ","), "2,4,5,7")
  T.raises(function() mi.FactoredMatrix(mi.ones(9, 5, 3), mi.ones(2, 4, 3, 7)) end, "leading dims do not broadcast")
end)

T.test("TL FactoredMatrix: a one-element tensor scales (test_multiply_by_scalar); * is @ otherwise", function()
  for _, lead in ipairs{false, true} do
    local a = lead and mi.rand(6, 2, 3) or mi.rand(2, 3)
    local b = lead and mi.rand(6, 3, 4) or mi.rand(3, 4)
    local fm = mi.FactoredMatrix(a, b)
    local r = mi.rand(1)
    for _, s in ipairs{r, r:item(), mi.randint(1, 10, {1}):item(), mi.rand(1, 1), mi.tensor(2.5)} do
      local want = a:matmul(b) * (mi.is_tensor(s) and s:item() or s)
      mi.assert_close((fm * s).AB, want)
      mi.assert_close((s * fm).AB, want)
      T.eq(table.concat((fm * s).shape, ","), table.concat(fm.shape, ","), "scaling keeps the shape")
    end
    -- TransformerLens raises for these; in Lua, * is @, and these shapes do not multiply
    T.raises(function() return fm * mi.rand(2, 2) end, "inner dimensions differ")
    T.raises(function() return fm * mi.rand(2) end, "inner dimensions differ")
  end
  -- the @ reading of x * fm, where TransformerLens would raise: a [2, 2] on the left multiplies
  local a, b = mi.rand(2, 3), mi.rand(3, 4)
  local x = mi.rand(2, 2)
  mi.assert_close((x * mi.FactoredMatrix(a, b)).AB, x:matmul(a):matmul(b), {rtol = 1e-5, atol = 1e-6})
end)

T.done()
