-- bench_sweep.lua: what the sweep runner (lua/miwb/sweep.lua) adds, in wall-clock time of whole
-- `miwb sweep` processes (bench/sweep_noop.lua, whose items do almost nothing):
--   per item        (time of a worker with 400 items - time with 0 items) / 400: reading the
--                   item's state, writing its tensors and record atomically; bound 50 ms
--   worker start    a worker with one item whose setup loads the bundled model (mapped); bound 1 s
--   plain start     `miwb -e ''`, for reference
-- Each is the median of 3 runs. Run by `make bench` (bench/run.sh) as build/miwb bench/bench_sweep.lua.
local mi = require("miwb")

local MIWB = arg[-1] or "build/miwb"
local tmp = os.tmpname()
os.remove(tmp)
assert(mi.sys.mkdir(tmp))

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local runs = 0
local function timed(cmd)
  local t0 = mi.monotonic()
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  local dt = mi.monotonic() - t0
  if not ok then error("bench_sweep: failed: " .. cmd, 0) end
  return dt
end

local function median3(fn)
  local t = {fn(), fn(), fn()}
  table.sort(t)
  return t[2]
end

local function worker(args)
  runs = runs + 1
  -- shard 0 of 2: a worker only, no merge
  return timed(("%s sweep bench/sweep_noop.lua --shard 0/2 --out %s --args %s"):format(q(MIWB), q(tmp .. "/" .. runs), args))
end

local n = 400
local t0 = median3(function() return worker("--n 0") end)
local tn = median3(function() return worker("--n " .. 2 * n) end) -- shard 0 of 2 gets n items
local per_item = (tn - t0) / n
local start = median3(function() return worker("--n 2 --model true") end)
local plain = median3(function() return timed(q(MIWB) .. " -e ''") end)

print(("sweep runner: %.2f ms per item (bound 50 ms: %.3f of it; %d items in %.2f s, empty worker %.3f s)"):format(
  per_item * 1e3, per_item / 0.05, n, tn, t0))
print(("sweep runner: worker start with the bundled model %.3f s (bound 1 s: %.2f of it); plain miwb start %.3f s"):format(
  start, start / 1.0, plain))
os.execute("rm -rf " .. q(tmp))
