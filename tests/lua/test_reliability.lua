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

-- in-place ops reading memory they write: results worked out by hand
T.test("overlap: every in-place binary op reads an overlapping operand from a copy", function()
  local function m() return mi.tensor{{1, 2}, {3, 4}} end
  local x = m(); x:add_(x:t())
  T.near_table(x:totable(), {{2, 5}, {5, 8}})
  x = m(); x:mul_(x:t())
  T.near_table(x:totable(), {{1, 6}, {6, 16}})
  x = m(); x:sub_(x:t())
  T.near_table(x:totable(), {{0, -1}, {1, 0}})
  x = m(); x:div_(x:t())
  T.near_table(x:totable(), {{1, 2 / 3}, {1.5, 1}}, 1e-6)
  x = m(); x:add_(x[0])                  -- row 0 broadcast over both rows
  T.near_table(x:totable(), {{2, 4}, {4, 6}})
  local v = mi.arange(5):float(); v[{{1}}]:add_(v[{{0, 4}}])  -- shifted window
  T.near_table(v:totable(), {0, 1, 3, 5, 7})
  x = m(); x:add_(x)                     -- the same view: no copy needed, still right
  T.near_table(x:totable(), {{2, 4}, {6, 8}})
  local i = mi.tensor{{1, 2}, {3, 4}}:long(); i:mul_(i:t())
  T.near_table(i:totable(), {{1, 6}, {6, 16}})
end)

T.test("overlap: assignment through views and copy_ read the source first", function()
  local x = mi.tensor{{1, 2}, {3, 4}}
  x[{{}, {}}] = x:t()
  T.near_table(x:totable(), {{1, 3}, {2, 4}})
  x = mi.arange(5):float()
  x[{{1}}] = x[{{0, 4}}]
  T.near_table(x:totable(), {0, 0, 1, 2, 3})
  x = mi.tensor{{1, 2}, {3, 4}}
  x[mi.tensor{1, 0}:long()] = x          -- index rows swapped from the old values
  T.near_table(x:totable(), {{3, 4}, {1, 2}})
  x = mi.tensor{{1, 2}, {3, 4}}; x:copy_(x:t())
  T.near_table(x:totable(), {{1, 3}, {2, 4}})
  local b = mi.tensor{{true, false}, {true, true}}
  b:masked_fill_(b:t(), false)            -- mask = b:t() before the fill: {{1,1},{0,1}}
  T.eq(b:long():sum():item(), 0 + 0 + 1 + 0)
end)

T.done()
