-- A small sweep for tests/lua/test_sweep.lua: item i draws a 3x4 tensor from generator i.
-- --fail_at K makes item K raise; the environment variable SWEEP_TEST_HANG=K makes item K write
-- DIR/hanging and spin (up to 20 s) so that a test can kill its worker there.
local mi = require("miwb")

return {
  name = "tiny",
  args = {fail_at = -1, scale = 1.0},
  items = 12,
  run = function(i, ctx)
    if i == ctx.args.fail_at then error("item " .. i .. " fails on purpose") end
    if tostring(i) == os.getenv("SWEEP_TEST_HANG") then
      local f = assert(io.open(ctx.dir .. "/hanging", "w")); f:write(tostring(mi.sys.getpid())); f:close()
      local t0 = mi.monotonic()
      while mi.monotonic() - t0 < 20 do end
    end
    local x = mi.randn({3, 4}, mi.Generator(i)) * ctx.args.scale
    return {x = x, s = x:sum():item(), label = "item " .. i, odd = i % 2 == 1}
  end,
  reduce = function(results, ctx)
    local xs, sums, total = {}, {}, 0
    for k, r in ipairs(results) do
      xs[k] = r.x
      sums[k] = r.s
      total = total + r.s
    end
    return {xs = mi.stack(xs), sums = sums, total = total, n = #results, first_label = results[1].label}
  end,
}
