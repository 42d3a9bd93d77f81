-- miwb.experiment: what every script in scripts/ shares: its command line, the model it runs
-- on, where its figures and results go.
--
--   local E = mi.experiment
--   local args = E.parse_args(arg, "induction", {seq_len = 50, batch = 10})
--   local model = E.load_model(args.model)
--   ... E.write_results(args.out, {...})
--
-- Every script takes --model M (a model folder, a model name in the cache, or "toy" for the
-- hand-built induction-circuit model), --seed S, --out DIR (default plots/NAME), plus its own
-- options given as defaults; --help lists them.
local M = {}

local function mi() return require("miwb") end

-- The folder of the repository (scripts/..), from the running script's path.
function M.repo_root()
  local script = arg and arg[0] or ""
  local dir = script:match("^(.*)/scripts/[^/]*$")
  if dir then return dir end
  if script:match("^scripts/") then return "." end
  return "."
end

-- The default model: $MIWB_MODEL, else the bundled trained model (models/attn_only_2L), else
-- the hand-built toy model.
function M.default_model()
  local env = os.getenv("MIWB_MODEL")
  if env and env ~= "" then return env end
  local bundled = M.repo_root() .. "/models/attn_only_2L"
  local f = io.open(bundled .. "/config.json", "r")
  if f then f:close(); return bundled end
  return "toy"
end

-- args = parse_args(argv, name, defaults, help, opts): --key value flags over defaults (a number
-- default takes numbers, a boolean one true/false, a string one any text). help = {key = "what it
-- means"} for every key of defaults; --help prints each flag, its meaning and its default. The
-- standard flags --model, --seed, --out come too unless opts.standard == false. A user error in
-- the flags prints one line on stderr and exits with status 2 (no traceback).
local STANDARD_HELP = {
  model = "a model folder, a model name in $MIWB_HOME, or 'toy'",
  seed = "random seed: the same seed gives the same output on any machine",
  out = "where figures and results.json go",
}

function M.parse_args(argv, name, defaults, help, opts)
  defaults, help, opts = defaults or {}, help or {}, opts or {}
  local standard = opts.standard ~= false
  local function fail(msg)
    io.stderr:write(name, ": ", msg, " (see --help)\n")
    os.exit(2)
  end
  local all = {}
  for k, v in pairs(defaults) do all[k] = v end
  if standard then
    all.seed = all.seed or 0
    all.model = all.model or M.default_model()
    all.out = all.out or ("plots/" .. name)
  end
  local args = {}
  for k, v in pairs(all) do args[k] = v end
  local i = 1
  while argv and i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      local keys = {}
      for k in pairs(all) do keys[#keys + 1] = k end
      table.sort(keys, function(x, y)
        local sx, sy = STANDARD_HELP[x] ~= nil and standard, STANDARD_HELP[y] ~= nil and standard
        if sx ~= sy then return sx end
        return x < y
      end)
      print(("usage: miwb %s [--FLAG VALUE ...]"):format(arg and arg[0] or ("scripts/" .. name .. ".lua")))
      local width = 0
      for _, k in ipairs(keys) do width = math.max(width, #k) end
      for _, k in ipairs(keys) do
        local what = help[k] or (standard and STANDARD_HELP[k])
        if not what then error(("parse_args: %s: no help text for --%s"):format(name, k), 0) end
        local d = all[k]
        print(("  --%-" .. width .. "s  %s (default: %s)"):format(k, what, d == "" and "none" or tostring(d)))
      end
      os.exit(0)
    end
    local key = a:match("^%-%-([%w_]+)$")
    if not key then fail(("unexpected argument '%s'"):format(a)) end
    if all[key] == nil then fail(("unknown option --%s"):format(key)) end
    local val = argv[i + 1]
    if val == nil then fail(("--%s needs a value"):format(key)) end
    local proto = all[key]
    if type(proto) == "number" then
      local n = tonumber(val)
      if not n then fail(("--%s wants a number, got '%s'"):format(key, val)) end
      val = math.tointeger(n) or n
    elseif type(proto) == "boolean" then
      if val == "true" or val == "1" or val == "yes" then val = true
      elseif val == "false" or val == "0" or val == "no" then val = false
      else fail(("--%s wants true or false, got '%s'"):format(key, val)) end
    end
    args[key] = val
    i = i + 2
  end
  args.name = name
  if standard then
    local ok, err = require("miwb.utils").mkdir_p(args.out) -- no shell: any folder name is safe
    if not ok then error(name .. ": " .. err, 0) end
  end
  return args
end

function M.load_model(spec)
  local m = mi()
  if spec == "toy" then return m.toy.induction_circuit{}, "toy induction-circuit model" end
  if not m.from_pretrained then
    error("load_model: this build has no model loading (mi.from_pretrained)", 0)
  end
  -- A model folder (the bundled model) loads as the seed notebook loads its attention-only model,
  -- HookedTransformer(cfg) + load_state_dict: no weight processing. A model name from the cache
  -- (gpt2-small, ...) loads as from_pretrained does in the notebook: processed.
  local f = io.open(spec .. "/config.json", "r")
  if f then
    f:close()
    return m.from_pretrained_no_processing(spec), spec
  end
  return m.from_pretrained(spec), spec
end

-- str tokens of a 1-D token tensor, or ids as strings when the model has no tokenizer
function M.str_tokens(model, tokens)
  if model.tokenizer then return model:to_str_tokens(tokens) end
  local out = {}
  for i, id in ipairs(tokens:totable()) do out[i] = tostring(math.tointeger(id) or id) end
  return out
end

-- Writes results.json (tensors become nested lists) and returns its path.
function M.write_results(dir, results)
  local m = mi()
  local function conv(v)
    if m.is_tensor(v) then return v:totable() end
    if type(v) == "table" then
      local o = {}
      for k, x in pairs(v) do o[k] = conv(x) end
      return o
    end
    if type(v) == "number" and (v ~= v or v == math.huge or v == -math.huge) then return tostring(v) end
    return v
  end
  local path = dir .. "/results.json"
  local f = assert(io.open(path, "w"))
  f:write(m.json.encode(conv(results), {indent = true}), "\n")
  f:close()
  return path
end

-- "L.H" names formatted for a report line
function M.heads_str(list)
  if #list == 0 then return "(none)" end
  return table.concat(list, ", ")
end

return M
