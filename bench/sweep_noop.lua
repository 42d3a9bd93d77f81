-- The sweep bench/bench_sweep.lua times: --n items that do almost nothing (each returns a
-- 64-float tensor and a number), so the time is the runner's; --model true loads the bundled
-- model in setup, as a real sweep's worker would.
local mi = require("miwb")

return {
  name = "noop",
  args = {n = 0, model = false},
  setup = function(ctx)
    if ctx.args.model then
      local root = ctx.file:match("^(.*)/bench/[^/]*$") or "."
      ctx.model = mi.experiment.load_model(root .. "/models/attn_only_2L")
    end
  end,
  items = function(ctx) return ctx.args.n end,
  run = function(i) return {x = mi.full({64}, i), v = i / 7} end,
}
