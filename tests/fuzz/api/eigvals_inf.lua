-- fuzz-api seed 22 (normal build: "double free or corruption" at call 1747; ASan: a bad free in
-- mw_eigvals): an earlier call had made the pool's randn(3,3) all -inf, and LAPACK's sgeev on a
-- matrix of inf wrote past its outputs (LAPACK is not instrumented, so ASan saw only the later
-- free). svd and eigvals now refuse inf and NaN, as torch.linalg does; finite input still works.
local inf = 1 / 0
for _ = 1, 20 do
  for _, x in ipairs{mi.full({3, 3}, -inf), mi.full({3, 3}, inf), mi.tensor{{1, inf}, {0, 1}},
                     mi.tensor{{1, 0 / 0}, {0, 1}}, mi.full({2, 3, 3}, inf)} do
    for _, f in ipairs{mi.eigvals, mi.svd} do
      local ok, e = pcall(f, x)
      assert(not ok and tostring(e):find("the input holds inf or NaN", 1, true), tostring(e))
    end
  end
end
-- the eigenvalues of [[2, 1], [1, 2]] are 3 and 1; its singular values too
local re, im = mi.eigvals(mi.tensor{{2, 1}, {1, 2}})
local v = re:sort():totable()
assert(math.abs(v[1] - 1) < 1e-5 and math.abs(v[2] - 3) < 1e-5 and im:abs():max():item() == 0)
local _, s = mi.svd(mi.tensor{{2, 1}, {1, 2}})
assert(math.abs(s[0]:item() - 3) < 1e-5 and math.abs(s[1]:item() - 1) < 1e-5)
