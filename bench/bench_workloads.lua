-- bench_workloads.lua: issue 17's workloads as a researcher writes them in Lua, on the seed
-- notebook's attention-only shape (d_model 768, 12 heads, 2 layers, vocab 50278, random weights),
-- for 1 and 2 threads (mi.set_num_threads). `make bench` runs it with build/miwb. Ratios within the
-- same run (wall and process CPU time, min of --reps):
--   * `local logits = model(tokens)` in a loop (dropped, collected whenever the collector gets to
--     it) and the same with `run_with_cache`, against `local logits <close> = model(tokens)`
--     (freed at once): 1.0 means dropped outputs cost nothing extra (issue 17's page-fault gap);
--   * mi.analysis.head_ablation_scores over every head (the notebook's zero-ablation of v, loss on
--     the second half) against the notebook's loop of full reruns with a hook (TransformerLens's
--     pattern); issue 17's goal is >= 5x faster than that loop in TransformerLens. Also printed: the
--     floor of any exact method (the 12 layer-0 copies' unembeddings of the slice, plain sgemm) and
--     how much faster than the loop that floor is.
-- Peak memory: bench/bench_memory.lua.
local mi = require("miwb")
local reps = tonumber(os.getenv("REPS") or "") or 2

local function best(n, fn)
  local w, c = math.huge, math.huge
  for _ = 1, n do
    collectgarbage()
    local w0, c0 = mi.monotonic(), os.clock()
    fn()
    w, c = math.min(w, mi.monotonic() - w0), math.min(c, os.clock() - c0)
  end
  return w, c
end

local model = mi.HookedTransformer({d_model = 768, d_head = 64, n_heads = 12, n_layers = 2, n_ctx = 2048,
  d_vocab = 50278, attn_only = true, normalization_type = "None", positional_embedding_type = "shortformer",
  use_attn_result = true, seed = 398})
local seq = 50
local tokens = mi.analysis.generate_repeated_tokens(model, seq, 10, {seed = 0})      -- [10, 101]
local slice = {seq, 2 * seq}

local function naive()
  local base = model(tokens, {return_type = "loss", loss_per_token = true}):narrow(1, slice[1], seq):mean():item()
  local out = mi.zeros(2, 12)
  for l = 0, 1 do
    for h = 0, 11 do
      local per = model:run_with_hooks(tokens, {return_type = "loss", loss_per_token = true,
        fwd_hooks = {{mi.utils.get_act_name("v", l), function(v) v[{{}, {}, h}] = 0 end}}})
      out[{l, h}] = per:narrow(1, slice[1], seq):mean():item() - base
    end
  end
  return out
end

local saved = mi.get_num_threads()
for _, t in ipairs({1, 2}) do
  mi.set_num_threads(t)
  local n = 3
  local wc, cc = best(reps, function() for _ = 1, n do local l <close> = model(tokens) end end)
  local wd, cd = best(reps, function() for _ = 1, n do local l = model(tokens) end end)
  local wr, cr = best(reps, function() for _ = 1, n do local l, c = model:run_with_cache(tokens) end end)
  print(string.format("seed attn-only 10 x 101, %d thr: model(tokens) %.0f ms wall %.0f ms cpu per call freed at once;" ..
                      " dropped %.2fx wall %.2fx cpu; run_with_cache dropped %.2fx wall %.2fx cpu",
                      t, wc / n * 1e3, cc / n * 1e3, wd / wc, cd / cc, wr / wc, cr / cc))
  local got
  local wa, ca = best(1, function() got = mi.analysis.head_ablation_scores(model, tokens, {act = "v", slice = slice}) end)
  local want
  local wn, cn = best(1, function() want = naive() end)
  print(string.format("  head_ablation_scores (24 heads, loss on the second half): %.2f s wall, %.2f s cpu; the notebook's" ..
                      " loop of full reruns %.2f s wall, %.2f s cpu: %.1fx faster (wall), %.1fx (cpu); max difference %.1g",
                      wa, ca, wn, cn, wn / wa, cn / ca, (got - want):abs():max():item()))
  -- The floor of any exact method: a head of layer 0 changes every later layer's input, so each of
  -- its 12 ablated copies has its own final residual, and a loss over the vocabulary needs that
  -- copy's unembedding of the slice's rows ([10*50, 768] @ [768, 50278]): 12 such products, here in
  -- plain sgemm (mi.matmul), against the loop of 25 full passes.
  local rows = mi.randn(tokens:size(0) * seq, 768, {seed = 1})
  local wf, cf = best(1, function() for _ = 1, 12 do local lg <close> = rows:matmul(model.W_U) end end)
  print(string.format("  floor for an exact method (12 unembeddings of the slice, plain sgemm): %.2f s wall, %.2f s cpu;" ..
                      " the loop of reruns is %.1fx (wall) %.1fx (cpu) that: the most any exact method can gain over it",
                      wf, cf, wn / wf, cn / cf))
end
mi.set_num_threads(saved)
