-- induction_seeds.lua: the bundled model's recipe trained under many seeds, one seed per item,
-- recording when induction heads form (docs/sweeps.md).
--
--   miwb sweep scripts/sweeps/induction_seeds.lua --out results/seeds          (tiny: seconds)
--
-- Each item trains a 2-layer attention-only shortformer model from scratch with mi.train (seed =
-- --seed0 + item, which seeds both the initial weights and the data order) on the token stream of
-- --text, with a fraction of rows that repeat random ids (--random_frac) or their own opening
-- (--repeat_frac), as scripts/train_attn_only.lua does. Every --every steps it measures each
-- head's induction score on repeated random tokens (mi.train.induction_scores, seq_len
-- (n_ctx - 1) / 2 capped at 50). "Formed" is the first measured step where the best layer-1 head
-- scores at least --threshold. Merge writes, per seed, the formation step, the final scores
-- [L, H] and the curve of the best layer-1 score; the fraction of seeds that formed heads; and
-- figures/induction_curves.png.
--
-- The defaults are tiny, so that the sweep runs in seconds (d_model 64, 4 heads, n_ctx 32, 300
-- steps of 8 rows, every row opening with repeated random ids): too few steps for heads to form.
-- At this size --steps 5000 can show the phase change, depending on the seed: with the earlier
-- weight init seed 0's best layer-1 score went 0.30 (step 2000) -> 0.62 (2250) -> 0.83 (5000), in
-- 34 s of CPU; with today's counter-based init (core/rng.c) seed 0 forms none in 5000 steps (0.13).
-- The real size is the bundled model's recipe (models/attn_only_2L/README.md; about 20 minutes a
-- seed on 2 cores, heads forming between steps 9,000 and 10,500):
--   --args --text data/corpus/train.txt --d_model 128 --n_heads 8 --d_head 16 --n_ctx 256
--          --steps 11000 --batch 8 --lr 0.003 --min_lr 0.0003 --warmup 100 --weight_decay 0.05
--          --repeat_frac 0.3 --random_frac 0.3 --every 500 --n_seeds 16
local mi = require("miwb")

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

return {
  name = "induction_seeds",
  args = {text = "", tokenizer = "", n_seeds = 4, seed0 = 0,
          d_model = 64, n_heads = 4, d_head = 16, n_ctx = 32, steps = 300, batch = 8, lr = 0.01, min_lr = 0.001,
          warmup = 20, weight_decay = 0.05, repeat_frac = 0, random_frac = 1.0, every = 25, threshold = 0.4},

  setup = function(ctx)
    local a = ctx.args
    local root = ctx.file:match("^(.*)/scripts/sweeps/[^/]*$") or "."
    ctx.tokenizer = a.tokenizer ~= "" and a.tokenizer or root .. "/models/attn_only_2L/tokenizer.json"
    ctx.text = a.text ~= "" and a.text or root .. "/models/attn_only_2L/README.md"
    for _, p in ipairs({ctx.tokenizer, ctx.text}) do
      if not exists(p) then error("induction_seeds: cannot read " .. p, 0) end
    end
  end,

  items = function(ctx) return ctx.args.n_seeds end,

  run = function(i, ctx)
    local a = ctx.args
    local seed = a.seed0 + i
    -- this process's own token file; the mapping outlives the name
    local tokfile = ("%s/items/tokens-%s-%d.tmp"):format(ctx.dir, mi.sys.hostname(), mi.sys.getpid())
    mi.tokenize_dataset(ctx.tokenizer, {ctx.text}, tokfile)
    local ds = mi.Dataset(tokfile)
    os.remove(tokfile)
    local cfg = {model_name = "attn_only_2L", d_model = a.d_model, d_head = a.d_head, n_heads = a.n_heads, n_layers = 2,
                 n_ctx = a.n_ctx, d_vocab = ds.vocab, attn_only = true, normalization_type = "None",
                 positional_embedding_type = "shortformer", use_attn_result = true, seed = seed}
    local seq_len = math.min(50, (a.n_ctx - 1) // 2)
    local H = a.n_heads
    local steps, best, formed = {}, {}, nil
    local function measure(step, trainer)
      local r = mi.train.induction_scores(trainer, {seq_len = seq_len, batch = 10, seed = 0})
      local l1 = r.scores[1]:max():item()
      steps[#steps + 1], best[#best + 1] = step, l1
      if not formed and l1 >= a.threshold then formed = step end
      return r
    end
    local trainer, history = mi.train(cfg, ds, {steps = a.steps, batch = a.batch, lr = a.lr, min_lr = a.min_lr,
      warmup = a.warmup, weight_decay = a.weight_decay, repeat_frac = a.repeat_frac, random_frac = a.random_frac,
      seed = seed, progress = false, every = a.every, callback = function(step, tr) measure(step, tr) end})
    local final = mi.train.induction_scores(trainer, {seq_len = seq_len, batch = 10, seed = 0})
    local _, head = final.scores:view(-1):max(0)
    head = head:item()
    return {seed = seed, formed_step = formed or -1, final_scores = final.scores, final_loss = history[#history].loss,
            best_head = ("%d.%d"):format(head // H, head % H), curve_steps = steps, curve_best_l1 = best,
            gap = final.gap}
  end,

  reduce = function(results, ctx)
    local seeds, formed, curves, names, n_formed = {}, {}, {}, {}, 0
    for k, r in ipairs(results) do
      seeds[k], formed[k] = r.seed, r.formed_step
      if r.formed_step >= 0 then n_formed = n_formed + 1 end
      curves[k], names[k] = r.curve_best_l1, "seed " .. r.seed
    end
    if #results > 0 and #results[1].curve_steps > 0 then
      mi.plot.line(curves, {x = results[1].curve_steps, labels = names, out = ctx.figures, name = "induction_curves",
        title = "best layer-1 induction score while training, one line per seed", xlabel = "step",
        ylabel = "induction score"})
    end
    local finals = {}
    for k, r in ipairs(results) do finals[k] = r.final_scores end
    return {seeds = seeds, formed_step = formed, fraction_formed = n_formed / math.max(#results, 1),
            final_scores = mi.stack(finals), per_seed = results}
  end,
}
