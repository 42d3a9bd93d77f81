-- ablation_grid.lua: every head's ablation score over many prompts, as a sweep (docs/sweeps.md).
--
--   miwb sweep scripts/sweeps/ablation_grid.lua --out results/ablation --args --n_prompts 2000
--
-- The prompts are repeated random tokens, [BOS, R, R] with R --seq_len ids (the seed notebook's
-- induction task); an item is --batch prompts drawn from generator --seed * 100003 + item. For
-- each item, mi.analysis.head_ablation_scores gives every head's loss increase on the second
-- copy of R when its --act ("v" or "z") is ablated (--mode "zero" or "mean", the mean over the
-- item's prompts). Merge writes the scores of every item [items, L, H], their mean and standard
-- error [L, H], the heads ranked by mean score, and the figure figures/ablation_mean.png.
local mi = require("miwb")
local E = mi.experiment
local A = mi.analysis

return {
  name = "ablation_grid",
  args = {model = "", n_prompts = 80, batch = 10, seq_len = 20, act = "v", mode = "zero", seed = 0},

  setup = function(ctx)
    ctx.model = E.load_model(ctx.args.model ~= "" and ctx.args.model or E.default_model())
  end,

  items = function(ctx)
    local a = ctx.args
    if a.n_prompts % a.batch ~= 0 then
      error(("ablation_grid: --n_prompts %d is not a multiple of --batch %d"):format(a.n_prompts, a.batch), 0)
    end
    return a.n_prompts // a.batch
  end,

  run = function(i, ctx)
    local a = ctx.args
    local tokens = A.generate_repeated_tokens(ctx.model, a.seq_len, a.batch, {seed = a.seed * 100003 + i})
    -- loss positions seq_len .. 2 seq_len - 1 predict the second copy of R
    local scores = A.head_ablation_scores(ctx.model, tokens, {act = a.act, mode = a.mode,
                                                              slice = {a.seq_len, 2 * a.seq_len}})
    return {scores = scores}
  end,

  reduce = function(results, ctx)
    local all = {}
    for k, r in ipairs(results) do all[k] = r.scores end
    local scores = mi.stack(all)                                   -- [items, L, H]
    local n = scores:size(0)
    local mean = scores:mean(0)
    local se = n > 1 and (scores:var(0) / n):sqrt() or mi.zeros(mean:shape())
    local L, H = mean:size(0), mean:size(1)
    local ranked, ml = {}, mean:totable()
    for l = 1, L do for h = 1, H do ranked[#ranked + 1] = {name = ("%d.%d"):format(l - 1, h - 1), score = ml[l][h]} end end
    table.sort(ranked, function(x, y) return x.score > y.score end)
    local xs, ys = {}, {}
    for h = 0, H - 1 do xs[h + 1] = tostring(h) end
    for l = 0, L - 1 do ys[l + 1] = tostring(l) end
    mi.plot.imshow(mean, {out = ctx.figures, name = "ablation_mean", x = xs, y = ys, xlabel = "Head", ylabel = "Layer",
      title = ("loss increase when each head's %s is %s-ablated (mean of %d prompts)"):format(ctx.args.act,
        ctx.args.mode, n * ctx.args.batch), palette = "RdBu", midpoint = 0, text_auto = ".2f"})
    return {scores = scores, mean = mean, stderr = se, ranked = ranked}
  end,
}
