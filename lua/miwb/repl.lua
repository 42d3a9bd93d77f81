-- mi.repl: what the miwb REPL (lua/main.c) does in Lua, as plain functions that any front end
-- (the terminal REPL, a Jupyter kernel) can call.
--
--   repl.show(...)            the text a REPL prints for values: tensors in full, tables one level
--                             deep with sorted keys (nested tables and tensors summarized), strings
--                             as they are at the top level; several values separated by tabs
--   repl.print(...)           prints repl.show(...) (also mi.print and mi.pp)
--   repl.complete(word, env)  sorted completions of a word: "mi.ze" -> {"mi.zeros"}, "model:to_s"
--                             -> {"model:to_single_token", "model:to_str_tokens"}; a bare word
--                             completes globals and keywords. Methods come from the object's
--                             metatable: its __index table, or the __methods table that
--                             mi.utils.colon_methods records
--   repl.lookup(path, env)    the value a dotted path names ("mi.plot"), read without calls
--   repl.help(f)              a function's signature and the first line of its doc comment (the
--                             comment above its definition, else its file's header line for it)
--   repl.compile(src, chunkname, env)  -> function, or nil, message, incomplete
--                             src is first tried as `return src` (so a bare expression yields its
--                             values); `=expr` means `return expr`; top-level `local` statements
--                             become global assignments so that `local y = 5` then `y` keeps y
--                             (locals with <const>/<close> stay local); incomplete is true when the
--                             chunk only lacks more lines (`for i = 1, 3 do`)
--   repl.globalize_locals(src) that rewrite alone
local R = {}

local mi

-- ---------------------------------------------------------------- showing values
local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__tostring ~= nil
end

