-- fuzz-api seed 1, call 845: tensor:fill_(huge expanded, 2^31, 0) wrote the one shared element
-- 2^36 times (a hang); in-place writes to an expanded view now raise, as in torch.
local x = mi.ones(1):expand(2^36)
local ok, err = pcall(x.fill_, x, 2^31, 0)
assert(not ok and err:find("expanded view", 1, true), err)
ok, err = pcall(x.copy_, x, mi.zeros(1))
assert(not ok and err:find("expanded view", 1, true), err)
