-- test_metrics.lua: mi.metrics values against direct computations and their gradients against
-- central finite differences (in float32 on small logits, so the tolerance is loose).
local T = require("testlib")
local mi = require("miwb")

local g = mi.Generator(3)
local logits = mi.randn({3, 4, 7}, g) * 2

local function fd(m, x, idx)
  local h = 1e-2
  local a, b = x:clone(), x:clone()
  a[idx] = x[idx]:item() + h
  b[idx] = x[idx]:item() - h
  return (m:value(a) - m:value(b)) / (2 * h)
end

T.test("logit_diff: value and gradient", function()
  local m = mi.metrics.logit_diff(mi.tensor({1, 2, 3}, "int64"), {4, 5, 6}, -1)
  local want = 0
  for b = 0, 2 do want = want + logits[{b, 3, b + 1}]:item() - logits[{b, 3, b + 4}]:item() end
  local v, gr = m(logits)
  T.near(v, want / 3, 1e-5)
  T.eq(table.concat(gr:shape(), ","), "3,4,7")
  for _, idx in ipairs({{0, 3, 1}, {2, 3, 6}, {1, 2, 2}, {1, 3, 0}}) do
    T.near(gr[idx]:item(), fd(m, logits, idx), 2e-3, "d/dlogits" .. table.concat(idx, ","))
  end
  T.eq(m.positions[1], -1)
end)

T.test("logprob: value and gradient at a given position", function()
  local m = mi.metrics.logprob(2, 1)
  local lp = logits:select(1, 1):log_softmax(-1)
  T.near(m:value(logits), lp[{{}, 2}]:mean():item(), 1e-5)
  local _, gr = m(logits)
  for _, idx in ipairs({{0, 1, 2}, {2, 1, 5}, {1, 1, 0}, {1, 0, 2}}) do
    T.near(gr[idx]:item(), fd(m, logits, idx), 2e-3, "d/dlogits" .. table.concat(idx, ","))
  end
end)

T.test("metrics: bad input names the metric and the shapes", function()
  T.raises(function() mi.metrics.logit_diff({1, 2}, 3)(logits) end, "logit_diff: 2 tokens for a batch of 3 (logits [3,4,7])")
  T.raises(function() mi.metrics.logprob(9)(logits) end, "outside the vocabulary of 7")
  T.raises(function() mi.metrics.logprob(1, 4)(logits) end, "pos 4 is outside the 4 positions")
  T.raises(function() mi.metrics.logprob(1)(logits[0]) end, "logits must be a tensor [batch, pos, d_vocab], got [4,7]")
  T.raises(function() mi.metrics.logit_diff("a", 1) end, "logit_diff: answer_tokens must be")
end)

T.test("custom: a Lua function declared to read some positions", function()
  local m = mi.metrics.custom(function(l) return l[{{}, -1, 0}]:sum():item() end, {-1})
  T.near(m:value(logits), logits[{{}, 3, 0}]:sum():item(), 1e-5)
  T.raises(function() m:grad(logits) end, "made without a grad_fn")
  T.raises(function() mi.metrics.custom(function() end, {}) end, "positions must be a non-empty list")
end)

T.done()
