-- fuzz-api seed 2, call 430: tensor:nonzero(huge expanded) counted each of the 2^36 copies of one
-- element (minutes: a hang); an expanded dim is now counted once, and the huge result is a clean
-- out-of-memory error; an all-zero one is empty at once.
local ok, err = pcall(function() return mi.ones(1):expand(2^36):nonzero() end)
assert(not ok and tostring(err):find("nonzero", 1, true), tostring(err))
assert(mi.zeros(1):expand(2^36):nonzero():shape()[1] == 0)
assert(mi.tensor{{0, 1}}:expand(3, 2):nonzero():equal(mi.tensor{{0, 1}, {1, 1}, {2, 1}}:long()))
assert(mi.tensor{{1, 0, 2}}:expand(2^20, 3):nonzero():size(0) == 2^21)
