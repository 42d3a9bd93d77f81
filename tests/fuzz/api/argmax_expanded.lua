-- fuzz-api seed 2, call 692: tensor:argmax(huge expanded, 0) compared each of the 2^36 copies of
-- one element (minutes: a hang); argmax / argmin / max / min along an expanded dim look at it once.
local x = mi.ones(1):expand(2^36)
assert(x:argmax(0):item() == 0 and x:argmin(0):item() == 0)
local v, i = mi.tensor{3, 1}:unsqueeze(0):expand(2^30, 2):max(0)
assert(v:equal(mi.tensor{3, 1}) and i:equal(mi.tensor{0, 0}:long()))
v, i = mi.tensor{{5}, {2}}:expand(2, 2^36):min(1)
assert(v:equal(mi.tensor{5, 2}) and i:equal(mi.tensor{0, 0}:long()))
