-- test_tensor.lua: the Lua face of the tensor core.
-- Part 1 runs every case of tests/fixtures/lua_tensor.json (Lua expressions paired with the same
-- computation in PyTorch, see tests/fixtures/gen_lua_tensor.py). Part 2 checks, with values
-- worked out by hand, what a fixture cannot: errors and their messages, views sharing storage,
-- in-place forms, conversions to Lua values, generators, __close, and GC accounting.
local T = require("testlib")
local mi = require("miwb")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local fx = mi.json.decode(read("tests/fixtures/lua_tensor.json"))

local function shape_str(s) return "[" .. table.concat(s, ",") .. "]" end

-- compares a tensor with a fixture entry {dtype, shape, data}; floats within a relative tolerance
local function check_tensor(got, want, what)
  T.truthy(mi.is_tensor(got), what .. ": expected a tensor, got " .. type(got))
  T.eq(got:dtype(), want.dtype, what .. " dtype")
  T.eq(shape_str(got:shape()), shape_str(want.shape), what .. " shape")
  local data = got:dtype() == "bool" and got:long():totable() or got:totable()
  local function cmp(a, b, path)
    if type(b) == "table" then
      T.eq(type(a), "table", what .. " at " .. path)
      T.eq(#a, #b, what .. " length at " .. path)
      for i = 1, #b do cmp(a[i], b[i], path .. "[" .. i .. "]") end
    else
      local tol = want.dtype == "float32" and (1e-5 + 1e-4 * math.abs(b)) or 0
      if not (math.abs(a - b) <= tol or a == b) then
        error(("%s: %s at %s, expected %s"):format(what, tostring(a), path, tostring(b)), 0)
      end
    end
  end
  cmp(data, want.data, "")
end

local function env()
  local e = setmetatable({mi = mi}, {__index = _G})
  for name, v in pairs(fx.inputs) do
    local t = mi.tensor(v.data, v.dtype)
    if #v.shape == 0 or t:numel() == 0 then t = mi.zeros(v.shape, v.dtype) end
    T.eq(shape_str(t:shape()), shape_str(v.shape), "input " .. name)
    e[name] = t
  end
  return e
end

-- ================================================================ part 1: fixture cases

for _, c in ipairs(fx.cases) do
  T.test("torch: " .. c.name .. "  [" .. c.lua .. "]", function()
    local fn = assert(load("return " .. c.lua, "=" .. c.name, "t", env()))
    local outs = table.pack(fn())
    T.eq(outs.n, #c.outs, "number of results")
    for i, want in ipairs(c.outs) do
      if want.value ~= nil then
        local got = outs[i]
        if type(want.value) == "number" and math.type(want.value) == "float" then
          T.near(got, want.value, 1e-6 + 1e-5 * math.abs(want.value), "value " .. i)
        else
          T.eq(got, want.value, "value " .. i)
        end
      else
        check_tensor(outs[i], want, "result " .. i)
      end
    end
  end)
end

for _, c in ipairs(fx.assign) do
  T.test("torch assignment: " .. c.name .. "  [" .. c.lua .. "]", function()
    local e = env()
    e.Y = e.X:clone()
    local fn = assert(load(c.lua, "=" .. c.name, "t", e))
    fn()
    check_tensor(e.Y, c.out, "Y")
    check_tensor(e.X, fx.inputs.X, "X unchanged")
  end)
end

T.test("rand: xoshiro256** stream matches the independent Python reference", function()
  local g = mi.Generator(42)
  local r = mi.rand(2, 3, g)
  local flat = r:view(-1):totable()
  T.near_table(flat, fx.rand.seed42_6, 0, "Generator(42)")
  mi.manual_seed(7)
  T.near_table(mi.rand({4}):totable(), fx.rand.seed7_4, 0, "manual_seed(7)")
end)

-- ================================================================ part 2: by hand

T.test("shape, size, dim, numel, #, dtype, stride", function()
  local x = mi.zeros(2, 3, 4)
  T.eq(shape_str(x:shape()), "[2,3,4]")
  T.eq(x:size(0), 2); T.eq(x:size(-1), 4)
  T.eq(x:dim(), 3); T.eq(x:numel(), 24); T.eq(#x, 2)
  T.eq(x:dtype(), "float32")
  T.eq(shape_str(x:stride()), "[12,4,1]")
  T.eq(shape_str(x:transpose(0, 2):stride()), "[1,4,12]")
  T.eq(mi.tensor(3):dim(), 0)
  T.raises(function() return #mi.tensor(3) end, "len: a 0-dim tensor has no length")
  T.raises(function() return x:size(3) end, "size: dim 3 out of range for a tensor of shape [2,3,4]")
end)

T.test("item and totable give Lua values (1-based lists, integers for int64)", function()
  local x = mi.tensor({{1, 2}, {3, 4}}, "int64")
  local t = x:totable()
  T.eq(#t, 2); T.eq(t[2][1], 3); T.eq(math.type(t[2][1]), "integer")
  T.eq(x[{1, 1}]:item(), 4)
  T.eq(mi.tensor{0.5}:item(), 0.5)
  T.eq(mi.tensor{true}:item(), true)
  T.eq(mi.tensor(2.5):totable(), 2.5)
  T.eq(x:t():totable()[1][2], 3, "totable follows strides")
  -- int64 values beyond 2^53 survive exactly
  local big = mi.tensor({math.maxinteger, math.mininteger}, "int64")
  T.eq(big[0]:item(), math.maxinteger); T.eq(big:totable()[2], math.mininteger)
  T.raises(function() return x:item() end, "item: tensor of shape [2,2] has 4 elements, expected 1")
end)

T.test("views share storage: writes through a view are seen by the base", function()
  local x = mi.zeros(3, 4)
  local v = x:narrow(1, 1, 2)
  v:fill_(5)
  T.near_table(x:totable(), {{0, 5, 5, 0}, {0, 5, 5, 0}, {0, 5, 5, 0}})
  x[{0, {}}] = 1
  T.near_table(v[0]:totable(), {1, 1})
  T.truthy(x:shares_storage(x.T), "T is a view")
  T.truthy(x:shares_storage(x[1]), "x[1] is a view")
  T.truthy(not x:shares_storage(x:clone()), "clone copies")
  T.truthy(x:shares_storage(x:contiguous()), "contiguous of a contiguous tensor shares")
  T.truthy(not x.T:shares_storage(x.T:contiguous()), "contiguous of a transpose copies")
  T.truthy(x:shares_storage(x:view(2, 6)), "view shares")
  T.truthy(x:shares_storage(x:unsqueeze(0):expand(2, 3, 4)), "expand shares")
  T.eq(x:expand(2, 3, 4):stride()[1], 0, "expanded dim has stride 0")
  local parts = x:split(2, 0)
  T.eq(#parts, 2); T.eq(parts[2]:size(0), 1)
  T.truthy(x:shares_storage(parts[2]), "split gives views")
end)

T.test("in-place forms return the same tensor and change it", function()
  local x = mi.tensor{1, -2, 3}
  T.truthy(rawequal(x:add_(1), x))
  T.near_table(x:totable(), {2, -1, 4})
  x:mul_(mi.tensor{1, 2, 3}); T.near_table(x:totable(), {2, -2, 12})
  x:sub_(2):div_(2); T.near_table(x:totable(), {0, -2, 5})
  x:clamp_(-1, 1); T.near_table(x:totable(), {0, -1, 1})
  x:abs_(); T.near_table(x:totable(), {0, 1, 1})
  x:exp_(); T.near_table(x:totable(), {1, math.exp(1), math.exp(1)}, 1e-6)
  x:masked_fill_(mi.tensor{false, true, false}, 9); T.near_table(x:totable(), {1, 9, math.exp(1)}, 1e-6)
  x:zero_(); T.near_table(x:totable(), {0, 0, 0})
  x:copy_(mi.tensor{7}); T.near_table(x:totable(), {7, 7, 7}, 0, "copy_ broadcasts")
  x:pow_(2); T.near_table(x:totable(), {49, 49, 49})
  T.raises(function() mi.zeros(3):add_(mi.zeros(2, 3)) end, "add")
end)

T.test("conversions: float/long/bool/to; same dtype returns the same tensor", function()
  local x = mi.tensor{-1.7, 0, 2.5}
  T.truthy(rawequal(x:float(), x))
  T.eq(x:long():dtype(), "int64")
  T.eq(x:long():totable()[1], -1, "truncates toward zero")
  T.eq(x:bool():totable()[2], false)
  T.eq(x:to("int64"):dtype(), "int64")
  T.eq(mi.tensor({1, 2}, {dtype = mi.int64}):dtype(), "int64")
  T.raises(function() x:to("float16") end, "to: unknown dtype 'float16'")
  T.truthy(rawequal(x:to("cpu"), x), "to('cpu') is the tensor itself")
end)

T.test("creation errors name the function and the problem", function()
  T.raises(function() mi.tensor{{1, 2}, {3}} end, "tensor: t[2] has 1 items, expected 2 (ragged nested lists)")
  T.raises(function() mi.tensor{{1, 2}, 3} end, "tensor: t[2] is a number, expected a list of 2")
  T.raises(function() mi.tensor{1, "x"} end, "tensor: t[2] is a string, expected a number")
  T.raises(function() mi.tensor({1.5}, "int64") end, "tensor: t[1] = 1.5 is not an integer (dtype int64)")
  T.raises(function() mi.tensor("abc") end, "tensor: expected nested lists")
  T.raises(function() mi.zeros(2, -3) end, "zeros: size 1 is -3 (sizes must be >= 0)")
  T.raises(function() mi.zeros(2.5) end, "zeros: a size must be an integer, got 2.5")
  T.raises(function() mi.zeros(1, 1, 1, 1, 1, 1, 1, 1, 1) end, "zeros: more than 8 dims")
  T.raises(function() mi.ones(2, "float64") end, "ones: unknown dtype 'float64'")
  T.raises(function() mi.rand(2, {generator = 5}) end, "rand: generator must be a mi.Generator")
  T.raises(function() mi.arange() end, "arange: expected (end) or (start, end [, step])")
  T.raises(function() mi.full({2}) end, "full: expected a shape and a fill value")
  local e = mi.tensor{}
  T.eq(shape_str(e:shape()), "[0]")
end)

T.test("op errors carry the core's message with the shapes", function()
  local a, b = mi.zeros(2, 3), mi.zeros(4)
  local err = T.raises(function() return a + b end, "[2,3]")
  T.truthy(err:find("[4]", 1, true), err)
  T.raises(function() return a:matmul(mi.zeros(4, 5)) end, "matmul: [2,3] @ [4,5]")
  T.raises(function() return a:view(4, 2) end, "view")
  T.raises(function() return a:narrow(1, 2, 5) end, "narrow")
  T.raises(function() return a:select(0, 2) end, "select")
  T.raises(function() return a:permute(0) end, "permute: 1 dims given for a tensor of shape [2,3]")
  T.raises(function() return a:sum(2) end, "sum: dim 2 out of range for a tensor of shape [2,3]")
  T.raises(function() return a:sum({0, 5}) end, "sum: dim 5 out of range")
  T.raises(function() return mi.cat({a, b}, 0) end, "cat")
  T.raises(function() return mi.cat({a, 5}, 0) end, "cat: item 1 of the list is a number, expected a tensor")
  T.raises(function() return mi.cat({}, 0) end, "cat: expected a non-empty list of tensors")
  T.raises(function() return mi.einsum("i j, j k -> i k", a, a) end, "einsum")
  T.raises(function() return a:topk(4, 1) end, "topk")
  T.raises(function() return a:gather(1, mi.zeros(2, 2)) end, "gather")
  T.raises(function() return a + "x" end, "add: expected a tensor or a number, got string")
  T.raises(function() return a:split({1, 1}, 1) end, "split: sizes do not add up to 3 (dim 1 of [2,3])")
  T.raises(function() return a:norm(3) end, "norm: p = 3")
  T.raises(function() return a:cumsum() end, "cumsum: dim is required")
  T.raises(function() return a:t():t():t():view(6) end, "view")
  T.raises(function() return mi.zeros(2, 3, 4):t() end, "t: expects a tensor of at most 2 dims")
  T.raises(function() return a:narrow("x", 0, 1) end, "narrow: dim must be an integer, got string")
  T.raises(function() return mi.tensor{1}.foo() end, "attempt to call a nil value")
end)

T.test("indexing errors", function()
  local x = mi.arange(24):view(2, 3, 4)
  T.raises(function() return x[2] end, "select")
  T.raises(function() return x[{0, 0, 0, 0}] end, "index: 4 items for a tensor of shape [2,3,4]")
  T.raises(function() return x[{"..", 0}] end, "index: unknown item '..'")
  T.raises(function() return x[{"...", "..."}] end, "only one \"...\"")
  T.raises(function() return x[{{0, 2, 0}}] end, "range step must be positive")
  T.raises(function() return x[{{0, 1, 2, 3}}] end, "a range has at most 3 items")
  T.raises(function() return x[{true}] end, "index: item 0 is a boolean")
  T.raises(function() return x[mi.tensor{0.5}] end, "index: an index tensor must be int64")
  T.raises(function() return x[mi.tensor({5}, "int64")] end, "index_select")
  T.raises(function() return x[mi.tensor{true, false}] end, "masked_select")
end)

T.test("assignment errors", function()
  local x = mi.zeros(2, 3)
  T.raises(function() x.foo = 1 end, "cannot set field 'foo' of a tensor")
  T.raises(function() x[0] = "s" end, "index assignment: value must be a number or a tensor, got string")
  T.raises(function() x[0] = mi.zeros(4) end, "copy_")
  T.raises(function() x[x:gt(0):logical_not()] = mi.zeros(5) end, "mask has 6 true elements, value [5] has 5")
  T.raises(function() x[{mi.tensor({0}, "int64"), mi.tensor({0}, "int64")}] = 1 end, "only one index tensor")
  T.near_table(x:totable(), {{0, 0, 0}, {0, 0, 0}}, 0, "failed assignments leave x alone")
end)

T.test("__eq is identity; comparison methods give bool tensors", function()
  local a = mi.tensor{1, 2}
  local b = mi.tensor{1, 2}
  T.truthy(a == a)
  T.truthy(a ~= b, "two tensors with equal values are different objects")
  T.eq(a:eq(b):dtype(), "bool")
  T.truthy(a:eq(b):all())
  T.truthy(a:equal(b))
  T.truthy(not a:equal(mi.tensor{1, 2, 3}))
end)

T.test("is_tensor, tostring, json encoding of tensors", function()
  T.truthy(mi.is_tensor(mi.zeros(1)))
  T.truthy(not mi.is_tensor({}))
  T.truthy(not mi.is_tensor(io.stdout))
  T.eq(tostring(mi.tensor{{1, 2}, {3, 4}}), "tensor([[1., 2.],\n        [3., 4.]], shape=[2,2])")
  T.eq(tostring(mi.tensor({1, 2}, "int64")), "tensor([1, 2], dtype=torch.int64, shape=[2])")
  T.eq(mi.json.encode({x = mi.tensor({{1, 2}}, "int64"), y = mi.tensor(0.5)}), '{"x":[[1,2]],"y":0.5}')
end)

T.test("softmax and log_softmax over rows in pieces on 2 threads: the same bits as 1 thread, rows sum to 1", function()
  local x = mi.randn(300, 1000, {seed = 4}) * 5
  local saved = mi.get_num_threads()
  mi.set_num_threads(1)
  local s1, l1 = x:softmax(-1), x:log_softmax(-1)
  mi.set_num_threads(2)
  local s2, l2 = x:softmax(-1), x:log_softmax(-1)
  mi.set_num_threads(saved)
  T.truthy(s1:equal(s2) and l1:equal(l2), "thread count changed the result")
  T.truthy((s2:sum(-1) - 1):abs():max():item() < 1e-5, "rows sum to 1")
  T.truthy((l2:exp() - s2):abs():max():item() < 1e-6, "exp(log_softmax) = softmax")
end)

T.test("data_ptr: views point into their base (offset x element size), copies elsewhere, empty 0", function()
  local x = mi.zeros(4, 4)
  T.eq(x[1]:data_ptr() - x:data_ptr(), 4 * 4, "row 1 of a float32 [4,4] starts 4 floats in")
  T.eq(x[{{}, 2}]:data_ptr() - x:data_ptr(), 2 * 4)
  T.eq(x:t():data_ptr(), x:data_ptr(), "a transpose starts at the same element")
  local l = mi.arange(6)
  T.eq(l[{{2, 5}}]:data_ptr() - l:data_ptr(), 2 * 8, "int64: 8 bytes an element")
  T.truthy(x:clone():data_ptr() ~= x:data_ptr(), "a clone has its own memory")
  T.eq(mi.zeros(0):data_ptr(), 0)
  T.raises(function() x:data_ptr(1) end, "data_ptr: takes no arguments")
end)

T.test("__close releases the storage; a closed tensor raises a clear error", function()
  -- collect the garbage of earlier tests first: a GC step inside mi.zeros would free it and
  -- move the byte count
  collectgarbage("collect")
  local before = mi.live_tensor_bytes()
  local saved
  do
    local x <close> = mi.zeros(1000)
    T.eq(mi.live_tensor_bytes() - before, 4000, "a [1000] float32 tensor holds 4000 bytes")
    saved = x
  end
  T.eq(mi.live_tensor_bytes() - before, 0, "released at the end of the block")
  T.raises(function() return saved:sum() end, "tensor has been closed")
  T.eq(tostring(saved), "tensor(<closed>)")
end)

T.test("Generator: same seed same numbers, independent of the default stream", function()
  local g1, g2 = mi.Generator(5), mi.Generator(5)
  mi.manual_seed(1)
  local a = mi.randn(8, g1)
  local d1 = mi.rand(3)
  local b = mi.randn({8}, {generator = g2})
  T.truthy(a:equal(b), "same seed")
  mi.manual_seed(1)
  T.truthy(mi.rand(3):equal(d1), "the default stream was not used by the generators")
  g1:manual_seed(5)
  T.truthy(mi.randn(8, g1):equal(a), "manual_seed restarts the stream")
  T.eq(g1:initial_seed(), 5)
  local r = mi.randint(3, 7, 1000, mi.Generator(9))
  T.eq(r:dtype(), "int64")
  T.truthy(r:ge(3):all() and r:lt(7):all(), "randint in [3, 7)")
  T.truthy(r:eq(3):any() and r:eq(6):any(), "both ends reached in 1000 draws")
  local u = mi.rand(10000, mi.Generator(3))
  T.truthy(u:ge(0):all() and u:lt(1):all(), "rand in [0, 1)")
  T.near(u:mean():item(), 0.5, 0.02, "mean of 10000 uniforms")
  local n = mi.randn(10000, mi.Generator(4))
  T.near(n:mean():item(), 0, 0.05, "mean of 10000 normals")
  T.near(n:std():item(), 1, 0.05, "std of 10000 normals")
end)

T.test("svd reconstructs its input; eigvals of a rotation are +-i", function()
  local a = mi.tensor{{3, 1, 2}, {0, -1, 4}}
  local u, sv, vh = mi.svd(a)
  T.eq(shape_str(u:shape()), "[2,2]"); T.eq(shape_str(sv:shape()), "[2]"); T.eq(shape_str(vh:shape()), "[2,3]")
  -- U diag(S) Vh == A, and the rows of Vh are orthonormal
  T.near_table((u * sv:unsqueeze(0)):matmul(vh):totable(), a:totable(), 1e-5)
  T.near_table(vh:matmul(vh.T):totable(), {{1, 0}, {0, 1}}, 1e-5)
  -- the singular values squared are the eigenvalues of A A^T = [[14, 7], [7, 17]]: (31 +- sqrt(205)) / 2
  local s2 = (sv * sv):totable()
  T.near(s2[1], (31 + math.sqrt(205)) / 2, 1e-4); T.near(s2[2], (31 - math.sqrt(205)) / 2, 1e-4)
  local re, im = mi.eigvals(mi.tensor{{0, -1}, {1, 0}})
  T.near_table(re:totable(), {0, 0}, 1e-6)
  T.near_table((im:sort()):totable(), {-1, 1}, 1e-6)
  T.raises(function() return mi.eigvals(mi.zeros(2, 3)) end, "eigvals")
end)

T.test("einops-style patterns: errors name the pattern and the shapes", function()
  local x = mi.zeros(2, 3, 4)
  T.raises(function() mi.rearrange(x, "b h -> h b") end, "rearrange: 'b h -> h b' names 2 dims, the tensor has shape [2,3,4]")
  T.raises(function() mi.rearrange(x, "b h q -> b h") end, "rearrange: axis 'q' is only on the left")
  T.raises(function() mi.rearrange(x, "b h q -> b h q n") end, "rearrange: axis 'n' is only on the right")
  T.raises(function() mi.rearrange(x, "b h (q p) -> b h q p", {p = 3}) end, "dim 2 of size 4 cannot be split by 3")
  T.raises(function() mi.rearrange(x, "b h (q p) -> b h q p") end, "cannot infer both 'q' and 'p'")
  T.raises(function() mi.rearrange(x, "b h q -> b h q", {q = 5}) end, "dim 2 has size 4, the pattern 'b h q -> b h q' says 5")
  T.raises(function() mi.rearrange(x, "b b q -> b q") end, "axis 'b' appears twice")
  T.raises(function() mi.rearrange(x, "b h q") end, "pattern needs '->'")
  T.raises(function() mi.rearrange(x, "b (h q -> b h q") end, "unbalanced '('")
  T.raises(function() mi.repeat_axes(x, "b h q -> n b h q") end, "the size of new axis 'n' is not given")
  T.raises(function() mi.reduce(x, "b h q -> b", "median") end, "reduce: the reduction must be sum, mean, max, min, prod, std, var, any, all or a function f(x, dims), got median")
  T.truthy(x:shares_storage(mi.rearrange(x, "b h q -> q h b")), "a pure permute is a view")
end)

T.test("assert_close passes within tolerance and reports the worst element otherwise", function()
  mi.assert_close(mi.tensor{1, 2, 3}, {1, 2 + 1e-6, 3}, 1e-5)
  T.raises(function() mi.assert_close(mi.tensor{1, 2, 3}, {1, 2.5, 3.1}) end,
           "assert_close: 2 of 3 elements differ; largest difference 0.5 at flat index 1 (2 vs 2.5)")
  T.raises(function() mi.assert_close(mi.zeros(2), mi.zeros(3)) end, "assert_close: shapes differ: [2] vs [3]")
  T.raises(function() mi.assert_close(mi.tensor{0/0}, {0/0}) end, "1 of 1 elements differ")
end)

T.test("misuse never crashes: every method with odd arguments raises or returns", function()
  -- meant for `make asan`, where a bad read or an overflow aborts the run
  local names = {}
  for k in pairs(mi.Tensor) do names[#names + 1] = k end
  table.sort(names)
  local odd = {{}, {"x"}, {2^62}, {-2^62}, {{}}, {{1e12, 2}}, {0, 0, 0}, {true}, {0.5},
               {mi.zeros(0)}, {mi.tensor({-9}, "int64")}, {0, mi.tensor({5}, "int64")},
               {-1, 2^40}, {0, -2^40, 2}, {mi.zeros(3, 3)}, {io.stdout}}
  local makers = {function() return mi.arange(12):view(3, 4):float() end,
                  function() return mi.tensor(3.5) end,
                  function() return mi.zeros(0, 3) end,
                  function() return mi.ones(2, 3):gt(0) end,
                  function() return mi.arange(24):view(2, 3, 4):transpose(0, 2) end}
  local calls, raised = 0, 0
  for _, mk in ipairs(makers) do
    for _, name in ipairs(names) do
      for _, a in ipairs(odd) do
        local ok = pcall(mi.Tensor[name], mk(), table.unpack(a, 1, 3))
        calls = calls + 1
        if not ok then raised = raised + 1 end
      end
    end
  end
  T.truthy(raised > calls // 4, ("%d of %d odd calls raised"):format(raised, calls))
  T.eq(mi.zeros(3, 4):diagonal(2^62):numel(), 0, "an offset past the matrix gives an empty diagonal")
  T.eq(mi.zeros(3, 4):diagonal(-2^62):numel(), 0)
end)

T.test("module functions mirror methods; *_like", function()
  local x = mi.tensor{{1, -2}, {3, -4}}
  T.truthy(mi.abs(x):equal(x:abs()))
  T.near(mi.sum(x):item(), -2)
  T.near_table(mi.softmax(mi.tensor{0, 0}, 0):totable(), {0.5, 0.5})
  T.eq(shape_str(mi.zeros_like(x):shape()), "[2,2]")
  T.eq(mi.ones_like(mi.zeros(2, "int64")):dtype(), "int64")
  T.near_table(mi.full_like(x, 3):totable(), {{3, 3}, {3, 3}})
end)

-- Under the sanitizers (make asan) a 4 MB allocation costs ~20 ms, so the loops are shorter
-- there; even 500 x 4 MB would peak near 2 GB without the accounting.
local SANITIZED = (os.getenv("MIWB_BUILD") or ""):find("asan") ~= nil
local N_BIG = SANITIZED and 500 or 10000
if SANITIZED then print("# sanitizer build: GC accounting loops shortened to " .. N_BIG .. " tensors") end

T.test("GC accounting: " .. N_BIG .. " x 4 MB tensors in a loop keep live tensor memory bounded", function()
  local base = mi.live_tensor_bytes()
  local peak = 0
  for _ = 1, N_BIG do
    local t = mi.zeros(1024 * 1024) -- 4 MB, dropped at once
    local live = mi.live_tensor_bytes() - base
    if live > peak then peak = live end
    t = nil
  end
  -- without accounting the collector sees only ~100-byte userdata and would keep thousands
  -- (tens of GB) alive; with it a few cycles' worth at most
  T.truthy(peak < 1024 * 1024 * 1024, ("peak live tensor memory %.0f MB"):format(peak / 2^20))
end)

if SANITIZED then
  print("SKIP - GC accounting RSS bound: the sanitizer's quarantine keeps freed memory resident")
else T.test("GC accounting: touched tensors keep the resident set bounded", function()
  local function rss_kb()
    local f = io.open("/proc/self/status")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return tonumber(s:match("VmRSS:%s*(%d+)"))
  end
  local before = rss_kb()
  T.truthy(before, "VmRSS in /proc/self/status")
  local peak = before
  for i = 1, 400 do
    local t = mi.full(1024 * 1024, i) -- 4 MB written, so its pages are resident
    if i % 20 == 0 then peak = math.max(peak, rss_kb()) end
  end
  -- 400 x 4 MB = 1.6 GB allocated in total
  T.truthy(peak - before < 600 * 1024, ("RSS grew by %d MB"):format((peak - before) // 1024))
end) end

T.done()
