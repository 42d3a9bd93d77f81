-- test_cli.lua: the miwb program: options, scripts and their args, exit codes, subcommands,
-- the REPL over piped stdin, and `require "miwb"` from the stock lua5.4 interpreter.
local T = require("testlib")

local MIWB = arg[-1] or "build/miwb"
if MIWB:sub(1, 1) ~= "/" then MIWB = os.getenv("PWD") .. "/" .. MIWB end
local BUILD = os.getenv("MIWB_BUILD") or "build"

local q, run = T.shq, T.sh

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute("mkdir -p " .. q(tmpdir)))
local function write(name, text)
  local path = tmpdir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

T.test("-e runs code, in order, exit 0", function()
  local out, code = run(MIWB .. " -e 'x = 20' -e 'print(x + 22)'")
  T.eq(out, "42\n")
  T.eq(code, 0)
end)

T.test("-e error: message with traceback on stderr, exit 1", function()
  local out, code = run(MIWB .. " -e 'local function f() error(\"boom\") end f()'")
  T.eq(code, 1)
  T.truthy(out:find("boom", 1, true), "message")
  T.truthy(out:find("stack traceback:", 1, true), "traceback")
  T.truthy(out:find("in local 'f'", 1, true) or out:find("in function 'f'", 1, true) or
           out:find("in upvalue 'f'", 1, true), "the frame of f: " .. out)
end)

T.test("-e syntax error: exit 1", function()
  local out, code = run(MIWB .. " -e 'x = = 1'")
  T.eq(code, 1)
  T.truthy(out:find("unexpected symbol", 1, true), out)
end)

T.test("--help and -h: usage on stdout, exit 0", function()
  for _, opt in ipairs{"--help", "-h"} do
    local out, code = run(MIWB .. " " .. opt)
    T.eq(code, 0)
    T.truthy(out:find("usage: miwb", 1, true), out)
    T.truthy(out:find("-e CODE", 1, true), out)
  end
end)

T.test("--version names miwb, the module version and Lua 5.4", function()
  local out, code = run(MIWB .. " --version")
  T.eq(code, 0)
  T.eq(out, "miwb " .. require("miwb").version .. " (" .. _VERSION:gsub("Lua ", "Lua ", 1) ..
       out:match("Lua 5%.4(%.%d+)") .. ")\n")
end)

T.test("unknown option: usage on stderr, exit 2", function()
  local out, code = run(MIWB .. " --frobnicate")
  T.eq(code, 2)
  T.truthy(out:find("unknown option '--frobnicate'", 1, true), out)
  local out2, code2 = run(MIWB .. " -e")
  T.eq(code2, 2)
  T.truthy(out2:find("'-e' needs an argument", 1, true), out2)
end)

