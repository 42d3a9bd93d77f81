-- hooks_ablation.lua: editing activations with hooks (the seed notebook's section 3):
-- induction scores through a pattern hook, the same with the positional embedding zeroed,
-- and the loss increase on the second copy of a repeated sequence when each head's value
-- vectors are zero-ablated (and mean-ablated).
--   miwb scripts/hooks_ablation.lua [--model M] [--seed S] [--out DIR] [--seq_len 50] [--batch 10]
local mi = require("miwb")
local A, E = mi.analysis, mi.experiment

local args = E.parse_args(arg, "hooks_ablation", {seq_len = 50, batch = 10}, {
  seq_len = "length of the random sequence that is repeated", batch = "sequences per batch"})
local model, model_name = E.load_model(args.model)
print("model: " .. model_name)
local tokens = A.generate_repeated_tokens(model, args.seq_len, args.batch, {seed = args.seed})

local scores = A.induction_scores(model, tokens)
local zero_pos = A.induction_scores(model, tokens, {extra_hooks = {{
  function(n) return n == "hook_pos_embed" end, function(x) x:zero_() end}}})
print("induction scores:"); print(scores)
print("induction scores with the positional embedding zero-ablated:"); print(zero_pos)

local slice = {args.seq_len, 2 * args.seq_len}     -- predictions of the second copy
local zero_abl = A.head_ablation_scores(model, tokens, {act = "v", mode = "zero", slice = slice,
  progress = mi.progress.callback("zero ablation")})
local mean_abl = A.head_ablation_scores(model, tokens, {act = "v", mode = "mean", slice = slice,
  progress = mi.progress.callback("mean ablation")})
print("loss increase on the second copy, zero-ablating each head's v:"); print(zero_abl)
print("the same, mean-ablating:"); print(mean_abl)

local ind = A.heads_above(scores, 0.5)
local clean = model(tokens, {return_type = "loss", loss_per_token = true})
local kept = A.ablate_all_except(model, tokens, ind, {loss_per_token = true})
local function second(l) return l:narrow(1, slice[1], slice[2] - slice[1]):mean():item() end
print(("second-copy loss: clean %.3f, all heads but the induction heads (%s) ablated %.3f")
  :format(second(clean), E.heads_str(ind), second(kept)))

local H = {}
for h = 0, model.cfg.n_heads - 1 do H[#H + 1] = tostring(h) end
local figs = {
  scores = mi.plot.imshow(scores, {title = "Induction score by head", xlabel = "Head", ylabel = "Layer",
    x = H, text_auto = ".2f", range = {0, 1}, out = args.out .. "/induction_scores.png"}),
  zero_pos = mi.plot.imshow(zero_pos, {title = "Induction score, positional embedding zeroed",
    xlabel = "Head", ylabel = "Layer", x = H, text_auto = ".2f", range = {0, 1},
    out = args.out .. "/induction_scores_no_pos.png"}),
  ablation = mi.plot.imshow(zero_abl, {title = "Loss increase from zero-ablating each head (second copy)",
    xlabel = "Head", ylabel = "Layer", x = H, text_auto = ".2f", out = args.out .. "/ablation_zero.png"}),
  ablation_mean = mi.plot.imshow(mean_abl, {title = "Loss increase from mean-ablating each head (second copy)",
    xlabel = "Head", ylabel = "Layer", x = H, text_auto = ".2f", out = args.out .. "/ablation_mean.png"}),
}
for _, p in pairs(figs) do print("figure: " .. p) end
print("results: " .. E.write_results(args.out, {model = model_name, seed = args.seed,
  seq_len = args.seq_len, batch = args.batch, induction_scores = scores,
  induction_scores_no_pos = zero_pos, zero_ablation = zero_abl, mean_ablation = mean_abl,
  induction_heads = ind, second_copy_loss_clean = second(clean),
  second_copy_loss_only_induction_heads = second(kept), figures = figs}))
