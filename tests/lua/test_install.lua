-- test_install.lua: `make install` into a temporary DESTDIR, then the installed miwb runs the
-- scripts and the bundled model from another directory, the stock lua5.4 loads the installed
-- module from the place on its own package.cpath, the man page is there; `make uninstall` removes
-- everything it put there.
local T = require("testlib")

local BUILD = os.getenv("MIWB_BUILD") or "build"
local root = os.getenv("PWD")
local tmp = os.tmpname()
os.remove(tmp)
local dest, elsewhere = tmp .. "/dest", tmp .. "/elsewhere"
assert(os.execute("mkdir -p " .. T.shq(elsewhere)))

local prefix = "/usr/local"
local out, code = T.sh(("make -s -C %s install BUILD=%s DESTDIR=%s PREFIX=%s"):format(
  T.shq(root), T.shq(BUILD), T.shq(dest), prefix))

T.test("make install puts the program, module, scripts, model and man page under DESTDIR/PREFIX", function()
  T.eq(code, 0, out)
  for _, f in ipairs{"/bin/miwb", "/lib/lua/5.4/miwb.so", "/share/miwb/scripts/induction.lua",
                     "/share/miwb/models/attn_only_2L/model.safetensors", "/share/man/man1/miwb.1"} do
    local fh = io.open(dest .. prefix .. f, "rb")
    T.truthy(fh, f .. " is installed")
    fh:close()
  end
  local man = T.sh("man -l " .. T.shq(dest .. prefix .. "/share/man/man1/miwb.1") .. " 2>/dev/null | head -3")
  T.truthy(man == "" or man:find("MIWB", 1, true), man)
end)

T.test("the installed miwb runs scripts/induction.lua on the bundled model from another directory", function()
  local text, rc = T.sh(("cd %s && %s scripts/induction.lua --seq_len 20 --batch 2"):format(
    T.shq(elsewhere), T.shq(dest .. prefix .. "/bin/miwb")))
  T.eq(rc, 0, text)
  T.truthy(text:find("share/miwb/models/attn_only_2L", 1, true), "the bundled model, found from the install: " .. text)
  local fh = io.open(elsewhere .. "/plots/induction/results.json")
  T.truthy(fh, "results in the working directory")
  fh:close()
end)

T.test("the stock lua5.4 finds the module where it was installed (on its package.cpath)", function()
  local cpath = T.sh("lua5.4 -e 'io.write(package.cpath)'")
  T.truthy(cpath:find(prefix .. "/lib/lua/5.4/?.so", 1, true), "lua5.4's package.cpath: " .. cpath)
  -- env: variables for lua5.4 itself (after the cd, so that they reach it)
  local function run(env)
    return T.sh(("cd %s && %s LUA_CPATH=%s lua5.4 -e %s"):format(T.shq(elsewhere), env,
      T.shq(dest .. prefix .. "/lib/lua/5.4/?.so"), T.shq('local mi = require "miwb"; io.write(mi.version)')))
  end
  local text, rc = run("")
  if text:find("ASan runtime does not come first", 1, true) then
    -- the sanitizer build's module in a stock interpreter: its runtime must be loaded first
    text, rc = run("LD_PRELOAD=$(cc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0")
  end
  T.eq(rc, 0, text)
  T.eq(text, require("miwb").version)
end)

T.test("make uninstall removes what make install put there", function()
  local text, rc = T.sh(("make -s -C %s uninstall BUILD=%s DESTDIR=%s PREFIX=%s"):format(
    T.shq(root), T.shq(BUILD), T.shq(dest), prefix))
  T.eq(rc, 0, text)
  local left = T.sh("find " .. T.shq(dest) .. " -type f")
  T.eq(left, "", "files left")
end)

os.execute("rm -rf " .. T.shq(tmp))
T.done()
