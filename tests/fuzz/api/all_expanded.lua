-- fuzz-api seed 2, call 997: mi.all(huge expanded) looked at each of the 2^36 copies of one
-- element (a hang); expanded dims are now looked at once.
local x = mi.ones(1):expand(2^36)
assert(x:all() == true and x:any() == true)
assert(mi.zeros(1):expand(2^36):any() == false)
assert(mi.tensor{1, 0}:unsqueeze(0):expand(2^30, 2):all() == false)
assert(mi.zeros(0):expand(2^36, 0):all() == true)
