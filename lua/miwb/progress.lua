-- miwb.progress: a progress bar for long loops, drawn on stderr only when it is a terminal
-- (logs and pipes stay clean).
--   local bar = mi.progress.bar("ablation", 24)   bar:update(i)   bar:done()
-- or as a callback for library functions: opts.progress = mi.progress.callback("ablation")
local M = {}

local function tty() local mi = require("miwb"); return mi.isatty and mi.isatty(2) end

local Bar = {}
Bar.__index = Bar

function M.bar(label, total, opts)
  opts = opts or {}
  local self = setmetatable({label = label or "", total = total, n = 0, t0 = os.clock(),
                             enabled = opts.force or tty(), last = -1}, Bar)
  return self
end

local function fmt_time(s)
  if s ~= s or s == math.huge then return "?" end
  if s >= 3600 then return ("%dh%02dm"):format(s // 3600, (s % 3600) // 60) end
  if s >= 60 then return ("%dm%02ds"):format(s // 60, s % 60) end
  return ("%.0fs"):format(s)
end

function Bar:update(n, extra)
  self.n = n
  if not self.enabled then return end
  local frac = self.total and self.total > 0 and math.min(n / self.total, 1) or 0
  local pct = math.floor(frac * 100)
  if pct == self.last and n ~= self.total and not extra then return end
  self.last = pct
  local width = 30
  local fill = math.floor(frac * width)
  local el = os.clock() - self.t0
  local eta = frac > 0 and el / frac - el or math.huge
  io.stderr:write(("\r%s [%s%s] %3d%% %d/%s eta %s%s"):format(self.label, ("#"):rep(fill),
    ("."):rep(width - fill), pct, n, tostring(self.total or "?"), fmt_time(eta),
    extra and ("  " .. extra) or ""))
  io.stderr:flush()
end

function Bar:done()
  if self.enabled then io.stderr:write("\n"); io.stderr:flush() end
end

-- a function(i, total) suitable as opts.progress of the analysis functions
function M.callback(label)
  local bar
  return function(i, total)
    bar = bar or M.bar(label, total)
    bar:update(i)
    if i >= total then bar:done() end
  end
end

return M
