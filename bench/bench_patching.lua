-- bench_patching.lua: activation patching's cost against the same number of full forward passes
-- (`make bench` runs it with build/miwb). For each model, the whole
-- get_act_patch_attn_head_out_all_pos grid (one patched run per layer and head, plus the corrupted
-- run it makes first) is timed against n_layers * n_heads plain model(corrupted) calls on the same
-- tokens, in the same run. Process CPU time, min of 3; OPENBLAS_NUM_THREADS=1 is advised.
-- The grid is timed with a plain Lua metric (every patched logit computed) and with
-- mi.metrics.logit_diff (only the last position's). The goal of issue 14 is a ratio <= 0.6.
local mi = require("miwb")

local function cpu_min(n, fn)
  local best = math.huge
  for _ = 1, n do
    collectgarbage()
    local t0 = os.clock()
    fn()
    best = math.min(best, os.clock() - t0)
  end
  return best
end

local function bench(label, model, B, P)
  local g = mi.Generator(1)
  local clean = mi.randint(0, model.cfg.d_vocab, {B, P}, g)
  local corrupted = clean:clone()
  corrupted[{{}, P // 3}] = mi.randint(0, model.cfg.d_vocab, {B}, g)
  local _, cache = model:run_with_cache(clean, {names_filter = function(n) return n:find("hook_z", 1, true) end})
  local function metric(logits)
    local last = logits:select(1, -1)
    return (last:select(1, 1) - last:select(1, 2)):mean():item()
  end
  local n = model.cfg.n_layers * model.cfg.n_heads
  model(corrupted)   -- warm the buffers
  local t_full = cpu_min(3, function() for _ = 1, n do local l <close> = model(corrupted) end end)
  local t_patch = cpu_min(3, function() mi.patching.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, metric) end)
  -- the same metric as mi.metrics.logit_diff, which says it reads the last position only
  local ld = mi.metrics.logit_diff(1, 2, -1)
  local t_pos = cpu_min(3, function() mi.patching.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, ld) end)
  print(string.format("%-30s %2d x %3d  %3d patches  full %.3f s  | Lua metric %.3f s ratio %.2f" ..
                      "  | mi.metrics.logit_diff %.3f s ratio %.2f",
                      label, B, P, n, t_full, t_patch, t_patch / t_full, t_pos, t_pos / t_full))
end

local bundled = mi.from_pretrained_no_processing("models/attn_only_2L")
bench("bundled attn_only_2L", bundled, 8, 16)
bench("bundled attn_only_2L", bundled, 1, 64)
local seed = mi.HookedTransformer({d_model = 768, d_head = 64, n_heads = 12, n_layers = 2, n_ctx = 2048,
  d_vocab = 50278, attn_only = true, normalization_type = "None", positional_embedding_type = "shortformer",
  use_attn_result = true, seed = 398})
bench("seed attn-only shape (random)", seed, 4, 32)
