-- fuzz/api.lua: random misuse of the whole Lua API, for `make fuzz-api` (fuzz/api.sh runs it
-- under the AddressSanitizer + UndefinedBehaviorSanitizer build).
--
--   miwb fuzz/api.lua SEED CALLS LOG
--
-- Calls CALLS randomly chosen functions (every mi.* function, every tensor, model and cache
-- method, mi.json, mi.utils, mi.analysis, mi.metrics, mi.patching, mi.toy, mi.einsum and friends) with 0..4 arguments drawn from a pool of odd
-- values (empty, 0-dim, expanded, transposed tensors of every dtype, huge and negative numbers,
-- NaN, strings with NUL bytes, deep tables, functions...), each under pcall. A Lua error is the
-- expected answer to misuse; what the fuzzer looks for is a crash, a sanitizer report or a hang.
-- Before each call its description goes to LOG (flushed), so the last line of LOG after a crash
-- is the call that crashed; replay it with `miwb fuzz/api.lua SEED N LOG` where N is its number.
-- The same SEED gives the same calls. Functions that touch the network, run gnuplot, start
-- subprocesses or train are left out (listed in SKIP); file writers run in the current folder
-- (api.sh starts in a temporary one).
local mi = require("miwb")
local seed, calls, logpath = tonumber(arg[1]) or 1, tonumber(arg[2]) or 1000, arg[3] or "/dev/null"
local log = assert(io.open(logpath, "w"))

-- xorshift, so that the calls do not depend on Lua's math.random across versions
local state = seed * 2654435761 % 4294967296 + 1
local function rnd(n)
  state = state ~ (state << 13) & 0xffffffff
  state = state ~ (state >> 17)
  state = state ~ (state << 5) & 0xffffffff
  return state % n + 1
end

-- ---------------------------------------------------------------- the argument pool
local model_cfg = {n_layers = 1, d_model = 8, n_ctx = 8, d_head = 4, n_heads = 2, d_vocab = 11,
                   attn_only = true, act_fn = "relu"}
local model = mi.HookedTransformer(model_cfg)
local _, cache = model:run_with_cache(mi.tensor{{1, 2, 3}}:long())
local deep = {1}
for _ = 1, 40 do deep = {deep} end

local function pool()
  local p = {
    {"nil", nil}, {"true", true}, {"false", false},
    {"0", 0}, {"1", 1}, {"2", 2}, {"-1", -1}, {"-2", -2}, {"3", 3}, {"7", 7},
    {"2^31", 2^31}, {"2^62", 2^62}, {"-2^63", math.mininteger}, {"maxint", math.maxinteger},
    {"0.5", 0.5}, {"-0.0", -0.0}, {"nan", 0 / 0}, {"inf", math.huge}, {"-inf", -math.huge}, {"1e300", 1e300},
    {'""', ""}, {'"a"', "a"}, {'"\\0"', "\0"}, {'"a\\0b"', "a\0b"}, {'"float32"', "float32"}, {'"int64"', "int64"},
    {'"bool"', "bool"}, {'"\\xff"', "\xff"}, {'"..."', "..."}, {'"i j -> j i"', "i j -> j i"},
    {'"b s d -> (b s) d"', "b s d -> (b s) d"}, {'"d -> n d"', "d -> n d"}, {'":, 1:"', ":, 1:"},
    {'"blocks.0.attn.hook_pattern"', "blocks.0.attn.hook_pattern"}, {'"hook_embed"', "hook_embed"},
    {"{}", {}}, {"{1,2}", {1, 2}}, {"{{1,2},{3,4}}", {{1, 2}, {3, 4}}}, {"{-1}", {-1}}, {"{2^62}", {2^62}},
    {"{0}", {0}}, {"{n=-1}", {n = -1}}, {"{dim=1}", {dim = 1}}, {"{seed=1}", {seed = 1}}, {"{copy=true}", {copy = true}},
    {"deep", deep}, {"function", function(x) return x end}, {"erroring function", function() error("boom") end},
    {"zeros(0)", mi.zeros(0)}, {"zeros(2,0)", mi.zeros(2, 0)}, {"scalar", mi.tensor(3)},
    {"ones(2,3)", mi.ones(2, 3)}, {"randn(3,3)", mi.randn({3, 3}, {seed = 1})}, {"arange(6) i64", mi.arange(6)},
    {"i64 [2,2]", mi.tensor{{1, -1}, {0, 2}}:long()}, {"bool [3]", mi.tensor{1, 0, 1}:bool()},
    {"transposed", mi.randn({3, 4}, {seed = 2}):t()}, {"expanded", mi.ones(1, 3):expand(4, 3)},
    {"strided", mi.arange(10):float()[{{0, 10, 3}}]}, {"huge expanded", mi.ones(1):expand(2^36)},
    {"nan tensor", mi.tensor{0 / 0, 1}}, {"model", model}, {"cache", cache},
    {"tokens", mi.tensor{{1, 2, 3}}:long()}, {"bad tokens", mi.tensor{{-1, 99}}:long()},
  }
  return p