local function brief(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "table" and not has_tostring(v) then
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    return n == 0 and "{}" or ("{...} (" .. n .. (n == 1 and " entry)" or " entries)"))
  end
  if mi and mi.is_tensor and mi.is_tensor(v) then
    return string.format("tensor(shape=[%s], %s)", table.concat(v:shape(), ","), v:dtype())
  end
  local s = tostring(v)
  if #s > 60 then s = s:sub(1, 57) .. "..." end
  return s
end

local function keystr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. brief(k) .. "]"
end

local LIMIT = 40

local function show_table(t)
  local parts, n = {}, #t
  for i = 1, n do
    if i > LIMIT then parts[#parts + 1] = "... (" .. n .. " items)" break end
    parts[#parts + 1] = brief(t[i])
  end
  local keys = {}
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  for i, k in ipairs(keys) do
    if i > LIMIT then parts[#parts + 1] = "... (" .. #keys .. " keys)" break end
    parts[#parts + 1] = keystr(k) .. " = " .. brief(t[k])
  end
  if #parts == 0 then return "{}" end
  local s = "{" .. table.concat(parts, ", ") .. "}"
  if #s > 100 then s = "{\n  " .. table.concat(parts, ",\n  ") .. "\n}" end
  return s
end

function R.show(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "table" and not has_tostring(v) then out[i] = show_table(v)
    else out[i] = tostring(v) end
  end
  return table.concat(out, "\t")
end

function R.print(...)
  io.stdout:write(R.show(...), "\n")
end

-- ---------------------------------------------------------------- completion
local KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
                  "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}

-- the names reachable from v: its own keys (tables), then its metatable's methods, following
-- __index tables up to 8 levels; with only_functions, functions only (for "obj:")
local function names_of(v, only_functions, out)
  local seen = {}
  local function add(t, all)
    for k, val in pairs(t) do
      if type(k) == "string" and k:match("^[%a_][%w_]*$") and not seen[k] and
         (all or not only_functions or type(val) == "function") then
        seen[k] = true
        out[#out + 1] = k
      end
    end
  end
  if type(v) == "table" then add(v) end
  if mi and mi.is_tensor and mi.is_tensor(v) and mi.Tensor then
    add(mi.Tensor)
    if not only_functions then add({T = true}, true) end
    return
  end
  local depth, mt = 0, getmetatable(v)
  while type(mt) == "table" and depth < 8 do
    if type(rawget(mt, "__methods")) == "table" then add(mt.__methods) end
    local idx = rawget(mt, "__index")
    if type(idx) ~= "table" then break end
    add(idx)
    mt = getmetatable(idx)
    depth = depth + 1
  end
end

-- lookup(path, env) -> the value a dotted/colon path names ("mi.plot", "model:run"), read through
-- __index under pcall and never calling anything else; nil when a step is missing or fails
function R.lookup(path, env)
  local v = env or _G
  for name in (path .. "."):gmatch("([^%.:]*)[%.:]") do
    if not name:match("^[%a_][%w_]*$") then return nil end
    local ok, nv = pcall(function() return v[name] end)
    if not ok or nv == nil then return nil end
    v = nv
  end
  return v
end

function R.complete(word, env)
  env = env or _G
  local out, list = {}, {}
  local path, sep, prefix = word:match("^(.*)([%.:])([%w_]*)$")
  if not path then
    names_of(env, false, list)
    for _, k in ipairs(KEYWORDS) do list[#list + 1] = k end
    path, sep, prefix = "", "", word
  else
    local v = R.lookup(path, env)
    if v == nil then return out end
    names_of(v, sep == ":", list)
  end
  table.sort(list)
  local hide_private = prefix:sub(1, 1) ~= "_"
  for _, k in ipairs(list) do
    if k:sub(1, #prefix) == prefix and not (hide_private and k:sub(1, 1) == "_" and sep ~= "") then
      out[#out + 1] = path .. sep .. k
    end
  end
  return out
end

-- ---------------------------------------------------------------- help
local function source_lines(src)
  local text
  if src:sub(1, 1) == "@" then
    local name = src:sub(2)
    text = mi and mi.lua_source and mi.lua_source(name)
    if not text then
      local f = io.open(name, "r")
      if f then text = f:read("a"); f:close() end
    end
  elseif src:sub(1, 1) ~= "=" then
    text = src
  end
  if not text then return nil end
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  return lines
end

-- the first line of the comment block right above line i (blank comment lines skipped)
local function comment_above(lines, i)
  local j = i - 1
  local first
  while j >= 1 and lines[j]:match("^%s*%-%-") do
    local c = lines[j]:match("^%s*%-%-+%s*(.-)%s*$")
    if c ~= "" then first = c end
    j = j - 1
  end
  return first
end

-- the line of the file's header comment that mentions name as a call
local function header_line(lines, short)
  if not short then return nil end
  for _, l in ipairs(lines) do
    if not l:match("^%-%-") then break end
    local c = l:match("^%-%-+%s*(.-)%s*$")
    local s = c:find("[%.:]" .. short .. "%(") or c:find("^" .. short .. "%(")
    if s then return c end
  end
  return nil
end

-- the name TransformerLens users know a function by: mi.X, mi.part.X, or the source's own spelling
-- (every such name of an aliased function, sorted: "mi.empty = mi.zeros")
local function find_name(f)
  if not mi then return nil end
  local names = {}
  for k, v in pairs(mi) do
    if v == f then names[#names + 1] = "mi." .. k end
  end
  if #names == 0 then
    for k, part in pairs(mi) do
      if type(part) == "table" and k ~= "repl" then
        for k2, v in pairs(part) do if v == f then names[#names + 1] = "mi." .. k .. "." .. k2 end end
      end
    end
  end
  if #names == 0 then return nil end
  table.sort(names)
  return table.concat(names, " = ")
end

function R.help(f)
  if f == nil then
    return "help(f): the signature and first doc line of a function, e.g. help(mi.zeros), " ..
           "help(model.run_with_cache); help(mi) lists a module table's functions"
  end
  if type(f) == "table" and not getmetatable(f) then
    local names = {}
    for k, v in pairs(f) do if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" then names[#names + 1] = k end end
    table.sort(names)
    return "functions: " .. table.concat(names, ", ")
  end
  local mt = getmetatable(f)
  if type(f) ~= "function" then
    if type(mt) == "table" and type(rawget(mt, "__methods")) == "table" then
      local names = {}
      for k in pairs(mt.__methods) do if k:sub(1, 1) ~= "_" then names[#names + 1] = k end end
      table.sort(names)
      return tostring(f) .. "\nmethods: " .. table.concat(names, ", ")
    end
    return "help: " .. type(f) .. " " .. tostring(f) .. " is not a function"
  end
  local real = f
  if mi and mi.utils and mi.utils.colon_target then real = mi.utils.colon_target(f) or f end
  local info = debug.getinfo(real, "S")
  local known = find_name(f)
  if info.what == "C" then
    return (known or "function") .. "(...): built-in C function (see the README for its arguments)"
  end
  local lines = source_lines(info.source)
  local line = lines and lines[info.linedefined]
  local sig, short
  if line then
    local name, params = line:match("function%s+([%w_%.:]+)%s*(%b())")
    if not name then
      name, params = line:match("([%w_%.:]+)%s*=%s*function%s*(%b())")
    end
    if not name then params = line:match("function%s*(%b())") end
    if name then short = name:match("([%w_]+)$") end
    if known then
      sig = known .. (params or "(...)")
    elseif name then
      sig = name .. (params or "(...)")
    else
      sig = "function" .. (params or "(...)")
    end
  else
    sig = (known or "function") .. "(...)"
  end
  local doc = lines and (comment_above(lines, info.linedefined) or header_line(lines, short))
  local where = info.short_src .. ":" .. info.linedefined
  return sig .. "\n  " .. (doc or "(no doc comment)") .. "\n  defined at " .. where
end

-- help(f) as the REPL's global: prints repl.help(f)
function R.help_command(f)
  io.stdout:write(R.help(f), "\n")
end

-- ---------------------------------------------------------------- compiling REPL input
-- a small Lua lexer: calls fn(kind, text, start, stop) for each token ("name", "op", "string",
-- "number"); comments and whitespace skipped. Returns false on an unfinished long string/comment.
local function lex(src, fn)
  local i, n = 1, #src
  while i <= n do
    local c = src:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local eq = src:match("^%[(=*)%[", i + 2)
      if eq then
        local s, e = src:find("]" .. eq .. "]", i, true)
        if not e then return false end
        i = e + 1
      else
        local e = src:find("\n", i, true)
        i = e and e + 1 or n + 1
      end
    elseif c == "[" and src:match("^%[=*%[", i) then
      local eq = src:match("^%[(=*)%[", i)
      local _, e = src:find("]" .. eq .. "]", i, true)
      if not e then return false end
      fn("string", src:sub(i, e), i, e)
      i = e + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then j = j + 2
        elseif d == c or d == "\n" then break
        else j = j + 1 end
      end
      fn("string", src:sub(i, j), i, j)
      i = j + 1
    elseif c:match("[%a_]") then
      local s, e = src:find("^[%w_]+", i)
      fn("name", src:sub(s, e), s, e)
      i = e + 1
    elseif c:match("%d") or (c == "." and src:sub(i + 1, i + 1):match("%d")) then
      local s, e = src:find("^[%w_%.]+", i)
      while src:sub(e, e):match("[eEpP]") and src:sub(e + 1, e + 1):match("[%+%-]") do
        local _, e2 = src:find("^[%w_%.]*", e + 2)
        e = e2
      end
      fn("number", src:sub(s, e), s, e)
      i = e + 1
    else
      local op = src:match("^%.%.%.", i) or src:match("^[=~<>]=", i) or src:match("^%.%.", i) or
                 src:match("^::", i) or src:match("^//", i) or src:match("^<<", i) or src:match("^>>", i) or c
      fn("op", op, i, i + #op - 1)
      i = i + #op
    end
  end
  return true
end

local OPEN = {["function"] = true, ["do"] = true, ["if"] = true, ["repeat"] = true}
local CLOSE = {["end"] = true, ["until"] = true}

function R.globalize_locals(src)
  local toks = {}
  if not lex(src, function(kind, text, s, e) toks[#toks + 1] = {kind, text, s, e} end) then return src end
  local edits = {}   -- {start, stop, replacement}
  local depth, paren = 0, 0
  local i = 1
  while i <= #toks do
    local kind, text = toks[i][1], toks[i][2]
    if kind == "op" and (text == "(" or text == "{" or text == "[") then paren = paren + 1
    elseif kind == "op" and (text == ")" or text == "}" or text == "]") then paren = paren - 1
    elseif kind == "name" and OPEN[text] then depth = depth + 1
    elseif kind == "name" and CLOSE[text] then depth = depth - 1
    elseif kind == "name" and text == "local" and depth == 0 and paren == 0 then
      local nxt = toks[i + 1]
      if nxt and nxt[1] == "name" and nxt[2] == "function" then
        edits[#edits + 1] = {toks[i][3], nxt[3] - 1, ""}
      else
        -- local a, b [= ...]: names separated by commas; an attribute keeps the statement local
        local j, ok, attrib = i + 1, true, false
        while true do
          local t = toks[j]
          if not t or t[1] ~= "name" then ok = false break end
          if toks[j + 1] and toks[j + 1][2] == "<" then attrib = true break end
          if toks[j + 1] and toks[j + 1][2] == "," then j = j + 2 else break end
        end
        if ok and not attrib then
          local after = toks[j + 1]
          if after and after[2] == "=" then
            edits[#edits + 1] = {toks[i][3], toks[i + 1][3] - 1, ""}
          else
            edits[#edits + 1] = {toks[i][3], toks[i + 1][3] - 1, ""}
            edits[#edits + 1] = {toks[j][4] + 1, toks[j][4], " = nil"}
          end
        end
      end
    end
    i = i + 1
  end
  for k = #edits, 1, -1 do
    local e = edits[k]
    src = src:sub(1, e[1] - 1) .. e[3] .. src:sub(e[2] + 1)
  end
  return src
end

function R.compile(src, chunkname, env)
  chunkname = chunkname or "=stdin"
  if src:sub(1, 1) == "=" then src = "return " .. src:sub(2) end
  local function compile(text)
    if env then return load(text, chunkname, "t", env) end
    return load(text, chunkname, "t")
  end
  local f = compile("return " .. src .. ";")
  if f then return f end
  local msg
  f, msg = compile(R.globalize_locals(src))
  if f then return f end
  return nil, msg, msg:sub(-5) == "<eof>"
end

-- ---------------------------------------------------------------- install
function R._install(m)
  mi = m
  m.print = R.print
  m.pp = R.print
end

return R
