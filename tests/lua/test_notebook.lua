-- test_notebook.lua: notebooks/intro_mech_interp.ipynb runs end to end in the miwb kernel through
-- `jupyter nbconvert --to notebook --execute` (SKIP without nbconvert: `make notebook-deps`), with
-- no error, its figures inline, and the findings the bundled model is known for
-- (tests/lua/test_bundled.lua measures them independently).
local T = require("testlib")
local mi = require("miwb")
local BUILD = os.getenv("MIWB_BUILD") or "build"

local function sh(cmd)
  local out, code = T.sh(cmd)
  return code == 0, out
end

if not sh("command -v jupyter-nbconvert || jupyter nbconvert --version") or
   not io.open("models/attn_only_2L/config.json") then
  print("SKIP - notebook: jupyter nbconvert (make notebook-deps) or the bundled model is missing")
  T.done()
  return
end

local tmp = os.tmpname()
os.remove(tmp)
local ok, out = sh(("%s/miwb kernel install --prefix %s"):format(BUILD, tmp))
assert(ok, out)

T.test("nbconvert --execute runs notebooks/intro_mech_interp.ipynb without an error", function()
  -- run from a folder of its own (the model linked in), so that its figures land there and a
  -- second test run at the same time cannot overwrite them
  local pwd = T.sh("pwd"):gsub("\n$", "")
  local nb = T.shq(tmp .. "/nb")
  assert(sh(("mkdir -p %s && cp notebooks/intro_mech_interp.ipynb %s/ && ln -s %s %s/models")
            :format(nb, nb, T.shq(pwd .. "/models"), nb)))
  local cmd = ("cd %s/nb && JUPYTER_PATH=%s/share/jupyter timeout 900 jupyter nbconvert --to notebook " ..
               "--execute --ExecutePreprocessor.timeout=600 --output-dir %s intro_mech_interp.ipynb"):format(tmp, tmp, tmp)
  local ran, log = sh(cmd)
  T.truthy(ran, "nbconvert failed:\n" .. log:sub(-3000))
  local nb = assert(mi.json.read(tmp .. "/intro_mech_interp.ipynb"))
  local code, images, views, tokviews, errors, text = 0, 0, 0, 0, {}, {}
  for _, cell in ipairs(nb.cells) do
    if cell.cell_type == "code" then
      code = code + 1
      T.truthy(cell.execution_count ~= mi.json.null, "every code cell ran")
      for _, o in ipairs(cell.outputs) do
        if o.output_type == "error" then errors[#errors + 1] = o.evalue end
        if o.output_type == "stream" then
          text[#text + 1] = type(o.text) == "table" and table.concat(o.text) or o.text
        end
        local data = o.data or {}
        if data["image/png"] then images = images + 1 end
        local html = data["text/html"]
        if type(html) == "table" then html = table.concat(html) end
        if html and html:find('class="miwb-attn"', 1, true) then views = views + 1 end
        if html and html:find('class="miwb-tokview"', 1, true) then tokviews = tokviews + 1 end
      end
    end
  end
  T.eq(#errors, 0, "errors: " .. table.concat(errors, "; "))
  T.truthy(code >= 20, "code cells: " .. code)
  T.truthy(images >= 10, "inline figures: " .. images)
  T.eq(views, 2, "interactive attention views")
  T.eq(tokviews, 1, "coloured-token views")
  local all = table.concat(text)
  T.truthy(all:find("induction heads (score > 0.5): 1.1, 1.4", 1, true), "the induction heads are found")
end)

T.sh("rm -rf " .. T.shq(tmp))
T.done()