T.test("script: arg table as lua.c, varargs, exit 0", function()
  local path = write("args.lua", [[
    local n = select('#', ...)
    print(arg[0]:match("[^/]*$"), arg[1], arg[2], arg[3], n, (...))
    print(arg[-1] ~= nil, #arg)
  ]])
  local out, code = run(MIWB .. " " .. q(path) .. " one 'two words' -e")
  T.eq(code, 0)
  T.eq(out, "args.lua\tone\ttwo words\t-e\t3\tone\ntrue\t3\n")
end)

T.test("script: os.exit code, error exit 1, missing file exit 1", function()
  local p = write("exit3.lua", "os.exit(3)")
  local _, code = run(MIWB .. " " .. q(p))
  T.eq(code, 3)
  p = write("err.lua", "local t = nil\nprint(t.x)")
  local out, code2 = run(MIWB .. " " .. q(p))
  T.eq(code2, 1)
  T.truthy(out:find("err.lua:2: attempt to index a nil value", 1, true), out)
  local out3, code3 = run(MIWB .. " " .. q(tmpdir .. "/nope.lua"))
  T.eq(code3, 1)
  T.truthy(out3:find("cannot open", 1, true), out3)
end)

T.test("scripts load the module with require('miwb'); -e runs before the script", function()
  local p = write("req.lua", "local mi = require('miwb'); print(type(mi), mi == require('miwb'), X)")
  local out, code = run(MIWB .. " -e X=5 " .. q(p))
  T.eq(code, 0)
  T.eq(out, "table\ttrue\t5\n")
end)

T.test("mi is a global in -e code, scripts and stdin scripts; mi.print pretty-prints", function()
  local out, code = run(MIWB .. " -e 'print(mi.zeros(2))'")
  T.eq(code, 0)
  T.eq(out, "tensor([0., 0.], shape=[2])\n")
  local p = write("glob.lua", "mi.print({'a', 'b'}, mi.ones(1))")
  out, code = run(MIWB .. " " .. q(p))
  T.eq(code, 0)
  T.eq(out, '{"a", "b"}\ttensor([1.], shape=[1])\n')
  out, code = run("printf 'mi.pp({x = 1})' | " .. MIWB .. " -")
  T.eq(code, 0)
  T.eq(out, "{x = 1}\n")
end)

T.test("'-' runs standard input as a script", function()
  local out, code = run("printf 'print(1 + 2)\\nprint(...)\\n' | " .. MIWB .. " - a b")
  T.eq(code, 0)
  T.eq(out, "3\na\tb\n")
end)

T.test("unknown command: exit 2 with a hint", function()
  local out, code = run("cd " .. q(tmpdir) .. " && " .. MIWB .. " frobnicate x")
  T.eq(code, 2)
  T.truthy(out:find("unknown command 'frobnicate'", 1, true), out)
end)

T.test("a file named like a command runs as a script when no command exists", function()
  write("hello", "print('hi from ' .. arg[0], ...)")
  local out, code = run("cd " .. q(tmpdir) .. " && " .. MIWB .. " hello 1")
  T.eq(code, 0)
  T.eq(out, "hi from hello\t1\n")
end)

T.test("subcommand: calls require('miwb').cli[NAME](args), its number is the exit code", function()
  -- MIWB_LUA_DIR makes the module read its Lua files from a folder: copy them there with an
  -- init.lua that adds cli.echo on top of the real one
  local dir = tmpdir .. "/luadir"
  assert(os.execute("mkdir -p " .. q(dir .. "/miwb") .. " && cp lua/miwb/*.lua " .. q(dir .. "/miwb/")))
  local f = assert(io.open(dir .. "/miwb/init.lua", "w"))
  f:write(([[
    local chunk = assert(loadfile(%q))
    local mi = chunk(...)
    mi.cli = {
      echo = function(args) print(#args, table.concat(args, "|"), arg[0]) return 7 end,
      fail = function() error("cli failure") end,
      ok = function() end,
    }
    return mi
  ]]):format(os.getenv("PWD") .. "/lua/miwb/init.lua"))
  f:close()
  local env = "MIWB_LUA_DIR=" .. q(dir) .. " "
  local out, code = run(env .. MIWB .. " echo a 'b c' --x")
  T.eq(out, "3\ta|b c|--x\techo\n")
  T.eq(code, 7)
  local out2, code2 = run(env .. MIWB .. " fail")
  T.eq(code2, 1)
  T.truthy(out2:find("cli failure", 1, true), out2)
  local _, code3 = run(env .. MIWB .. " ok")
  T.eq(code3, 0)
  local help = run(env .. MIWB .. " --help")
  T.truthy(help:find("\nCommands: echo fail ok\n", 1, true), help)
  local out4, code4 = run(env .. MIWB .. " nope")
  T.eq(code4, 2)
  T.truthy(out4:find("(commands: echo, fail, ok)", 1, true) or
           out4:find("commands:", 1, true), out4)
end)

-- the REPL reads piped stdin without readline: prompts go to stdout, errors to stderr
local function repl(input, opts)
  local path = write("input.txt", input)
  return run(MIWB .. " " .. (opts or "") .. " < " .. q(path))
end

T.test("REPL: banner, bare expressions printed, statements silent, exit 0 at EOF", function()
  local out, code = repl("1 + 1\nx = 10\nx * 3\n'str', nil, 2.5\n")
  T.eq(code, 0)
  T.truthy(out:find("^miwb " .. require("miwb").version:gsub("%.", "%%.")), out)
  T.truthy(out:find("global `mi`", 1, true), out)
  local body = out:gsub("^[^\n]*\n[^\n]*\n", "")
  T.eq(body, "> 2\n> > 30\n> str\tnil\t2.5\n> \n")
end)

T.test("REPL: multi-line input with continuation prompt", function()
  local out, code = repl("function f(a)\n  return a * 2\nend\nf(21)\nfor i = 1, 2 do\nprint(i)\nend\n")
  T.eq(code, 0)
  local body = out:gsub("^[^\n]*\n[^\n]*\n", "")
  T.eq(body, "> >> >> > 42\n> >> >> 1\n2\n> \n")
end)

T.test("REPL: errors show a traceback and the REPL goes on", function()
  local out, code = repl("error('first')\nlocal t = nil; t.x = 1\n40 + 2\n")
  T.eq(code, 0)
  T.truthy(out:find("stdin:1: first", 1, true), out)
  T.truthy(out:find("stack traceback:", 1, true), out)
  T.truthy(out:find("attempt to index a nil value", 1, true), out)
  T.truthy(out:find("> 42\n", 1, true), out)
end)

T.test("REPL: an incomplete chunk at EOF is a syntax error, not a hang", function()
  local out, code = repl("for i = 1, 3 do\n")
  T.eq(code, 0)
  T.truthy(out:find("'end' expected", 1, true), out)
end)

T.test("REPL: tables shown one level deep, keys sorted; global mi", function()
  local out = repl("{1, 'two', {3}, a = 1, b = {x = 1, y = 2}, [10] = true}\n{}\ntype(mi), mi == require('miwb')\n")
  T.truthy(out:find('> {1, "two", {...} (1 entry), [10] = true, a = 1, b = {...} (2 entries)}\n', 1, true), out)
  T.truthy(out:find("> {}\n", 1, true), out)
  T.truthy(out:find("> table\ttrue\n", 1, true), out)
end)

T.test("REPL: tensors pretty-printed; inside tables summarized by shape and dtype", function()
  local out = repl("mi.tensor{{1, 2}, {3, 4}}\n{w = mi.zeros(2, 3), n = 1}\nt = mi.ones(2)\nt\n")
  T.truthy(out:find("> tensor([[1., 2.],\n        [3., 4.]], shape=[2,2])\n", 1, true), out)
  T.truthy(out:find("> {n = 1, w = tensor(shape=[2,3], float32)}\n", 1, true), out)
  T.truthy(out:find("> tensor([1., 1.], shape=[2])\n", 1, true), out)
end)

T.test("REPL: a tensor error names the op and shapes, and the REPL goes on", function()
  local out, code = repl("mi.zeros(2, 3):matmul(mi.zeros(4, 5))\n1 + 1\n")
  T.eq(code, 0)
  T.truthy(out:find("matmul: [2,3] @ [4,5]", 1, true), out)
  T.truthy(out:find("> 2\n", 1, true), out)
end)

T.test("REPL: '=expr' prints like 'return expr'", function()
  local out = repl("=3 * 7\n")
  T.truthy(out:find("> 21\n", 1, true), out)
end)

T.test("REPL: `local y = 5` then `y` keeps y; help(f) shows a signature and a doc line", function()
  local out, code = repl("local y = 5\ny\nlocal function dbl(v) return 2 * v end\ndbl(y)\n" ..
                         "help(mi.utils.get_act_name)\n")
  T.eq(code, 0)
  T.truthy(out:find("> > 5\n> > 10\n", 1, true), out)
  T.truthy(out:find("mi.utils.get_act_name(name, layer, layer_type)\n  ", 1, true), out)
end)

T.test("-i runs the script, then the REPL sees its globals", function()
  local p = write("setg.lua", "G = 123\nprint('script ran')")
  local out, code = repl("G + 1\n", "-i " .. q(p))
  T.eq(code, 0)
  T.truthy(out:find("^script ran\n"), out)
  T.truthy(out:find("> 124\n", 1, true), out)
end)

T.test("require 'miwb' works from the stock lua5.4 with LUA_CPATH", function()
  local cmd = "LUA_CPATH=" .. q(BUILD .. "/?.so") .. " lua5.4 -e " ..
    q("local mi = require('miwb'); print(type(mi), mi.version, type(mi.json.encode), " ..
      "mi.tensor{{1, 2}, {3, 4}}:matmul(mi.tensor{1, 1}):totable()[2])")
  local out, code = run(cmd)
  if out:find("ASan runtime does not come first", 1, true) then
    -- the sanitizer build's module needs its runtime loaded first into the stock interpreter
    out, code = run("LD_PRELOAD=$(cc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 " .. cmd)
  end
  T.eq(code, 0)
  T.eq(out, "table\t" .. require("miwb").version .. "\tfunction\t7.0\n")
end)

T.test("Ctrl-C (SIGINT) interrupts a running script with 'interrupted!'", function()
  -- the script says "started" once it runs (so the handler is in place: a slow start, as under
  -- ASan, must not swallow the signal); it gives up by itself after 30 s rather than hang
  local p = write("loop.lua", "io.stdout:write('started\\n'); io.stdout:flush()\n" ..
                              "local t0 = os.time(); while os.time() - t0 < 30 do end\n" ..
                              "print('not interrupted')")
  local log = tmpdir .. "/loop.out"
  local out, code = run("(" .. MIWB .. " " .. q(p) .. " > " .. q(log) .. " 2>&1 & pid=$!; i=0; " ..
    "while ! grep -q started " .. q(log) .. " && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; " ..
    "kill -INT $pid; wait $pid; rc=$?; cat " .. q(log) .. "; exit $rc)")
  T.eq(code, 1)
  T.truthy(out:find("interrupted!", 1, true), out)
  T.truthy(out:find("started", 1, true), out)
  T.truthy(not out:find("not interrupted", 1, true), out)
end)

-- The interactive REPL on a pseudo-terminal (util-linux `script`): Tab completion, Ctrl-C at the
-- prompt and during a computation, the history file. Each input is sent once the output shows
-- the REPL is ready for it, so a slow start (ASan) changes nothing.
local function have(cmd) return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") end
if not (have("script") and have("mkfifo")) then
  print("SKIP - REPL on a terminal: util-linux script or mkfifo not found")
else
-- runs the REPL on a terminal with HOME=tmpdir/NAME; steps are shell lines that write to fd 3
-- (the terminal's input) and `waitfor TEXT` (waits until the output holds TEXT, at most 20 s).
-- Returns the output and the exit status.
local function tty_session(name, steps)
  local home = tmpdir .. "/" .. name
  assert(os.execute("mkdir -p " .. q(home)))
  local fifo, out = tmpdir .. "/" .. name .. ".in", tmpdir .. "/" .. name .. ".out"
  local sh = {
    "mkfifo " .. q(fifo),
    "HOME=" .. q(home) .. " TERM=dumb script -qfec " .. q(MIWB) .. " /dev/null < " .. q(fifo) ..
      " > " .. q(out) .. " 2>&1 & pid=$!",
    "exec 3>" .. q(fifo),
    "waitfor() { i=0; while ! grep -aqF -- \"$1\" " .. q(out) ..
      " && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; }",
    "waitfor 'Ctrl-C interrupts'",
  }
  for _, step in ipairs(steps) do sh[#sh + 1] = step end
  sh[#sh + 1] = "wait $pid; rc=$?; exec 3>&-; cat " .. q(out) .. "; exit $rc"
  return run("sh " .. q(write(name .. ".sh", table.concat(sh, "\n"))))
end

T.test("REPL on a terminal: completion, Ctrl-C at the prompt and in a loop, history", function()
  local home = tmpdir .. "/home"
  local text, code = tty_session("home", {
    "printf 'mi.zer\\t(2)\\n' >&3; waitfor 'shape=[2]'",
    "printf 'abc' >&3; waitfor '> abc'; printf '\\003' >&3; waitfor 'abc^C'",
    "printf 'while true do end\\n' >&3; waitfor 'while true do end'; sleep 0.3; printf '\\003' >&3",
    "waitfor 'interrupted!'",
    "printf '2+3\\n' >&3; waitfor '5'; sleep 0.2; printf '\\004' >&3",
  })
  T.eq(code, 0, "exit status")
  T.truthy(text:find("mi.zeros(2)", 1, true) or text:find("os(2)", 1, true), "completion: " .. text)
  T.truthy(text:find("tensor([0., 0.], shape=[2])", 1, true), "completed call ran: " .. text)
  T.truthy(text:find("abc^C", 1, true), "Ctrl-C at the prompt: " .. text)
  T.truthy(text:find("interrupted!", 1, true), "Ctrl-C in a loop: " .. text)
  T.truthy(text:find("\n5\r?\n") or text:find("5\r\n", 1, true), "the REPL went on: " .. text)
  local f = assert(io.open(home .. "/.miwb_history"))
  local hist = f:read("a")
  f:close()
  T.eq(hist, "mi.zeros(2)\nwhile true do end\n2+3\n", "history holds the completed lines, not the dropped one")
end)

T.test("REPL on a terminal: Tab completes model: and cache: methods", function()
  -- each line prints a word its echo does not hold, so the next input waits for it to run
  local text, code = tty_session("home2", {
    "printf 'local model = mi.from_pretrained_no_processing(\"models/attn_only_2L\") print(\"rea\" .. \"dy1\")\\n' >&3",
    "waitfor 'ready1'",
    "printf 'local _, cache = model:run_with_cache(\"ab\") print(\"rea\" .. \"dy2\")\\n' >&3; waitfor 'ready2'",
    "printf 'model:to_str_t\\t(\"ab\")\\n' >&3; waitfor 'endoftext'",
    "printf '#cache:ke\\t()\\n' >&3; waitfor 'cache:keys()'; sleep 0.3; printf '\\004' >&3",
  })
  T.eq(code, 0, "exit status")
  T.truthy(text:find("model:to_str_tokens(\"ab\")", 1, true), "model: completed: " .. text)
  T.truthy(text:find('{"<|endoftext|>", ', 1, true), "the completed call ran: " .. text)
  T.truthy(text:find("#cache:keys()", 1, true), "cache: completed: " .. text)
end)
end

os.execute("rm -rf " .. q(tmpdir))
T.done()
