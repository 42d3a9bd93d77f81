-- Tests of mi.FactoredMatrix (lua/miwb/factored.lua) against dense float64 numpy computations
-- (tests/fixtures/factored.json, written by tests/fixtures/gen_factored.py) and closed forms.
local T = require("testlib")
local mi = require("miwb")

if not (mi.FactoredMatrix and mi.tensor) then
  print("SKIP - factored matrices: this build has no tensor binding")
  T.done()
end

local FM = mi.FactoredMatrix

local function load_fixture()
  local fh = assert(io.open("tests/fixtures/factored.json", "r"), "tests/fixtures/factored.json missing")
  local s = fh:read("a")
  fh:close()
  return mi.json.decode(s)
end
local fx = load_fixture()

local function t(x) return mi.tensor(x) end
local function idx(list) return mi.tensor(list):long() end

-- float32 results against float64 values: |a - b| <= tol * max(1, |b|), elementwise
local function close(got, want, tol, msg, path)
  tol = tol or 1e-4
  path = path or ""
  if mi.is_tensor(got) then got = got:totable() end
  if type(want) == "table" then
    T.eq(type(got), "table", (msg or "close") .. ": shape at " .. path)
    T.eq(#got, #want, (msg or "close") .. ": length at " .. path)
    for i = 1, #want do close(got[i], want[i], tol, msg, path .. "[" .. i .. "]") end
  else
    T.truthy(type(got) == "number" and math.abs(got - want) <= tol * math.max(1, math.abs(want)),
             (msg or "close") .. " at " .. path .. ": " .. tostring(got) .. " vs " .. tostring(want))
  end
end

local function shape_eq(got, want, msg)
  T.eq(#got, #want, (msg or "shape") .. " rank")
  for i = 1, #want do T.eq(got[i], want[i], (msg or "shape") .. " dim " .. i) end
end

-- sorted (re, im) pairs of eigenvalues, as the fixture sorts them
local function eig_pairs(re, im)
  re, im = re:totable(), im:totable()
  local p = {}
  for i = 1, #re do p[i] = {re[i], im[i]} end
  table.sort(p, function(a, b)
    if math.abs(a[1] - b[1]) > 1e-4 then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local r, i2 = {}, {}
  for k, v in ipairs(p) do r[k], i2[k] = v[1], v[2] end
  return {r, i2}
end

local function thin() local c = fx.thin return FM(t(c.A), t(c.B)), c end

T.test("A @ B, shape, transpose and the dims of a thin factored matrix", function()
  local fm, c = thin()
  shape_eq(fm.shape, c.shape)
  shape_eq(fm:shape(), c.shape, "callable shape")
  T.eq(fm.ldim, 6); T.eq(fm.mdim, 3); T.eq(fm.rdim, 5)
  T.eq(fm:ndim(), 2); T.eq(fm:size(-1), 5)
  close(fm.AB, c.AB)
  close(fm.T.AB, c.T)
  shape_eq(fm.T.shape, {5, 6})
  T.eq(tostring(fm), "FactoredMatrix: Shape([6,5]), Hidden Dim(3)")
  local A, B = fm:pair()
  close(A, c.A, 0); close(B, c.B, 0)
end)

T.test("norm and singular values from the factors match dense numpy", function()
  for _, name in ipairs{"thin", "wide", "square"} do
    local c = fx[name]
    local fm = FM(t(c.A), t(c.B))
    close(fm:norm(), c.norm, 1e-4, name .. " norm")
    close(fm.S, c.S, 1e-4, name .. " S")
  end
end)

T.test("svd: U diag(S) Vh^T = M with orthonormal U and Vh columns (TransformerLens's Vh)", function()
  local fm, c = thin()
  local U, S, Vh = fm:svd()
  shape_eq(U:shape(), {6, 3}); shape_eq(S:shape(), {3}); shape_eq(Vh:shape(), {5, 3})
  close(mi.matmul(U * S:unsqueeze(-2), Vh:transpose(-2, -1)), c.AB, 1e-4, "reconstruction")
  local I = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}
  close(mi.matmul(U:transpose(0, 1), U), I, 1e-5, "U^T U")
  close(mi.matmul(Vh:transpose(0, 1), Vh), I, 1e-5, "Vh^T Vh")
  T.truthy(rawequal(fm.U, U), "svd cached")
  close(mi.matmul(fm:collapse_r(), Vh:transpose(0, 1)), c.AB, 1e-4, "collapse_r Vh^T = M")
  close(mi.matmul(U, fm:collapse_l()), c.AB, 1e-4, "U collapse_l = M")
  local ev = fm:make_even()
  close(ev.AB, c.AB, 1e-4, "make_even keeps M")
  -- the even factors share the singular values: A^T A = B B^T = diag(S)
  close(mi.matmul(ev.A:transpose(0, 1), ev.A), mi.matmul(ev.B, ev.B:transpose(0, 1)):totable(), 1e-4, "even")
end)

T.test("closed form: diag(2, 3) padded with zeros", function()
  -- M = A B = [[2,0,0],[0,3,0],[0,0,0]]: singular values 3, 2; norm sqrt(13); BA = diag(2, 3)
  local fm = FM(t{{2, 0}, {0, 3}, {0, 0}}, t{{1, 0, 0}, {0, 1, 0}})
  close(fm.AB, {{2, 0, 0}, {0, 3, 0}, {0, 0, 0}}, 0)
  close(fm.S, {3, 2}, 1e-6)
  close(fm:norm(), math.sqrt(13), 1e-6)
  close(fm.BA, {{2, 0}, {0, 3}}, 0)
  close(eig_pairs(fm:eigenvalues()), {{2, 3}, {0, 0}}, 1e-6)
  close(fm:get_corner(2), {{2, 0}, {0, 3}}, 0)
end)

T.test("BA and eigenvalues of a square factored matrix match numpy", function()
  local c = fx.square
  local fm = FM(t(c.A), t(c.B))
  close(fm.BA, c.BA)
  close(eig_pairs(fm:eigenvalues()), c.eig_BA, 1e-4, "eigenvalues")
  T.raises(function() return thin().BA end, "only for square matrices")
end)

T.test("products with tensors keep the cheaper inner dim (as TransformerLens)", function()
  local fm, c = thin()      -- ldim 6, mdim 3, rdim 5
  local p = fm * t(c.N)     -- rdim 5 > mdim 3: (A, B N), inner dim 3
  T.eq(p.mdim, 3); close(p.A, c.A, 0, "A kept")
  close(p.AB, c.AB_N)
  local q = t(c.L) * fm     -- ldim 6 > mdim 3: (L A, B), inner dim 3
  T.eq(q.mdim, 3); close(q.B, c.B, 0, "B kept")
  close(q.AB, c.L_AB)
  close(mi.matmul(fm, t(c.N)).AB, c.AB_N, 1e-4, "mi.matmul(fm, t)")
  close(mi.matmul(t(c.L), fm).AB, c.L_AB, 1e-4, "mi.matmul(t, fm)")
  close(t(c.L):matmul(fm).AB, c.L_AB, 1e-4, "t:matmul(fm)")
  close(fm:matmul(t(c.N)).AB, c.AB_N, 1e-4, "fm:matmul(t)")
  local w = fx.wide         -- ldim 4, mdim 6, rdim 3: collapse to AB first
  local fw = FM(t(w.A), t(w.B))
  local pw = fw * t(w.N)
  T.eq(pw.mdim, 3, "inner dim is rdim"); close(pw.AB, w.AB_N)
  local qw = t(w.L) * fw
  T.eq(qw.mdim, 4, "inner dim is ldim"); close(qw.AB, w.L_AB)
end)

T.test("products with vectors give vectors", function()
  local fm, c = thin()
  local r = fm * t(c.v)
  shape_eq(r:shape(), {6}); close(r, c.AB_v)
  local l = t(c.u) * fm
  shape_eq(l:shape(), {5}); close(l, c.u_AB)
end)

T.test("factored times factored, and the notebook's W_E @ QK @ OV.T @ W_E.T chain", function()
  local c = fx.compose
  local qk = FM(t(c.A1), t(c.B1))
  local ov = FM(t(c.A2), t(c.B2))
  local prod = qk * ov
  T.truthy(mi.FactoredMatrix and getmetatable(prod) == getmetatable(qk), "stays factored")
  close(prod.AB, c.M1_M2)
  local WE = t(c.WE)
  local chain = WE * qk * ov.T * WE:transpose(0, 1)
  shape_eq(chain.shape, {8, 8})
  close(chain.AB, c.chain)
  close(chain:norm(), c.chain_norm)
  close(mi.matmul(mi.matmul(mi.matmul(WE, qk), ov.T), WE:transpose(0, 1)).AB, c.chain, 1e-4, "via mi.matmul")
end)

T.test("scalars scale", function()
  local fm, c = thin()
  close((fm * 2.5):norm(), c.scaled_norm)
  close((2.5 * fm):norm(), c.scaled_norm)
  close((fm * t(2.5)):norm(), c.scaled_norm, 1e-4, "0-dim tensor")
  close((fm / 0.4):norm(), c.scaled_norm)
  close((-fm).AB, (fm.AB * -1):totable(), 0)
end)

T.test("indexing rows and columns by index tensors, numbers and ranges", function()
  local fm, c = thin()
  local rows, cols = idx(c.rows), idx(c.cols)
  local r = fm[{rows}]
  shape_eq(r.shape, {4, 5}); T.eq(r.mdim, 3, "still factored")
  close(r.AB, c.AB_rows)
  close(fm[{rows, cols}].AB, c.AB_rows_cols)
  local one = fm[{3}]
  shape_eq(one.shape, {1, 5}, "a number keeps the row dim")
  close(one.AB, c.AB_row3)
  close(fm[3].AB, c.AB_row3, 1e-4, "bare number")
  close(fm[{{1, 4}, {2, 5}}].AB, c.AB_range)
  close(fm[{-1}].AB, {c.AB[6]}, 1e-4, "negative row")
  close(fm[{{}, 1}].AB, (function() local o = {} for i = 1, 6 do o[i] = {c.AB[i][2]} end return o end)(),
        1e-4, "all rows, one column")
  T.raises(function() return fm[{6}] end, "out of range")
  T.raises(function() return fm[{0, 0, 0}] end, "3 items for shape [6,5]")
end)

T.test("leading batch dims: values, indexing, corner", function()
  local c = fx.batched
  local fm = FM(t(c.A), t(c.B))
  shape_eq(fm.shape, {2, 4, 4})
  close(fm.AB, c.AB)
  close(fm.T.AB, c.T)
  close(fm:norm(), c.norm)
  close(fm.S, c.S)
  local re, im = fm:eigenvalues()
  shape_eq(re:shape(), {2, 3})
  for b = 0, 1 do close(eig_pairs(re[b], im[b]), c.eig_BA[b + 1], 1e-4, "eig batch " .. b) end
  local f1 = fm[{1}]
  shape_eq(f1.shape, {4, 4}); close(f1.AB, c.AB_1)
  close(fm[{1, idx{3, 1}}].AB, c.AB_1_rows)
  close(fm[{1, idx{3, 1}, idx{0, 2}}].AB, c.AB_1_rows_cols)
  close(fm:get_corner(2), c.corner2)
  local u = fm:unsqueeze(0)
  shape_eq(u.shape, {1, 2, 4, 4}); close(u.AB, {c.AB})
  shape_eq(fm:unsqueeze(-1).shape, {2, 1, 4, 4}, "negative counts from the end of the leading dims")
end)

T.test("leading dims broadcast between the factors", function()
  local c = fx.broadcast
  local fm = FM(t(c.A), t(c.B))
  shape_eq(fm.shape, {2, 4, 5})
  shape_eq(fm.A:shape(), {2, 4, 3}, "A broadcast")
  close(fm.AB, c.AB)
  close(fm:norm(), c.norm)
  T.raises(function() FM(mi.zeros({3, 4, 2}), mi.zeros({2, 2, 5})) end, "leading dims do not broadcast")
end)

T.test("bad factors and products give errors naming the shapes", function()
  T.raises(function() FM(mi.zeros({4, 3}), mi.zeros({2, 5})) end, "inner dimensions differ: A [4,3], B [2,5]")
  T.raises(function() FM(mi.zeros({4}), mi.zeros({4, 2})) end, "A must have at least 2 dims")
  T.raises(function() FM({{1}}, mi.zeros({1, 1})) end, "A must be a tensor")
  local fm = thin()
  T.raises(function() return fm * mi.zeros({4, 2}) end, "[6,5] @ [4,2]: inner dimensions differ")
  T.raises(function() return mi.zeros({2, 5}) * fm end, "[2,5] @ [6,5]: inner dimensions differ")
  T.raises(function() return fm * mi.zeros({4}) end, "inner dimensions differ")
  T.raises(function() return fm:unsqueeze(1) end, "out of range")
  -- tensors multiply as before
  close(t{1, 2} * t{3, 4}, {3, 8}, 0)
end)

T.done()
