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

function M.parse_args(argv, name, defaults)
  defaults = defaults or {}
  local args = {model = nil, seed = 0, out = nil}
  for k, v in pairs(defaults) do args[k] = v end
  local i = 1
  while argv and i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      local keys = {}
      for k in pairs(defaults) do keys[#keys + 1] = k end
      table.sort(keys)
      print(("usage: miwb scripts/%s.lua [--model M] [--seed S] [--out DIR]%s"):format(name,
        #keys > 0 and (" [--" .. table.concat(keys, " N] [--") .. " N]") or ""))
      print("  --model M   a model folder, a model name in $MIWB_HOME, or 'toy' (default: the bundled model)")
      print("  --seed S    random seed (default 0): the same seed gives the same output on any machine")
      print(("  --out DIR   where figures and results.json go (default plots/%s)"):format(name))
      os.exit(0)
    end
    local key = a:match("^%-%-([%w_]+)$")
    if not key then error(("%s: unexpected argument '%s' (see --help)"):format(name, a), 0) end
    local val = argv[i + 1]
    if val == nil then error(("%s: --%s needs a value"):format(name, key), 0) end
    if key ~= "model" and key ~= "out" and key ~= "seed" and defaults[key] == nil then
      error(("%s: unknown option --%s (see --help)"):format(name, key), 0)
    end
    local proto = key == "seed" and 0 or defaults[key]
    if type(proto) == "number" then
      local n = tonumber(val)
      if not n then error(("%s: --%s wants a number, got '%s'"):format(name, key, val), 0) end
      val = n
    elseif type(proto) == "boolean" then
      val = (val == "true" or val == "1" or val == "yes")
    end
    args[key] = val
    i = i + 2
  end
  args.model = args.model or M.default_model()
  args.out = args.out or ("plots/" .. name)
  args.name = name
  os.execute("mkdir -p '" .. args.out:gsub("'", "'\\''") .. "'")
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