end
local POOL = pool()

local function describe(v)
  for _, e in ipairs(POOL) do if rawequal(e[2], v) then return e[1] end end
  return tostring(v)
end

-- ---------------------------------------------------------------- the targets
local SKIP = {
  -- network, subprocesses, long runs, the REPL, the process itself
  pull = true, download = true, show = true, redraw = true, repl = true, run_repl = true, train = true,
  Trainer = true, trainer = true, train_tokenizer = true, sweep = true, cli = true, experiment = true,
  exit = true, plot = true, wordnet = true, load_pretrained = true, from_pretrained = true,
  from_pretrained_no_processing = true, generate = true, sae = true, SAE = true, steering = true,
  patching = true, toy = true, sys = true, lua_source = true, isatty = true, progress = true,
}
local targets = {}
local function add(prefix, t, self)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not SKIP[k] and k:sub(1, 1) ~= "_" then names[#names + 1] = k end
  end
  table.sort(names)
  for _, k in ipairs(names) do targets[#targets + 1] = {prefix .. k, t[k], self} end
end
add("mi.", mi)
for _, sub in ipairs{"json", "utils", "analysis", "metrics", "patching", "toy"} do
  if type(mi[sub]) == "table" then add("mi." .. sub .. ".", mi[sub]) end
end
add("tensor:", mi.Tensor, "tensor")
local function methods(obj)
  local mt = getmetatable(obj)
  local m = mt.__methods or mt.__index
  return type(m) == "table" and m or {}
end
add("model:", methods(model), "model")
add("cache:", methods(cache), "cache")

-- ---------------------------------------------------------------- the calls
local start = tonumber(arg[4])
-- FUZZ_API_REPORT=1: also list the errors that do not name the function called (a Lua runtime
-- error from inside miwb: "attempt to index a nil value", Lua's "bad argument #1 to '?'"), one
-- line per function, for `miwb fuzz/api.lua SEED CALLS LOG` on the normal build (run it in an
-- empty folder, as api.sh does: the file writers write into the current one).
-- FUZZ_API_REPORT=names: also the errors whose text does not hold the function's name at all
-- (an alias naming the function it calls, "mi.empty" -> "zeros: ...").
local report, internal = nil, {}
local names_too = os.getenv("FUZZ_API_REPORT") == "names"
if os.getenv("FUZZ_API_REPORT") then
  report = function(name, err, i)
    if type(err) ~= "string" then return end
    if err:find("attempt to ", 1, true) or err:find("to '?'", 1, true) or err:find("unexpected error inside miwb", 1, true)
       or (names_too and not err:find(name:match("[^.:]+$"), 1, true)) then
      if not internal[name] then internal[name] = {i, (err:gsub("\n.*", ""))}; internal[#internal + 1] = name end
    end
  end
end
local crashes_are_bugs = 0
for i = 1, calls do
  local t = targets[rnd(#targets)]
  local n = rnd(5) - 1
  local args, descs = {}, {}
  local first = 1
  if t[3] then -- a method: self is usually of the right kind
    local selfv = t[3] == "model" and model or t[3] == "cache" and cache or POOL[rnd(#POOL)][2]
    if t[3] == "tensor" and rnd(4) > 1 then
      local tensors = {}
      for _, e in ipairs(POOL) do if mi.is_tensor(e[2]) then tensors[#tensors + 1] = e[2] end end
      selfv = tensors[rnd(#tensors)]
    end
    args[1], descs[1], first = selfv, describe(selfv), 2
  end
  for j = first, first + n - 1 do
    local e = POOL[rnd(#POOL)]
    args[j], descs[j] = e[2], e[1]
  end
  if not start or i >= start then
    log:write(("%d: %s(%s)\n"):format(i, t[1], table.concat(descs, ", ")))
    log:flush()
    local ok, err = pcall(t[2], table.unpack(args, 1, first + n - 1))
    if not ok and report then report(t[1], err, i) end
    if not ok and type(err) == "string" and err:find("C stack overflow", 1, true) then
      crashes_are_bugs = crashes_are_bugs + 1
    end
    if i % 200 == 0 then collectgarbage() end
  end
end
for _, name in ipairs(internal) do
  io.stderr:write(("internal error: call %d %s: %s\n"):format(internal[name][1], name, internal[name][2]))
end
log:write("done\n")
log:close()
print(("fuzz-api: seed %d, %d calls, no crash"):format(seed, calls))
