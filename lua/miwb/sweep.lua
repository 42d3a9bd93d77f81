-- miwb.sweep: sharded, resumable experiment sweeps (docs/sweeps.md).
--
-- A sweep is a Lua file returning a table:
--   name    a string
--   items   a count n (the items are 0 .. n-1) or function(ctx) -> a count or a list of items
--           (numbers, strings, tables that JSON holds); the same on every worker
--   run     function(item, ctx) -> the item's result: a table of numbers, strings, booleans,
--           tensors and nested tables of those
--   reduce  (optional) function(results, ctx) -> the merged result (same kinds of values);
--           results[k] is the result of the k-th item (item index k-1); default {items = results}
--   setup   (optional) function(ctx), run once per process (each worker and the merge) before
--           items: load the model or the dataset here, into ctx
--   args    (optional) {key = default}: the sweep's own options, given after --args as --key value
-- ctx holds args, shard, shards, dir (the output folder), file (the sweep file), index (the item
-- being run), items (the list), figures (dir/figures, for what reduce draws).
--
--   miwb sweep FILE [--shard I/N | --shards N] --out DIR [--args --key value ...]
--   miwb sweep merge DIR        miwb sweep status DIR [--watch SECONDS] (until no item is missing)
--
-- Items are dealt to shards by stride: shard I runs the items i with i % N == I. Items that
-- cost more usually sit together (longer prompts, later seeds, bigger chunks), so striding
-- balances the shards, and a half-finished sweep is a uniform sample of the whole.
--
-- The output folder:
--   manifest.json             the sweep's name, file, sha256, args, item count and list hash, N,
--                             each shard's items; created once (link), checked by every process
--   items/NNNNNN.json         an item's record: status "ok" (its result, tensors replaced by
--                             {"__tensor": key}) or "failed" (error, traceback); written last,
--                             by temporary file + rename, so it marks the item finished
--   items/NNNNNN.safetensors  the item's tensors, when it has any (written before the record)
--   shards/I.json             the worker of shard I: host, pid, state, counts
--   merged.json, merged.safetensors, figures/   what merge writes
local M = {}

local mi -- the module, set by _install

local FORMAT = 1 -- the layout version of the output folder

------------------------------------------------------------------ small helpers

local function exists(path) return mi.utils.file_exists(path) end

-- writes text to path whole: a temporary file in the same folder, then rename (mi.utils.write_file)
local function write_atomic(path, text)
  local ok, err = mi.utils.write_file(path, text)
  if not ok then error("sweep: " .. err, 0) end
end

local function read_json(path)
  local v, err = mi.json.read(path)
  if v == nil then error("sweep: " .. tostring(err), 0) end
  return v
end

local function encode(v) return mi.json.encode(v, {indent = true}) .. "\n" end

local function item_path(dir, i, ext) return ("%s/items/%06d.%s"):format(dir, i, ext) end

