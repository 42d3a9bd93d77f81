-- mi.kernel: a Jupyter kernel for miwb (messaging protocol 5.3), and mi.display.
--
--   miwb kernel install [--user | --prefix P] [--name N]   writes the kernelspec (kernel.json)
--   miwb kernel -f CONNECTION_FILE                         the kernel process Jupyter starts
--   mi.kernel.install(opts) -> folder        mi.kernel.serve(connection_info)
--   mi.display(x [, opts])  shows x in the notebook: a tensor as an HTML table (abbreviated as
--                           print abbreviates), an image path (.png .svg .jpg .gif) as the image,
--                           an .html path or a string starting with "<" as HTML, anything else as
--                           the REPL prints it; opts.mime forces a MIME type ("text/html", ...) and
--                           opts.text its plain-text stand-in. Outside a kernel it prints the text.
--
-- Cells share one Lua state, the REPL's: globals persist, `mi` is preloaded, top-level locals stay
-- (mi.repl.compile), a bare expression is the cell's result (execute_result, printed as the REPL
-- prints it). print, io.write and io.stdout:write / io.stderr:write become stream messages. A
-- figure drawn by mi.plot appears inline (mi.plot.autoshow is on, mi.plot.show displays), and a
-- cell whose value is the path of a figure it showed shows no result beside it.
-- An error replies with the Lua message and traceback and the kernel goes on (execute requests
-- already queued behind it are answered "aborted", as IPython does); an interrupt (SIGINT,
-- Jupyter's default, or interrupt_request on the control channel) stops a running cell as Ctrl-C does
-- in the REPL. A malformed or wrongly signed message is logged on stderr and dropped.
-- The transport (ZeroMQ, HMAC-SHA256, heartbeat and control threads) is lua/lkernel.c (mi._kernel).
local K = {}

local mi, core, json

K.protocol_version = "5.3"
K.max_stream = 100000   -- bytes of print output kept per cell and stream; the rest is counted
K.max_result = 20000    -- characters of an execute_result or display text
K.html_rows = 12        -- rows and columns of a tensor's HTML table before "..."

-- log(fmt, ...): the kernel's own messages (dropped messages, handler bugs) on stderr, which
-- Jupyter shows in its console
local raw_write = getmetatable(io.stderr).__index.write   -- the file method, before capture
function K.log(fmt, ...)
  raw_write(io.stderr, "[miwb kernel] ", string.format(fmt, ...), "\n")
  io.stderr:flush()
end
local function log(...) return K.log(...) end

-- s as valid UTF-8: JSON text must be; bytes that are not become U+FFFD
local function utf8_clean(s)
  if utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local len = utf8.len(s, i)
    if len then out[#out + 1] = s:sub(i); break end
    local _, bad = utf8.len(s, i)
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = "\239\191\189"
    i = bad + 1
  end
  return table.concat(out)
end
K.utf8_clean = utf8_clean

local function abbreviate(s, limit)
  s = utf8_clean(s)
  if #s <= limit then return s end
  local cut = utf8.offset(s, utf8.len(s, 1, limit) or 1) or limit
  return s:sub(1, cut - 1) .. string.format("\n... (%d more bytes not shown)", #s - cut + 1)
end
K.abbreviate = abbreviate

---------------------------------------------------------------------------------------------------
-- rich display
---------------------------------------------------------------------------------------------------

local html = require("miwb.html")
local html_escape = html.html_escape

local function read_file(path) return (mi.utils.read_file(path)) end

local IMAGE_TYPES = {png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif",
                     svg = "image/svg+xml"}

local function fmt_value(v)
  if v ~= v then return "nan" end
  if math.type(v) == "integer" then return tostring(v) end
  return string.format("%.4g", v)
end

-- a tensor as an HTML table: the last two dims, rows and columns cut in the middle past K.html_rows
local function tensor_html(t)
  local shape = t:shape()
  local caption = string.format("tensor shape [%s], %s", table.concat(shape, ", "), t:dtype())
  local x = t
  local lead = {}
  while #x:shape() > 2 do lead[#lead + 1] = 0; x = x[0] end
  if #lead > 0 then caption = caption .. string.format(" (showing [%s, :, :])", table.concat(lead, ", ")) end
  if #x:shape() == 0 then
    return "<div><b>" .. html_escape(caption) .. "</b>: " .. fmt_value(x:item()) .. "</div>"
  end
  if #x:shape() == 1 then x = x:view(1, -1) end
  local R, C = x:shape()[1], x:shape()[2]
  local function picks(n)
    local h = K.html_rows // 2
    if n <= K.html_rows then local l = {} for i = 0, n - 1 do l[#l + 1] = i end return l end
    local l = {}
    for i = 0, h - 1 do l[#l + 1] = i end
    l[#l + 1] = false
    for i = n - h, n - 1 do l[#l + 1] = i end
    return l
  end
  local rows, cols = picks(R), picks(C)
  local out = {"<table class=\"miwb-tensor\" style=\"font-family:monospace;font-size:12px\"><caption>",
               html_escape(caption), "</caption><tr><th></th>"}
  for _, j in ipairs(cols) do out[#out + 1] = "<th>" .. (j and j or "&hellip;") .. "</th>" end
  out[#out + 1] = "</tr>"
  for _, i in ipairs(rows) do
    out[#out + 1] = "<tr><th>" .. (i and i or "&vellip;") .. "</th>"
    for _, j in ipairs(cols) do
      if i and j then
        local v = x[{i, j}]:item()
        if type(v) == "boolean" then v = v and "true" or "false" else v = fmt_value(v) end
        out[#out + 1] = "<td style=\"text-align:right\">" .. v .. "</td>"
      else
        out[#out + 1] = "<td>&hellip;</td>"
      end
    end
    out[#out + 1] = "</tr>"
  end
  out[#out + 1] = "</table>"
  return table.concat(out)
end
K.tensor_html = tensor_html

-- the MIME bundle shown for x: {["text/plain"] = ..., ...}
function K.bundle(x, opts)
  opts = opts or {}
  local show = mi.repl and mi.repl.show or tostring
  if opts.mime then
    if type(x) ~= "string" then error("mi.display: opts.mime needs a string to show", 3) end
    local data = {["text/plain"] = utf8_clean(opts.text or string.format("(%s, %d bytes)", opts.mime, #x))}
    if opts.mime:match("^image/") and opts.mime ~= "image/svg+xml" then data[opts.mime] = core._kernel.base64(x)
    else data[opts.mime] = utf8_clean(x) end
    return data
  end
  if mi.is_tensor and mi.is_tensor(x) then
    return {["text/plain"] = abbreviate(tostring(x), K.max_result), ["text/html"] = tensor_html(x)}
  end
  if type(x) == "string" then
    local ext = x:match("%.(%a+)$")
    ext = ext and ext:lower()
    if ext and IMAGE_TYPES[ext] and not x:find("\n") then
      local bytes = read_file(x)
      if bytes then
        local mime = IMAGE_TYPES[ext]
        return {["text/plain"] = utf8_clean(x), [mime] = mime == "image/svg+xml" and utf8_clean(bytes)
                                                               or core._kernel.base64(bytes)}
      end
    end
    if ext == "html" and not x:find("\n") then
      local text = read_file(x)
      if text then return {["text/plain"] = utf8_clean(x), ["text/html"] = utf8_clean(text)} end
    end
    if x:match("^%s*<") then
      return {["text/plain"] = string.format("(HTML, %d bytes)", #x), ["text/html"] = utf8_clean(x)}
    end
    return {["text/plain"] = abbreviate(x, K.max_result)}
  end
  return {["text/plain"] = abbreviate(show(x), K.max_result)}
end

-- the kernel sets this while serving: function(bundle, x, opts) publishes display_data
K.publish_display = nil

-- display(x [, opts]): opts.mime ("text/html", "image/png", ...) shows the string x as that type,
-- opts.text is then its plain-text stand-in (default: the type and size). Returns nothing.
function K.display(x, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("mi.display(x, opts): opts must be a table such as {mime = \"text/html\"}", 2)
  end
  for k in pairs(opts or {}) do
    if k ~= "mime" and k ~= "text" then
      error("mi.display: unknown option '" .. tostring(k) .. "' (known: mime, text)", 2)
    end
  end
  local data = K.bundle(x, opts)
  if K.publish_display then K.publish_display(data, x, opts)
  else io.stdout:write(data["text/plain"], "\n") end
end

---------------------------------------------------------------------------------------------------
-- kernelspec
---------------------------------------------------------------------------------------------------

-- the folder a kernelspec goes to, as `jupyter kernelspec install` chooses it
function K.kernelspec_dir(opts)
  local name = opts.name or "miwb"
  if not name:match("^[%w%._%-]+$") then
    error("miwb kernel install: --name must be letters, digits, '.', '_' or '-', got '" .. name .. "'", 0)
  end
  if opts.user and opts.prefix then error("miwb kernel install: give --user or --prefix, not both", 0) end
  local base
  if opts.prefix then
    base = opts.prefix:gsub("/+$", "") .. "/share/jupyter"
  elseif opts.user then
    base = os.getenv("JUPYTER_DATA_DIR")
    if not base or base == "" then
      local xdg = os.getenv("XDG_DATA_HOME")
      local home = os.getenv("HOME")
      if (not xdg or xdg == "") and (not home or home == "") then
        error("miwb kernel install --user: HOME is not set", 0)
      end
      base = ((xdg and xdg ~= "") and xdg or home .. "/.local/share") .. "/jupyter"
    end
  else
    base = "/usr/local/share/jupyter"
  end
  return base .. "/kernels/" .. name
end

-- install{user =, prefix =, name =, program =} -> the kernelspec folder. program is the miwb
-- program Jupyter will start (default: the running one).
function K.install(opts)
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "user" and k ~= "prefix" and k ~= "name" and k ~= "program" then
      error("mi.kernel.install: unknown option '" .. tostring(k) .. "' (known: user, prefix, name, program)", 2)
    end
  end
  local program = opts.program or core._kernel.exe()
  if not program or not program:match("miwb[^/]*$") then
    error("miwb kernel install: run it from the miwb program (this is " .. tostring(program) ..
          "), or pass program = '/path/to/miwb'", 0)
  end
  local dir = K.kernelspec_dir(opts)
  html.mkdir_p("miwb kernel install", dir)
  local spec = {argv = {program, "kernel", "-f", "{connection_file}"}, display_name = "miwb (Lua 5.4)",
                language = "lua", interrupt_mode = "signal", metadata = json.object()}
  html.write_atomic("miwb kernel install", dir .. "/kernel.json", json.encode(spec, {indent = true}) .. "\n")
  return dir
end

---------------------------------------------------------------------------------------------------
-- messages
---------------------------------------------------------------------------------------------------

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(n) or tostring(os.time()) .. tostring({})
  if f then f:close() end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end)):sub(1, 2 * n)
end

local function iso_date()
  local t = core._kernel.now()
  return os.date("!%Y-%m-%dT%H:%M:%S") .. string.format(".%06dZ", math.floor((t % 1) * 1e6))
end

-- a received message (frames already split and signature-checked) with its JSON decoded; nil, why
-- when a part is not JSON or not an object, or the header lacks msg_type
function K.decode(raw)
  local msg = {identities = raw.identities, buffers = raw.buffers, header_json = raw.header}
  for _, part in ipairs{"header", "parent_header", "metadata", "content"} do
    local ok, v = pcall(json.decode, raw[part])
    if not ok then return nil, part .. ": " .. tostring(v) end
    if type(v) ~= "table" then return nil, part .. " is not a JSON object" end
    msg[part] = v
  end
  if type(msg.header.msg_type) ~= "string" then return nil, "header has no msg_type" end
  return msg
end

local Kernel = {}
Kernel.__index = Kernel

function Kernel:send(channel, msg_type, content, parent, identities)
  self.counter = self.counter + 1
  local header = {msg_id = self.session .. "_" .. self.counter, session = self.session, username = "miwb",
                  date = iso_date(), msg_type = msg_type, version = K.protocol_version}
  local ok, content_json = pcall(json.encode, content)
  if not ok then
    log("cannot encode %s: %s", msg_type, content_json)
    return
  end
  self.sock:send(channel, identities or {}, json.encode(header), parent and parent.header_json or "{}",
                 "{}", content_json)
end

function Kernel:publish(msg_type, content, parent)
  self:send("iopub", msg_type, content, parent, {"kernel." .. self.session .. "." .. msg_type})
end

function Kernel:reply(channel, req, msg_type, content)
  self:send(channel, msg_type, content, req, req.identities)
end

-- streams: text gathered per stream name, sent at most every 0.1 s and at the end of a cell
function Kernel:stream_write(name, s)
  local st = self.streams[name]
  if st.total >= K.max_stream then st.dropped = st.dropped + #s return end
  if st.total + #s > K.max_stream then
    st.dropped = st.dropped + st.total + #s - K.max_stream
    s = s:sub(1, K.max_stream - st.total)
  end
  st.total = st.total + #s
  st.buf[#st.buf + 1] = s
  st.size = st.size + #s
  if st.size > 8192 or core._kernel.now() - self.last_flush > 0.1 then self:flush() end
end

function Kernel:flush(final)
  self.last_flush = core._kernel.now()
  for _, name in ipairs{"stdout", "stderr"} do
    local st = self.streams[name]
    if final and st.dropped > 0 then
      st.buf[#st.buf + 1] = string.format("\n... (%d more bytes of %s not shown)\n", st.dropped, name)
      st.dropped = 0
    end
    if #st.buf > 0 then
      self:publish("stream", {name = name, text = utf8_clean(table.concat(st.buf))}, self.parent)
      st.buf, st.size = {}, 0
    end
  end
end

function Kernel:reset_streams()
  self.streams = {stdout = {buf = {}, size = 0, total = 0, dropped = 0},
                  stderr = {buf = {}, size = 0, total = 0, dropped = 0}}
end

-- print, io.write and the standard files' write method go to the cell's streams
function Kernel:capture_output()
  local kernel = self
  local stdout, stderr = io.stdout, io.stderr
  local methods = getmetatable(stdout).__index
  local file_write = methods.write
  local function collect(name, ...)
    local parts = table.pack(...)
    for i = 1, parts.n do
      local v = parts[i]
      if type(v) ~= "string" and type(v) ~= "number" then
        error(string.format("bad argument #%d to 'write' (string expected, got %s)", i, type(v)), 3)
      end
      parts[i] = tostring(v)
    end
    kernel:stream_write(name, table.concat(parts, "", 1, parts.n))
  end
  methods.write = function(f, ...)
    if f == stdout then collect("stdout", ...) return f end
    if f == stderr and kernel.parent then collect("stderr", ...) return f end
    return file_write(f, ...)
  end
  io.write = function(...) collect("stdout", ...) return stdout end
  -- no standard input: Jupyter's input requests are not supported, and reading the kernel's own
  -- stdin would block the cell where no interrupt can reach it
  local stdin, file_read = io.stdin, methods.read
  local function no_input() error("io.read: the miwb kernel has no standard input", 3) end
  methods.read = function(f, ...)
    if f == stdin then no_input() end
    return file_read(f, ...)
  end
  io.read = no_input
  local io_lines = io.lines
  io.lines = function(name, ...)
    if name == nil then no_input() end
    return io_lines(name, ...)
  end
  local file_lines = methods.lines
  methods.lines = function(f, ...)
    if f == stdin then no_input() end
    return file_lines(f, ...)
  end
  _G.print = function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    kernel:stream_write("stdout", table.concat(parts, "\t") .. "\n")
  end
end

---------------------------------------------------------------------------------------------------
-- handlers
---------------------------------------------------------------------------------------------------

local handlers = {}

function handlers.kernel_info_request(self, ch, req)
  self:reply(ch, req, "kernel_info_reply", {
    status = "ok", protocol_version = K.protocol_version, implementation = "miwb",
    implementation_version = mi.version,
    language_info = {name = "lua", version = _VERSION:match("[%d%.]+") or "5.4", mimetype = "text/x-lua",
                     file_extension = ".lua", pygments_lexer = "lua", codemirror_mode = "lua"},
    banner = "miwb " .. mi.version .. " (" .. _VERSION .. "), the mechanistic-interpretability workbench",
    help_links = {}})
end

-- traceback lines of the cell's own frames: the kernel's frames below it are cut
local function error_handler(e)
  local msg = e
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then msg = tostring(e) else msg = "(error object is a " .. type(e) .. " value)" end
  end
  local tb = debug.traceback(msg, 2)
  local lines = {}
  for line in (tb .. "\n"):gmatch("([^\n]*)\n") do
    if line:find("miwb/kernel.lua", 1, true) or line:find("in function 'miwb.core._kernel.pcall'", 1, true)
       or line:find("_kernel.pcall", 1, true) then break end
    lines[#lines + 1] = line
  end
  if lines[#lines] == "stack traceback:" then lines[#lines] = nil end
  return {msg = msg, traceback = lines}
end

local function run_user_expressions(exprs)
  local out = {}
  for name, code in pairs(exprs or {}) do
    local f, err = load("return " .. tostring(code), "=user_expression", "t")
    local ok, v
    if f then ok, v = pcall(f) else ok, v = false, err end
    if ok then
      out[name] = {status = "ok", data = K.bundle(v), metadata = json.object()}
    else
      out[name] = {status = "error", ename = "LuaError", evalue = tostring(v), traceback = {tostring(v)}}
    end
  end
  return json.object(out)
end

-- compile_cell(code, chunkname) -> function, or nil, message. As the REPL compiles a line
-- (mi.repl.compile: a bare expression is returned, top-level locals stay), and a cell whose last
-- line is an expression returns it, as a notebook shows the value of a cell's last line.
function K.compile_cell(code, chunkname)
  local f, msg = mi.repl.compile(code, chunkname)
  if f then return f end
  local head, last = code:match("^(.*\n)([^\n]*%S[^\n]*)%s*$")
  if head and not last:match("^%s*%-%-") then
    local g = mi.repl.compile(head .. "return " .. last, chunkname)
    if g then return g end
  end
  return nil, msg
end

function handlers.execute_request(self, ch, req)
  local c = req.content
  local code = type(c.code) == "string" and c.code or ""
  local silent = c.silent == true
  if not silent and c.store_history ~= false then self.count = self.count + 1 end
  local count = self.count
  if not silent then self:publish("execute_input", {code = code, execution_count = count}, req) end
  self:reset_streams()
  self.shown = {}
  local results, err
  local f, msg = K.compile_cell(code, "=In[" .. count .. "]")
  if not f and code:match("^%s*$") then
    results = {n = 0}
  elseif not f then
    err = {ename = "SyntaxError", evalue = msg, traceback = {msg}}
  else
    local r = table.pack(core._kernel.pcall(error_handler, f))
    if r[1] then
      results = table.pack(table.unpack(r, 2, r.n))
    else
      local e = r[2]
      local interrupted = type(e.msg) == "string" and e.msg:match("interrupted!$")
      err = {ename = interrupted and "Interrupted" or "LuaError", evalue = e.msg, traceback = e.traceback}
    end
  end
  if results and results.n > 0 and type(results[1]) == "string" and self.shown[results[1]] then
    results.n = 0
  end
  if results and results.n > 0 and not silent then
    local ok, text = pcall(mi.repl.show, table.unpack(results, 1, results.n))
    if not ok then text = "(cannot show the result: " .. tostring(text) .. ")" end
    self:flush()
    self:publish("execute_result", {execution_count = count, data = {["text/plain"] = abbreviate(text, K.max_result)},
                                    metadata = json.object()}, req)
  end
  self:flush(true)
  if err then
    for i, line in ipairs(err.traceback) do err.traceback[i] = utf8_clean(line) end
    err.evalue = utf8_clean(err.evalue)
    if not silent then self:publish("error", err, req) end
    -- as IPython: the cells queued behind a failed one ("run all") are not run; only those queued
    -- before this reply, so that a cell sent after seeing the error runs
    if c.stop_on_error ~= false then self:abort_queued() end
    self:reply(ch, req, "execute_reply", {status = "error", execution_count = count, ename = err.ename,
                                          evalue = err.evalue, traceback = err.traceback})
  else
    self:reply(ch, req, "execute_reply", {status = "ok", execution_count = count,
                                          user_expressions = run_user_expressions(c.user_expressions),
                                          payload = {}})
  end
end

-- code-point position -> byte position (Jupyter counts cursor positions in code points)
local function byte_pos(code, cursor)
  if type(cursor) ~= "number" or cursor < 0 then return #code end
  -- utf8.offset raises on invalid UTF-8 (a client may send any bytes): count bytes then
  local ok, off = pcall(utf8.offset, code, math.floor(cursor) + 1)
  if not ok then return math.min(math.floor(cursor), #code) end
  return (off or #code + 1) - 1
end

function handlers.complete_request(self, ch, req)
  local code = type(req.content.code) == "string" and req.content.code or ""
  local cursor = req.content.cursor_pos
  if type(cursor) ~= "number" then cursor = utf8.len(code) or #code end
  local before = code:sub(1, byte_pos(code, cursor))
  local word = before:match("[%w_%.:]*$")
  local ok, matches = pcall(mi.repl.complete, word)
  if not ok then matches = {} end
  self:reply(ch, req, "complete_reply", {status = "ok", matches = matches,
                                         cursor_start = cursor - (utf8.len(word) or #word), cursor_end = cursor,
                                         metadata = json.object()})
end

function K.summary(v)
  if mi.is_tensor and mi.is_tensor(v) then
    local lines = {string.format("tensor shape [%s], %s", table.concat(v:shape(), ", "), v:dtype())}
    if v:dtype() == "float32" and v:numel() > 0 then
      lines[#lines + 1] = string.format("min %.6g  max %.6g  mean %.6g", v:min():item(), v:max():item(),
                                        v:mean():item())
    end
    lines[#lines + 1] = tostring(v)
    return table.concat(lines, "\n")
  end
  if type(v) == "function" or type(v) == "table" then
    local ok, s = pcall(mi.repl.help, v)
    if ok and type(v) == "function" then return s end
    if ok then return mi.repl.show(v) .. "\n" .. s end
  end
  return mi.repl.show(v)
end

function handlers.inspect_request(self, ch, req)
  local code = type(req.content.code) == "string" and req.content.code or ""
  local pos = byte_pos(code, req.content.cursor_pos)
  local left = code:sub(1, pos):match("[%w_%.:]*$")
  local right = code:sub(pos + 1):match("^[%w_]*")
  local name = (left .. right):gsub("[%.:]+$", "")
  local v = name ~= "" and mi.repl.lookup(name)
  local content = {status = "ok", found = false, data = json.object(), metadata = json.object()}
  if v ~= nil and v ~= false then
    local ok, text = pcall(K.summary, v)
    if ok then
      content.found = true
      content.data = {["text/plain"] = abbreviate(name .. ": " .. text, K.max_result)}
    end
  end
  self:reply(ch, req, "inspect_reply", content)
end

function handlers.is_complete_request(self, ch, req)
  local code = type(req.content.code) == "string" and req.content.code or ""
  local f, _, incomplete = mi.repl.compile(code, "=cell")
  local status = f and "complete" or (incomplete and "incomplete" or "invalid")
  local content = {status = status}
  if status == "incomplete" then content.indent = "  " end
  self:reply(ch, req, "is_complete_reply", content)
end

function handlers.history_request(self, ch, req)
  self:reply(ch, req, "history_reply", {status = "ok", history = {}})
end

function handlers.comm_info_request(self, ch, req)
  self:reply(ch, req, "comm_info_reply", {status = "ok", comms = json.object()})
end

function handlers.interrupt_request(self, ch, req)
  -- the control thread (lua/lkernel.c) interrupted the running cell when the request arrived
  self:reply(ch, req, "interrupt_reply", {status = "ok"})
end

function handlers.shutdown_request(self, ch, req)
  local content = {status = "ok", restart = req.content.restart == true}
  self:reply(ch, req, "shutdown_reply", content)
  self:publish("shutdown_reply", content, req)
  self.done = true
end

-- a message that passed the transport: busy, the handler (under pcall: a bug in a handler is
-- logged, the kernel goes on), idle. Returns false when the handler raised.
function Kernel:handle(ch, msg)
  local t = msg.header.msg_type
  local h = handlers[t]
  self.parent = msg
  self:publish("status", {execution_state = "busy"}, msg)
  local ok, e = true, nil
  if h then
    ok, e = xpcall(h, debug.traceback, self, ch, msg)
    if not ok then log("error handling %s: %s", t, tostring(e)) end
  else
    log("dropped a %s on %s: unknown message type", t, ch)
  end
  self:flush(true)
  self:publish("status", {execution_state = "idle"}, msg)
  self.parent = nil
  return ok
end

-- the next valid message (channel, msg), from the messages put aside first; nil when none came
-- within timeout_ms
function Kernel:receive(timeout_ms)
  if #self.pending > 0 then
    local p = table.remove(self.pending, 1)
    return p[1], p[2]
  end
  local ch = self.sock:poll(timeout_ms)
  if not ch then return nil end
  local raw, why = self.sock:recv(ch)
  if not raw then
    if why ~= "no message" then log("dropped a message on %s: %s", ch, why) end
    return false
  end
  local msg, why2 = K.decode(raw)
  if not msg then
    log("dropped a message on %s: %s", ch, why2)
    return false
  end
  return ch, msg
end

function Kernel:step(timeout_ms)
  local ch, msg = self:receive(timeout_ms)
  if ch then self:handle(ch, msg) end
  return ch ~= nil
end

-- answers every execute_request already queued "aborted"; other messages wait their turn
function Kernel:abort_queued()
  local keep = {}
  while true do
    local ch, msg = self:receive(0)
    if ch == nil then break end
    if ch == "shell" and msg.header.msg_type == "execute_request" then
      self:publish("status", {execution_state = "busy"}, msg)
      self:reply(ch, msg, "execute_reply", {status = "aborted", execution_count = self.count})
      self:publish("status", {execution_state = "idle"}, msg)
    elseif ch then
      keep[#keep + 1] = {ch, msg}
    end
  end
  self.pending = keep
end

-- new(sock) -> a kernel over a transport: an object with poll, recv, send, close as
-- mi._kernel.open returns (the fuzz target passes one that records what is sent)
function K.new(sock)
  local self = setmetatable({sock = sock, session = random_hex(16), counter = 0, count = 0, last_flush = 0,
                             done = false, shown = {}, pending = {}}, Kernel)
  self:reset_streams()
  return self
end

-- open(info) -> a kernel whose sockets are bound as the connection info says (a table with
-- transport, ip, key, signature_scheme, shell_port, ...); ports 0 are chosen freely
function K.open(info)
  local scheme = info.signature_scheme or "hmac-sha256"
  if scheme ~= "hmac-sha256" then
    error("miwb kernel: signature_scheme " .. tostring(scheme) .. " is not supported (only hmac-sha256)", 0)
  end
  return K.new(core._kernel.open{transport = info.transport, ip = info.ip, key = info.key or "",
    shell_port = info.shell_port or 0, control_port = info.control_port or 0, stdin_port = info.stdin_port or 0,
    iopub_port = info.iopub_port or 0, hb_port = info.hb_port or 0})
end

function K.serve(info)
  local self = K.open(info)
  _G.mi = mi
  if mi.repl and mi.repl.help_command and _G.help == nil then _G.help = mi.repl.help_command end
  self:capture_output()
  K.publish_display = function(data, x, opts)
    self:flush()
    -- a cell whose value is the path of what it just showed (a figure) shows no result
    self.shown[(opts and opts.text) or x] = true
    self:publish("display_data", {data = data, metadata = json.object(), transient = json.object()}, self.parent)
  end
  if mi.plot then
    mi.plot.autoshow = true
    mi.plot.show = function(path) K.display(path) return path end
  end
  self:publish("status", {execution_state = "starting"})
  log("ready (session %s)", self.session)
  while not self.done do
    local ok, err = pcall(self.step, self, -1)
    if not ok then log("error in the message loop: %s", tostring(err)) end
  end
  K.publish_display = nil
  self.sock:close()
  return 0
end

-- fuzz_one(data): one fuzz input through split, decode and handle (fuzz/fuzz_kernel.c, and the
-- kept corpus replayed by tests/lua/test_kernel.lua). The first byte chooses the key (even: none,
-- odd: "k"), the rest is frames separated by "|F|". Raises only on a bug.
local fuzz_kernel
function K.fuzz_one(data)
  if not fuzz_kernel then
    local transport = {}
    function transport.send(_, channel, ids, header, parent, metadata, content)
      assert(type(channel) == "string" and type(ids) == "table")
      for _, part in ipairs{header, parent, metadata, content} do
        assert(type(json.decode(part)) == "table", "a reply part is not a JSON object")
      end
    end
    fuzz_kernel = K.new(transport)
    K.log = function() end
  end
  local key = (data:byte(1) or 0) % 2 == 0 and "" or "k"
  local frames = {}
  for f in (data:sub(2) .. "|F|"):gmatch("(.-)|F|") do frames[#frames + 1] = f end
  local raw, why = core._kernel.split(frames, key)
  if not raw then assert(type(why) == "string") return "refused" end
  local msg, why2 = K.decode(raw)
  if not msg then assert(type(why2) == "string") return "refused" end
  local t = msg.header.msg_type
  if t == "execute_request" or t == "shutdown_request" then return "skipped" end
  assert(fuzz_kernel:handle(t == "interrupt_request" and "control" or "shell", msg), "a handler raised")
  return "handled"
end

---------------------------------------------------------------------------------------------------
-- the command
---------------------------------------------------------------------------------------------------

local USAGE = [[
usage: miwb kernel install [--user | --prefix P] [--name N]
       miwb kernel -f CONNECTION_FILE
  install   writes the Jupyter kernelspec (display name "miwb (Lua 5.4)"): --user in
            ~/.local/share/jupyter/kernels/miwb, --prefix P in P/share/jupyter/kernels/miwb,
            else in /usr/local/share/jupyter/kernels/miwb
  -f FILE   runs the kernel on the connection file Jupyter wrote (Jupyter starts this itself)]]

function K.cli(args)
  if args[1] == "--help" or args[1] == "-h" or #args == 0 then
    io.stdout:write(USAGE, "\n")
    return #args == 0 and 2 or 0
  end
  if args[1] == "install" then
    local opts = {}
    local i = 2
    while i <= #args do
      local a = args[i]
      if a == "--user" then opts.user = true
      elseif a == "--prefix" or a == "--name" then
        if not args[i + 1] then error("miwb kernel install: " .. a .. " needs a value", 0) end
        opts[a:sub(3)] = args[i + 1]
        i = i + 1
      else
        error("miwb kernel install: unknown argument '" .. a .. "'\n" .. USAGE, 0)
      end
      i = i + 1
    end
    local dir = K.install(opts)
    io.stdout:write("installed the miwb kernelspec in ", dir, "\n")
    return 0
  end
  if args[1] == "-f" and args[2] and #args == 2 then
    local info, err = json.read(args[2])
    if not info then error("miwb kernel: cannot read the connection file: " .. tostring(err), 0) end
    if type(info) ~= "table" then error("miwb kernel: " .. args[2] .. " is not a JSON object", 0) end
    return K.serve(info)
  end
  error("miwb kernel: unknown arguments '" .. table.concat(args, " ") .. "'\n" .. USAGE, 0)
end

function K._install(m)
  mi, core, json = m, require("miwb.core"), m.json
  m.display = K.display
  m.cli = m.cli or {}
  m.cli.kernel = K.cli
end

return K
