-- test_reliability.lua: regression tests for issue 20 (absurd sizes, aliasing, hangs, NUL bytes,
-- files, error names). Each case failed (crashed, hung or was silently wrong) before its fix.
-- Expected values are closed forms worked out by hand.
local T = require("testlib")
local mi = require("miwb")

T.test("sizes: an empty shape whose strides would overflow int64 fails cleanly", function()
  -- [2, 0, 2^62]: strides 2^62, 2^62, 1 (a size-0 dim counts as 1): an empty tensor (the
  -- stride walk used to go on to 2^63, undefined behaviour under UBSan)
  local e = mi.zeros(2, 0, 2^62)
  T.eq(e:numel(), 0); T.eq(e:size(2), 2^62)
  -- [0, 4, 2^62]: the first stride would be 2^64
  T.raises(function() mi.zeros(0, 4, 2^62) end, "strides overflow")
  T.raises(function() mi.zeros(0):view(0, 4, 2^62) end, "strides overflow")
  T.raises(function() mi.zeros(0):reshape(0, 4, 2^62) end, "strides overflow")
  T.raises(function() mi.zeros(2^40, 2^40) end, "too many elements")
  T.raises(function() mi.ones(1):expand(2^40, 2^40) end, "too many elements")
  T.raises(function() mi.zeros(2^62, 4):view(-1) end, "too many elements")
end)

T.test("sizes: cat and tile sums that overflow are refused", function()
  local big = mi.ones(1):expand(2^39)
  T.raises(function() mi.cat({big, big, big}) end)
  T.raises(function() mi.ones(2):tile(2^62) end)
end)

T.test("sizes: a huge range step gives one item, no overflow", function()
  local x = mi.arange(10)
  local v = x[{{1, 10, math.maxinteger}}]
  T.eq(v:numel(), 1); T.eq(v:item(), 1)
  T.eq(x[{{2, 9, 3}}]:numel(), 3)                       -- 2, 5, 8
  T.eq(x[{{2, 9, 3}}][2]:item(), 8)
  T.eq(x[{{5, 5, 2^62}}]:numel(), 0)
end)

T.done()