local function list_str(list, max)
  max = max or 10
  local out = {}
  for k = 1, math.min(#list, max) do out[k] = tostring(list[k]) end
  if #list > max then out[#out + 1] = ("... (%d in all)"):format(#list) end
  return table.concat(out, ", ")
end

------------------------------------------------------------------ results <-> files

-- A result table with its tensors taken out: returns the JSON-ready copy and fills tensors
-- {key = tensor}, key being the path of the value ("scores", "heads.2.z"). NaN and infinities,
-- which JSON cannot hold, become {"__number": "nan" | "inf" | "-inf"}.
local function split(v, path, tensors)
  local t = type(v)
  if mi.is_tensor(v) then
    local key = path == "" and "value" or path
    tensors[key] = v
    return {__tensor = key}
  elseif t == "number" then
    if v ~= v then return {__number = "nan"} end
    if v == math.huge then return {__number = "inf"} end
    if v == -math.huge then return {__number = "-inf"} end
    return v
  elseif t == "string" or t == "boolean" then
    return v
  elseif t == "table" and getmetatable(v) == nil then
    local out = {}
    for k, x in pairs(v) do
      if k == "__tensor" or k == "__number" then
        error(("result%s: the key '%s' is reserved by the sweep runner"):format(path == "" and "" or "." .. path, k), 0)
      end
      if type(k) ~= "string" and math.type(k) ~= "integer" then
        error(("result%s: keys must be strings or integers, got a %s"):format(
          path == "" and "" or "." .. path, type(k)), 0)
      end
      out[k] = split(x, path == "" and tostring(k) or (path .. "." .. tostring(k)), tensors)
    end
    return out
  end
  error(("result%s: a %s cannot be stored (results hold numbers, strings, booleans, tensors and tables)")
    :format(path == "" and "" or "." .. path, t), 0)
end

local NUMBERS = {nan = 0 / 0, inf = math.huge, ["-inf"] = -math.huge}

local function join(v, tensors, where)
  if type(v) ~= "table" then return v end
  if v.__tensor then
    local t = tensors and tensors[v.__tensor]
    if not t then error(("sweep: %s: tensor '%s' is missing from its .safetensors file"):format(where, v.__tensor), 0) end
    return t
  end
  if v.__number then return NUMBERS[v.__number] end
  for k, x in pairs(v) do v[k] = join(x, tensors, where) end
  return v
end

-- writes value's tensors to base.safetensors (when there are any) and returns the JSON part
local function save_tensors(base, value)
  local tensors = {}
  local plain = split(value, "", tensors)
  if next(tensors) then
    mi.save(base .. ".safetensors", tensors) -- a temporary file renamed into place
  else
    os.remove(base .. ".safetensors")
  end
  return plain
end

local function load_tensors(base, plain, where)
  local tensors
  if exists(base .. ".safetensors") then
    local sd, err = mi.load(base .. ".safetensors")
    if not sd then error("sweep: " .. tostring(err), 0) end
    -- copies, so that the file's mapping is released with the table, not with the last result
    tensors = {}
    for k, t in pairs(sd) do tensors[k] = t:clone() end
  end
  return join(plain, tensors, where)
end

------------------------------------------------------------------ the sweep file

local SPEC_KEYS = {name = true, items = true, run = true, reduce = true, setup = true, args = true}

local function load_spec(file)
  local chunk, err = loadfile(file)
  if not chunk then error("sweep: " .. tostring(err), 0) end
  local ok, spec = pcall(chunk)
  if not ok then error(("sweep: %s: %s"):format(file, tostring(spec)), 0) end
  if type(spec) ~= "table" then
    error(("sweep: %s must return a table {name = ..., items = ..., run = ...}, got a %s"):format(file, type(spec)), 0)
  end
  for k in pairs(spec) do
    if not SPEC_KEYS[k] then
      error(("sweep: %s: unknown field '%s' (a sweep has name, items, run, reduce, setup, args)"):format(file, tostring(k)), 0)
    end
  end
  if type(spec.name) ~= "string" then error(("sweep: %s: name must be a string"):format(file), 0) end
  if type(spec.run) ~= "function" then error(("sweep: %s: run must be a function(item, ctx)"):format(file), 0) end
  if math.type(spec.items) ~= "integer" and type(spec.items) ~= "function" then
    error(("sweep: %s: items must be a count or a function(ctx) returning a list"):format(file), 0)
  end
  for _, k in ipairs({"reduce", "setup"}) do
    if spec[k] ~= nil and type(spec[k]) ~= "function" then
      error(("sweep: %s: %s must be a function"):format(file, k), 0)
    end
  end
  if spec.args ~= nil and type(spec.args) ~= "table" then
    error(("sweep: %s: args must be a table of defaults {key = value}"):format(file), 0)
  end
  return spec
end

-- the sweep's own options ("--key value" pairs) over its defaults
local function parse_sweep_args(spec, list, file)
  local defaults = spec.args or {}
  local args = {}
  for k, v in pairs(defaults) do args[k] = v end
  local i = 1
  while i <= #list do
    local key = list[i]:match("^%-%-([%w_]+)$")
    if not key then error(("sweep: %s: unexpected argument '%s' (sweep options are --key value)"):format(file, list[i]), 0) end
    if defaults[key] == nil then
      local keys = {}
      for k in pairs(defaults) do keys[#keys + 1] = "--" .. k end
      table.sort(keys)
      error(("sweep: %s: unknown option --%s (it takes: %s)"):format(file, key,
        #keys > 0 and table.concat(keys, " ") or "no options"), 0)
    end
    local val = list[i + 1]
    if val == nil then error(("sweep: %s: --%s needs a value"):format(file, key), 0) end
    local proto = defaults[key]
    if type(proto) == "number" then
      local n = tonumber(val)
      if not n then error(("sweep: %s: --%s wants a number, got '%s'"):format(file, key, val), 0) end
      val = math.tointeger(n) or n
    elseif type(proto) == "boolean" then
      if val ~= "true" and val ~= "false" then
        error(("sweep: %s: --%s wants true or false, got '%s'"):format(file, key, val), 0)
      end
      val = val == "true"
    end
    args[key] = val
    i = i + 2
  end
  return args
end

local function item_list(spec, ctx)
  local list = spec.items
  if type(list) == "function" then list = list(ctx) end
  if math.type(list) == "integer" then
    local n = list
    list = {}
    for i = 0, n - 1 do list[i + 1] = i end
    return list, mi.sha256("count " .. n)
  end
  if type(list) ~= "table" then
    error(("sweep: %s: items(ctx) must return a count or a list, got a %s"):format(ctx.file, type(list)), 0)
  end
  local ok, text = pcall(mi.json.encode, list)
  if not ok then error(("sweep: %s: the items cannot be written as JSON: %s"):format(ctx.file, tostring(text)), 0) end
  return list, mi.sha256(text)
end

------------------------------------------------------------------ shards

-- The shard index and count: --shard I/N, else the engine's variables, else 0 of 1.
function M.resolve_shard(opts, env)
  env = env or os.getenv
  local function num(name)
    local v = env(name)
    if v == nil or v == "" then return nil end
    local n = math.tointeger(tonumber(v))
    if not n then error(("sweep: %s='%s' is not an integer"):format(name, v), 0) end
    return n
  end
  local I, N, from
  if opts.shard then
    local a, b = tostring(opts.shard):match("^(%d+)/(%d+)$")
    if not a then error(("sweep: --shard wants I/N (e.g. 0/4), got '%s'"):format(opts.shard), 0) end
    I, N, from = tonumber(a), tonumber(b), "--shard"
    if opts.shards and opts.shards ~= N then
      error(("sweep: --shard %s and --shards %d disagree"):format(opts.shard, opts.shards), 0)
    end
  elseif num("SLURM_ARRAY_TASK_ID") then
    -- the array is numbered 0 .. N-1; with --shards N a resubmitted subset (--array=3,7) keeps
    -- its indices (SLURM_ARRAY_TASK_COUNT is then the subset's size)
    I = num("SLURM_ARRAY_TASK_ID")
    N = opts.shards or num("SLURM_ARRAY_TASK_COUNT")
    from = "SLURM_ARRAY_TASK_ID"
    if not N then error("sweep: SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT: add --shards N", 0) end
  elseif num("JOB_COMPLETION_INDEX") then
    I, N, from = num("JOB_COMPLETION_INDEX"), opts.shards, "JOB_COMPLETION_INDEX"
    if not N then
      error("sweep: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but Kubernetes does not tell the " ..
            "number of completions: add --shards N (N = the Job's completions)", 0)
    end
  elseif num("PARALLEL_SEQ") then
    I, N, from = num("PARALLEL_SEQ") - 1, opts.shards, "PARALLEL_SEQ"
    if not N then
      error("sweep: PARALLEL_SEQ is set (a GNU parallel job) but not the number of shards: add --shards N " ..
            "(the number of jobs), or give --shard {}/N with ::: $(seq 0 N-1)", 0)
    end
  else
    if opts.shards and opts.shards ~= 1 then
      error(("sweep: --shards %d needs a shard index: --shard I/%d, or SLURM_ARRAY_TASK_ID, " ..
             "JOB_COMPLETION_INDEX or PARALLEL_SEQ from the engine"):format(opts.shards, opts.shards), 0)
    end
    I, N, from = 0, 1, "none"
  end
  if N < 1 or I < 0 or I >= N then
    error(("sweep: shard %d of %d (from %s): the index must be in 0 .. %d"):format(I, N, from, N - 1), 0)
  end
  return I, N, from
end

local function shard_items(n, I, N)
  local out = {}
  for i = I, n - 1, N do out[#out + 1] = i end
  return out
end

------------------------------------------------------------------ the manifest

local function describe_diff(old, new)
  local diffs = {}
  if old.sweep_sha256 ~= new.sweep_sha256 then
    diffs[#diffs + 1] = ("the sweep file has changed (sha256 %s when the sweep started, %s now)"):format(
      old.sweep_sha256:sub(1, 12), new.sweep_sha256:sub(1, 12))
  end
  if old.name ~= new.name then diffs[#diffs + 1] = ("the sweep's name is '%s', was '%s'"):format(new.name, old.name) end
  local oa, na = mi.json.encode(old.args), mi.json.encode(new.args)
  if oa ~= na then diffs[#diffs + 1] = ("the arguments differ (%s now, %s when the sweep started)"):format(na, oa) end
  if old.n_items ~= new.n_items or old.items_sha256 ~= new.items_sha256 then
    diffs[#diffs + 1] = ("the item list differs (%d items now, %d when the sweep started; is items(ctx) deterministic?)")
      :format(new.n_items, old.n_items)
  end
  if new.shards and old.shards ~= new.shards then
    diffs[#diffs + 1] = ("the number of shards is %d, the sweep started with %d"):format(new.shards, old.shards)
  end
  if old.format ~= FORMAT then diffs[#diffs + 1] = ("the folder has layout %s, this miwb writes %d"):format(tostring(old.format), FORMAT) end
  return diffs
end

local function refuse(dir, diffs, what)
  error(("sweep: refusing to %s in %s: %s.\n  Rerun with the original file and arguments, or start again with " ..
         "a new --out folder."):format(what, dir, table.concat(diffs, "; ")), 0)
end

-- creates dir/manifest.json once (a whole file linked into place: racing workers agree on one)
-- and checks it against this worker's view
local function ensure_manifest(dir, man)
  local path = dir .. "/manifest.json"
  if not exists(path) then
    local tmp = ("%s.tmp-%s-%d"):format(path, mi.sys.hostname(), mi.sys.getpid())
    write_atomic(tmp, encode(man))
    local ok, err, already = mi.sys.link(tmp, path)
    os.remove(tmp)
    if not ok and not already then error("sweep: cannot create " .. tostring(err), 0) end
  end
  local old = read_json(path)
  local diffs = describe_diff(old, man)
  if #diffs > 0 then refuse(dir, diffs, "run this worker") end
  return old
end

------------------------------------------------------------------ running a shard

local function traceback(e)
  local msg = type(e) == "string" and e or (mi.json and pcall(mi.json.encode, e) and mi.json.encode(e)) or tostring(e)
  return {message = msg, traceback = debug.traceback(msg, 2)}
end

-- the item's record, or nil when absent
local function read_record(dir, i)
  local path = item_path(dir, i, "json")
  if not exists(path) then return nil end
  local ok, rec = pcall(mi.json.read, path)
  if not ok or type(rec) ~= "table" then return {status = "unreadable", error = tostring(rec)} end
  return rec
end

-- loads the sweep, resolves its arguments (a list from the command line, or given: a table
-- recorded in a manifest), runs setup and lists the items; returns spec, ctx and the manifest
-- this process would write
local function prepare(file, argv_args, dir, shards, given)
  local spec = load_spec(file)
  local args = parse_sweep_args(spec, argv_args or {}, file)
  if given then for k, v in pairs(given) do args[k] = v end end
  local ctx = {args = args, file = file, dir = dir, figures = dir .. "/figures", name = spec.name}
  local sha = mi.sha256_file(file)
  if spec.setup then spec.setup(ctx) end
  local items, items_sha = item_list(spec, ctx)
  ctx.items = items
  local man = {format = FORMAT, name = spec.name, sweep_file = file, sweep_sha256 = sha, args = mi.json.object(args),
               n_items = #items, items_sha256 = items_sha, shards = shards}
  return spec, ctx, man
end

-- runs shard I of N; returns the number of failed items
function M.run(file, opts)
  opts = opts or {}
  mi.utils.check_opts("sweep.run", opts, {"out", "shard", "shards", "args"})
  local dir = assert(opts.out, "sweep: --out DIR is needed")
  local I, N = M.resolve_shard(opts)
  local t_start = mi.monotonic()
  for _, d in ipairs({dir, dir .. "/items", dir .. "/shards"}) do
    local ok, err = mi.sys.mkdir(d)
    if not ok then error("sweep: cannot create " .. tostring(err), 0) end
  end
  local spec, ctx, man = prepare(file, opts.args, dir, N)
  ctx.shard, ctx.shards = I, N
  man.shard_items = {}
  for s = 0, N - 1 do man.shard_items[s + 1] = shard_items(man.n_items, s, N) end
  ensure_manifest(dir, man)

  local mine = shard_items(man.n_items, I, N)
  local host, pid = mi.sys.hostname(), mi.sys.getpid()
  local state = {shard = I, shards = N, host = host, pid = pid, state = "running", items = #mine,
                 done = 0, skipped = 0, failed = 0, startup_seconds = mi.monotonic() - t_start}
  local state_path = ("%s/shards/%d.json"):format(dir, I)
  write_atomic(state_path, encode(state))

  local bar = mi.progress.bar(("%s %d/%d"):format(spec.name, I, N), #mine)
  local failed = {}
  for k, i in ipairs(mine) do
    local rec = read_record(dir, i)
    if rec and rec.status == "ok" and rec.sweep_sha256 == man.sweep_sha256 then
      state.skipped = state.skipped + 1
    else
      ctx.index = i
      local t0 = mi.monotonic()
      local ok, res = xpcall(spec.run, traceback, ctx.items[i + 1], ctx)
      local out = {index = i, shard = I, sweep_sha256 = man.sweep_sha256, host = host, pid = pid}
      if ok then
        local sok, plain = pcall(save_tensors, item_path(dir, i, "json"):sub(1, -6), res)
        if sok then
          out.status, out.result = "ok", plain
        else
          ok, res = false, {message = "run returned a result that cannot be stored: " .. tostring(plain), traceback = ""}
        end
      end
      if not ok then
        out.status, out.error, out.traceback = "failed", res.message, res.traceback
        failed[#failed + 1] = i
        state.failed = state.failed + 1
        io.stderr:write(("%s: item %d failed: %s\n"):format(spec.name, i, res.message))
      else
        state.done = state.done + 1
      end
      out.seconds = mi.monotonic() - t0
      write_atomic(item_path(dir, i, "json"), encode(out))
    end
    bar:update(k, #failed > 0 and (#failed .. " failed") or nil)
  end
  bar:done()
  state.state = #failed > 0 and "finished with failures" or "finished"
  state.seconds = mi.monotonic() - t_start
  write_atomic(state_path, encode(state))
  io.stdout:write(("%s shard %d/%d: %d items, %d run, %d already done, %d failed%s\n"):format(spec.name, I, N,
    #mine, state.done, state.skipped, #failed,
    #failed > 0 and (" (items " .. list_str(failed) .. "; see miwb sweep status " .. dir .. ")") or ""))
  return #failed, N
end

------------------------------------------------------------------ status

-- per shard: done, failed (index, message), missing; the manifest
function M.scan(dir)
  local man = read_json(dir .. "/manifest.json")
  local names = mi.sys.listdir(dir .. "/items") or {}
  local recs, stray = {}, {}
  for _, name in ipairs(names) do
    local idx, ext = name:match("^(%d+)%.(%a+)$")
    idx = idx and tonumber(idx)
    if name:find("%.tmp") then
      -- a temporary file of a worker that is writing or was killed: not a result
    elseif not idx or (ext ~= "json" and ext ~= "safetensors") or idx >= man.n_items then
      stray[#stray + 1] = name
    elseif ext == "json" then
      recs[idx] = read_record(dir, idx)
    end
  end
  local shards = {}
  for s = 0, man.shards - 1 do
    local st = {shard = s, done = {}, failed = {}, missing = {}, wrong = {}}
    for _, i in ipairs(man.shard_items[s + 1]) do
      local r = recs[i]
      if not r then
        st.missing[#st.missing + 1] = i
      elseif r.index ~= i or r.sweep_sha256 ~= man.sweep_sha256 then
        st.wrong[#st.wrong + 1] = i
      elseif r.status == "ok" then
        st.done[#st.done + 1] = i
      else
        st.failed[#st.failed + 1] = {index = i, error = r.error or r.status, traceback = r.traceback}
      end
    end
    st.worker = exists(("%s/shards/%d.json"):format(dir, s)) and read_json(("%s/shards/%d.json"):format(dir, s)) or nil
    shards[s + 1] = st
  end
  return man, shards, stray
end

local function bar_line(st, n)
  local done = #st.done
  local frac = n > 0 and done / n or 1
  local width = 24
  local fill = math.floor(frac * width)
  local w = st.worker
  local who = "not started"
  if w then
    local state = w.state
    -- a worker of this host that is gone without finishing was killed
    if state == "running" and w.host == mi.sys.hostname() and not mi.sys.alive(w.pid) then state = "killed" end
    who = ("%s on %s (pid %d)"):format(state, w.host, w.pid)
  end
  return ("shard %-3d [%s%s] %5.1f%%  %d done, %d failed, %d missing%s  %s"):format(st.shard,
    ("#"):rep(fill), ("."):rep(width - fill), 100 * frac, done, #st.failed, #st.missing,
    #st.wrong > 0 and (", " .. #st.wrong .. " from another sweep") or "", who)
end

local function status_lines(dir)
  local man, shards, stray = M.scan(dir)
  local lines = {("%s: %d items in %d shards (sweep %s, args %s)"):format(man.name, man.n_items, man.shards,
    man.sweep_sha256:sub(1, 12), mi.json.encode(man.args))}
  local total, failed = 0, {}
  for _, st in ipairs(shards) do
    lines[#lines + 1] = bar_line(st, #man.shard_items[st.shard + 1])
    total = total + #st.done
    for _, f in ipairs(st.failed) do failed[#failed + 1] = f end
  end
  for k = 1, math.min(#failed, 10) do
    local f = failed[k]
    lines[#lines + 1] = ("  item %d failed: %s"):format(f.index, tostring(f.error):match("^[^\n]*"))
  end
  if #failed > 10 then lines[#lines + 1] = ("  ... %d failed items in all"):format(#failed) end
  if #stray > 0 then lines[#lines + 1] = "  files that are no item's: " .. list_str(stray) end
  local merged = exists(dir .. "/merged.json")
  lines[#lines + 1] = ("%d of %d items done%s"):format(total, man.n_items,
    merged and "; merged" or (total == man.n_items and "; ready to merge: miwb sweep merge " .. dir or ""))
  return lines, total == man.n_items and #failed == 0, man.n_items - total - #failed
end

-- prints the status; with opts.watch, again every opts.watch seconds (on a terminal in place,
-- elsewhere only when it changed) until no item is missing. Returns whether every item is done.
function M.status(dir, opts)
  opts = opts or {}
  mi.utils.check_opts("sweep.status", opts, {"watch"})
  local tty = mi.isatty(1)
  local shown, last = 0, nil
  while true do
    local lines, complete, missing = status_lines(dir)
    local text = table.concat(lines, "\n") .. "\n"
    if text ~= last or tty then
      if tty and shown > 0 then io.stdout:write(("\27[%dA\27[J"):format(shown)) end
      io.stdout:write(text)
      io.stdout:flush()
    end
    shown, last = #lines, text
    if not opts.watch or missing == 0 then return complete end
    local _, how = os.execute("sleep " .. tostring(tonumber(opts.watch) or 2))
    if how == "signal" then return complete end -- Ctrl-C
  end
end

------------------------------------------------------------------ merge

function M.merge(dir, opts)
  opts = opts or {}
  mi.utils.check_opts("sweep.merge", opts, {"sweep", "args"})
  local old = read_json(dir .. "/manifest.json")
  local file = opts.sweep or old.sweep_file
  if not exists(file) then
    error(("sweep: merge: the sweep file %s is not here: give it with --sweep FILE"):format(file), 0)
  end
  -- without --args, the arguments the sweep ran with
  local given = not (opts.args and #opts.args > 0) and old.args or nil
  local spec, ctx, man = prepare(file, opts.args, dir, old.shards, given)
  local diffs = describe_diff(old, man)
  if #diffs > 0 then refuse(dir, diffs, "merge") end
  ctx.shard, ctx.shards = nil, old.shards

  local _, shards, stray = M.scan(dir)
  local problems, seen = {}, {}
  local missing, failed, wrong = {}, {}, {}
  for _, st in ipairs(shards) do
    for _, i in ipairs(st.done) do
      if seen[i] then problems[#problems + 1] = ("item %d is listed in shards %d and %d"):format(i, seen[i], st.shard) end
      seen[i] = st.shard
    end
    for _, i in ipairs(st.missing) do missing[#missing + 1] = i end
    for _, f in ipairs(st.failed) do failed[#failed + 1] = ("%d (%s)"):format(f.index, tostring(f.error):match("^[^\n]*")) end
    for _, i in ipairs(st.wrong) do wrong[#wrong + 1] = i end
  end
  if #missing > 0 then problems[#problems + 1] = "missing items " .. list_str(missing) end
  if #failed > 0 then problems[#problems + 1] = "failed items " .. list_str(failed, 5) end
  if #wrong > 0 then problems[#problems + 1] = "items written by another sweep or misnamed: " .. list_str(wrong) end
  if #stray > 0 then problems[#problems + 1] = "files that are no item's in items/: " .. list_str(stray) end
  local count = 0
  for _ in pairs(seen) do count = count + 1 end
  if #problems == 0 and count ~= man.n_items then
    problems[#problems + 1] = ("%d results for %d items"):format(count, man.n_items)
  end
  if #problems > 0 then
    error(("sweep: cannot merge %s: %s.\n  Rerun the shards that lack items (the same command resumes), " ..
           "then merge again; miwb sweep status %s shows each shard."):format(dir, table.concat(problems, "; "), dir), 0)
  end

  local results = {}
  for i = 0, man.n_items - 1 do
    local rec = read_record(dir, i)
    results[i + 1] = load_tensors(item_path(dir, i, "json"):sub(1, -6), rec.result, ("item %d"):format(i))
  end
  local ok, err = mi.sys.mkdir(ctx.figures)
  if not ok then error("sweep: cannot create " .. tostring(err), 0) end
  local merged
  if spec.reduce then merged = spec.reduce(results, ctx) else merged = {items = results} end
  if merged == nil then merged = {} end
  local plain = save_tensors(dir .. "/merged", merged)
  write_atomic(dir .. "/merged.json", encode({name = man.name, sweep_sha256 = man.sweep_sha256, args = man.args,
                                              n_items = man.n_items, result = plain}))
  io.stdout:write(("%s: merged %d items into %s/merged.json%s\n"):format(man.name, man.n_items, dir,
    exists(dir .. "/merged.safetensors") and (" and " .. dir .. "/merged.safetensors") or ""))
  return merged
end

-- the merged result of a finished sweep, tensors included
function M.load(dir)
  local rec = read_json(dir .. "/merged.json")
  return load_tensors(dir .. "/merged", rec.result, "merged")
end

------------------------------------------------------------------ the command line

local USAGE = [[
usage: miwb sweep FILE --out DIR [--shard I/N | --shards N] [--args --key value ...]
       miwb sweep merge DIR [--sweep FILE] [--args --key value ...]
       miwb sweep status DIR [--watch SECONDS]
  FILE returns {name, items, run, reduce, setup, args} (docs/sweeps.md).
  Shard I of N runs the items i with i %% N == I. Without --shard the index comes from
  SLURM_ARRAY_TASK_ID (N: SLURM_ARRAY_TASK_COUNT or --shards), JOB_COMPLETION_INDEX (Kubernetes
  Indexed Jobs; --shards N) or PARALLEL_SEQ (GNU parallel; --shards N); with none, one process runs
  every item and merges. Rerunning a worker skips its finished items.
  Exit status: 0 when every item of the shard (merge: of the sweep) succeeded, 1 otherwise.
]]

-- splits argv into runner options and the sweep's own (after --args)
local function parse_cli(argv, allowed)
  local opts, rest = {positional = {}}, nil
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if rest then
      rest[#rest + 1] = a
    elseif a == "--args" then
      rest = {}
    elseif a == "-h" or a == "--help" then
      opts.help = true
    elseif a:match("^%-%-") then
      local key = a:sub(3)
      if not allowed[key] then
        error(("sweep: unknown option %s (the sweep's own options go after --args; see miwb sweep --help)"):format(a), 0)
      end
      local v = argv[i + 1]
      if v == nil then error(("sweep: %s needs a value"):format(a), 0) end
      opts[key] = v
      i = i + 1
    else
      opts.positional[#opts.positional + 1] = a
    end
    i = i + 1
  end
  opts.args = rest
  return opts
end

function M.cli(argv)
  local ok, code = pcall(function()
    local sub = argv[1]
    if sub == nil or sub == "-h" or sub == "--help" then
      io.stdout:write((USAGE:gsub("%%%%", "%%")))
      return sub == nil and 2 or 0
    end
    if sub == "merge" or sub == "status" then
      local rest = table.move(argv, 2, #argv, 1, {})
      local o = parse_cli(rest, sub == "merge" and {sweep = true} or {watch = true})
      if o.help then io.stdout:write((USAGE:gsub("%%%%", "%%"))) return 0 end
      if #o.positional ~= 1 then error(("sweep: %s wants one folder, the sweep's --out"):format(sub), 0) end
      local dir = o.positional[1]
      if not exists(dir .. "/manifest.json") then
        error(("sweep: %s has no manifest.json: is it a sweep's --out folder?"):format(dir), 0)
      end
      if sub == "merge" then
        M.merge(dir, {sweep = o.sweep, args = o.args})
        return 0
      end
      if o.args then error("sweep: status takes no --args", 0) end
      return M.status(dir, {watch = o.watch}) and 0 or 1
    end
    local o = parse_cli(argv, {out = true, shard = true, shards = true})
    if o.help then io.stdout:write((USAGE:gsub("%%%%", "%%"))) return 0 end
    if #o.positional ~= 1 then error("sweep: one sweep file is needed (see miwb sweep --help)", 0) end
    if not o.out then error("sweep: --out DIR is needed: the folder where results go", 0) end
    if o.shards then
      o.shards = math.tointeger(tonumber(o.shards))
      if not o.shards or o.shards < 1 then error("sweep: --shards wants a positive integer", 0) end
    end
    local nfailed, N = M.run(o.positional[1], {out = o.out, shard = o.shard, shards = o.shards, args = o.args})
    if nfailed > 0 then return 1 end
    if N == 1 then M.merge(o.out, {sweep = o.positional[1], args = o.args}) end
    return 0
  end)
  if not ok then
    io.stderr:write(tostring(code), "\n")
    return 1
  end
  return code
end

function M._install(miwb)
  mi = miwb
  mi.cli = mi.cli or {}
  mi.cli.sweep = M.cli
end

return M
