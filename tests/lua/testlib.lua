-- testlib.lua: a small test library for the Lua tests. Each test prints "ok - name" or
-- "FAIL - name" (with the error and traceback); T.done() prints "N passed, N failed" and
-- sets the exit status. Checks raise, so a test stops at its first failed check.
local T = {passed = 0, failed = 0}

function T.test(name, fn)
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    T.passed = T.passed + 1
    print("ok - " .. name)
  else
    T.failed = T.failed + 1
    print("FAIL - " .. name)
    print("  " .. tostring(err):gsub("\n", "\n  "))
  end
end

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function T.eq(a, b, msg)
  if a ~= b then error((msg or "eq") .. ": got " .. fmt(a) .. ", expected " .. fmt(b), 2) end
end

function T.truthy(v, msg)
  if not v then error((msg or "expected a true value") .. ", got " .. fmt(v), 2) end
end

function T.near(a, b, tol, msg)
  tol = tol or 1e-6
  if type(a) ~= "number" or type(b) ~= "number" or not (math.abs(a - b) <= tol) then
    error((msg or "near") .. ": got " .. fmt(a) .. ", expected " .. fmt(b) .. " (tol " .. tol .. ")", 2)
  end
end

-- deep comparison of (nested) Lua tables of numbers, e.g. from tensor:totable()
function T.near_table(a, b, tol, msg, path)
  tol = tol or 1e-6
  path = path or ""
  if type(a) == "table" and type(b) == "table" then
    if #a ~= #b then error((msg or "near_table") .. ": length " .. #a .. " vs " .. #b .. " at " .. path, 2) end
    for i = 1, #a do T.near_table(a[i], b[i], tol, msg, path .. "[" .. i .. "]") end
  elseif not (type(a) == "number" and type(b) == "number" and
              (math.abs(a - b) <= tol or (a ~= a and b ~= b) or a == b)) then
    error((msg or "near_table") .. ": " .. fmt(a) .. " vs " .. fmt(b) .. " at " .. path, 2)
  end
end

-- runs fn with miwb's warnings (mi.utils.warn) collected instead of printed; returns them
function T.warnings(fn)
  local U = require("miwb").utils
  local got, old = {}, U.warn_handler
  U.warn_handler = function(msg) got[#got + 1] = msg end
  local ok, err = pcall(fn)
  U.warn_handler = old
  if not ok then error(err, 0) end
  return got
end

-- fn must raise an error whose text contains `pattern` (plain substring)
function T.raises(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then error((msg or "raises") .. ": no error raised", 2) end
  if pattern and not tostring(err):find(pattern, 1, true) then
    error((msg or "raises") .. ": error " .. fmt(tostring(err)) .. " lacks " .. fmt(pattern), 2)
  end
  return err
end

-- s quoted for the shell: one word, whatever it holds
function T.shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- runs a shell command; returns its output (stdout and stderr together) and exit status
-- (128 + the signal when a signal ended it)
function T.sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = f:read("a")
  local _, how, code = f:close()
  if how == "signal" then code = 128 + code end
  return out, code
end

-- the bytes of a file (raises when it cannot be read)
function T.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- a fixture model of tests/fixtures/gen_model.py (NAME.safetensors: its config in the metadata,
-- its weights as param.<state-dict name>) -> model, the file's tensors
function T.fixture_model(name)
  local mi = require("miwb")
  local sd, meta = mi.load("tests/fixtures/model/" .. name .. ".safetensors")
  local model = mi.HookedTransformer(mi.json.decode(meta.config))
  local params = {}
  for k, v in pairs(sd) do
    local n = k:match("^param%.(.*)$")
    if n then params[n] = v end
  end
  model:load_state_dict(params)
  return model, sd
end

function T.done()
  print(string.format("%d passed, %d failed", T.passed, T.failed))
  os.exit(T.failed == 0 and 0 or 1)
end

return T
