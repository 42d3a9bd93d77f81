-- miwb: the Lua face of the mechanistic-interpretability workbench.
-- The C core arrives as "miwb.core"; the rest of the library is Lua, one file per area
-- (lua/miwb/NAME.lua). Each part returns a table, reachable as mi.NAME; a part with an
-- `_install(mi)` function also adds names at the top level (e.g. mi.HookedTransformer).
local core = require("miwb.core")

local mi = {}
for k, v in pairs(core) do mi[k] = v end

mi.version = "0.1.0"

-- The order matters: later parts build on earlier ones.
local PARTS = {"tensor", "json", "utils", "factored", "cache", "model", "families", "pretrained",
               "plot", "progress", "analysis", "train", "wordnet", "toy", "experiment", "repl",
               "metrics", "patching", "steering", "sae", "sweep"}

-- the notebook parts (after plot and repl): HTML views (mi.plot.attention_html) and the Jupyter kernel
PARTS[#PARTS + 1] = "html"
PARTS[#PARTS + 1] = "kernel"

for _, name in ipairs(PARTS) do
  local part = require("miwb." .. name)
  if type(part) == "table" then
    if part._install then part._install(mi) end
    if mi[name] == nil then mi[name] = part end
  end
end

return mi
