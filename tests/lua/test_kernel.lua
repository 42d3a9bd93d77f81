-- test_kernel.lua: the Jupyter kernel (lua/lkernel.c, lua/miwb/kernel.lua). The transport's
-- signing and splitting against RFC 4231's HMAC-SHA256 vectors and hand-made frames; then the
-- whole kernel through a real client, tests/kernel_client.py (jupyter_client; SKIP when absent).
local T = require("testlib")
local mi = require("miwb")
local K = mi.kernel
local BUILD = os.getenv("MIWB_BUILD") or "build"

T.test("sign: RFC 4231 HMAC-SHA256 test cases 1 and 2, over four frames", function()
  T.eq(mi._kernel.sign(string.rep("\11", 20), "Hi", " ", "Th", "ere"),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
  T.eq(mi._kernel.sign("Jefe", "what do ya want ", "for nothing?", "", ""),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
end)

local function frames(key, header, ids)
  local parts = {header, "{}", "{}", "{}"}
  local list = {}
  for _, id in ipairs(ids or {}) do list[#list + 1] = id end
  list[#list + 1] = "<IDS|MSG>"
  list[#list + 1] = key ~= "" and mi._kernel.sign(key, table.unpack(parts)) or ""
  for _, p in ipairs(parts) do list[#list + 1] = p end
  return list
end

T.test("split: identities, the four JSON frames, buffers; signatures checked", function()
  local f = frames("k", '{"msg_type":"kernel_info_request"}', {"id1", "id2"})
  f[#f + 1] = "buf"
  local m = assert(mi._kernel.split(f, "k"))
  T.eq(#m.identities, 2); T.eq(m.identities[2], "id2")
  T.eq(m.header, '{"msg_type":"kernel_info_request"}'); T.eq(m.content, "{}")
  T.eq(#m.buffers, 1); T.eq(m.buffers[1], "buf")
  local _, why = mi._kernel.split(f, "other key")
  T.eq(why, "bad signature")
  f[4] = f[4]:upper()   -- the signature is compared exactly, as Jupyter signs it (lower-case hex)
  T.eq(select(2, mi._kernel.split(f, "k")), "bad signature")
  T.eq(select(2, mi._kernel.split({"a", "b"}, "k")), "no <IDS|MSG> delimiter")
  T.eq(select(2, mi._kernel.split({"<IDS|MSG>", "", "{}"}, "")), "fewer than 5 frames after the delimiter")
  -- an empty key means unsigned messages (Jupyter's rule): any signature frame passes
  T.truthy(mi._kernel.split({"<IDS|MSG>", "whatever", "{}", "{}", "{}", "{}"}, ""))
end)

T.test("decode: JSON parts must be objects and the header must name msg_type", function()
  local ok = K.decode{identities = {}, buffers = {}, header = '{"msg_type":"x"}', parent_header = "{}",
                      metadata = "{}", content = '{"code":"1"}'}
  T.eq(ok.header.msg_type, "x"); T.eq(ok.content.code, "1")
  local _, why = K.decode{header = "{", parent_header = "{}", metadata = "{}", content = "{}"}
  T.truthy(why:find("^header"), why)
  _, why = K.decode{header = "[]", parent_header = "{}", metadata = "{}", content = "{}"}
  T.truthy(why:find("msg_type"), why)
  _, why = K.decode{header = '{"msg_type":"x"}', parent_header = "{}", metadata = "{}", content = "3"}
  T.eq(why, "content is not a JSON object")
end)

T.test("a cell's last line, when an expression, is its value", function()
  T.eq(select(2, pcall(K.compile_cell("cell_a = 2\ncell_a * 21", "=t"))), 42)
  T.eq(select("#", K.compile_cell("cell_b = 1\ncell_b = 2", "=t")()), 0)
  T.eq(K.compile_cell("for i = 1, 2 do\n  cell_c = i\nend", "=t")(), nil)
  T.eq(cell_c, 2)
  T.eq(K.compile_cell("local cell_d = 5\ncell_d", "=t")(), 5)   -- top-level locals stay (mi.repl)
  local f, msg = K.compile_cell("x = = 1\nx", "=t")
  T.truthy(not f and msg:find("t:1:", 1, true), msg)  -- the error of the cell as written
end)

T.test("kernelspec folders as jupyter kernelspec install chooses them", function()
  T.eq(K.kernelspec_dir{prefix = "/opt/x/"}, "/opt/x/share/jupyter/kernels/miwb")
  T.eq(K.kernelspec_dir{}, "/usr/local/share/jupyter/kernels/miwb")
  T.eq(K.kernelspec_dir{prefix = "/p", name = "lua2"}, "/p/share/jupyter/kernels/lua2")
  T.truthy(not pcall(K.kernelspec_dir, {name = "../evil"}))
  T.truthy(not pcall(K.kernelspec_dir, {user = true, prefix = "/p"}))
  local ok, err = pcall(K.install, {prefx = "/p"})
  T.truthy(not ok and err:find("unknown option 'prefx'"), err)
end)

T.test("text sent to Jupyter is valid UTF-8 and huge text is cut", function()
  T.eq(K.utf8_clean("a\255b\192"), "a\239\191\189b\239\191\189")
  T.eq(K.utf8_clean("héllo"), "héllo")
  local s = K.abbreviate(string.rep("é", 100), 11)
  T.eq(s, string.rep("é", 5) .. "\n... (190 more bytes not shown)")
end)

T.test("mi.display outside a kernel prints; bad options are refused", function()
  T.eq(K.bundle("x.png")["text/plain"], "x.png") -- a missing file is shown as text
  local html = K.bundle(mi.arange(4))["text/html"]
  T.truthy(html:find("<td style=\"text-align:right\">3</td>", 1, true), html)
  local ok, err = pcall(mi.display, 1, {mine = "text/html"})
  T.truthy(not ok and err:find("unknown option 'mine'"), err)
  local e = mi.html.html_escape("<a href=\"x\">&'</a>")
  T.eq(e, "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;")
end)

T.test("tensor HTML table: 12 of 30 rows and columns, the corners' values", function()
  local t = mi.arange(900):view(30, 30)
  local html = K.tensor_html(t)
  local _, rows = html:gsub("<tr>", "")
  T.eq(rows, 1 + 13)            -- header, 6 + ellipsis + 6
  T.truthy(html:find(">899<", 1, true) and html:find(">29<", 1, true) and not html:find(">15<", 1, true))
  T.truthy(K.tensor_html(mi.arange(24):view(2, 3, 4)):find("showing [0, :, :]", 1, true))
end)

T.test("kept fuzz inputs (tests/fuzz/kernel) go through split, decode and handle", function()
  local n, handled = 0, 0
  for _, name in ipairs(assert(mi.sys.listdir("tests/fuzz/kernel"))) do
    local f = assert(io.open("tests/fuzz/kernel/" .. name, "rb"))
    local data = f:read("a")
    f:close()
    local ok, what = pcall(K.fuzz_one, data)
    if not ok then error(name .. ": " .. tostring(what)) end
    n = n + 1
    if what == "handled" then handled = handled + 1 end
  end
  T.truthy(n >= 6 and handled >= 6, "inputs " .. n .. ", handled " .. handled)
end)

-- the whole kernel through jupyter_client
local py = "/usr/bin/python3"
local probe = io.popen(py .. " -c 'import jupyter_client, zmq' 2>&1")
local probe_out = probe:read("a")
local have = probe:close()
if not have then
  print("SKIP - kernel through jupyter_client: python3-jupyter-client is not installed (make notebook-deps): " ..
        probe_out:gsub("\n.*", ""))
else
  local p = io.popen(py .. " tests/kernel_client.py " .. BUILD .. "/miwb 2>&1")
  local out = p:read("a")
  local ok = p:close()
  io.write(out)
  if not ok and not out:find("FAIL - ") then
    T.test("tests/kernel_client.py ran to the end", function() error(out:sub(-2000)) end)
  end
end

T.done()
