-- induction.lua: find the induction heads of a model and draw them (the seed notebook's
-- "Finding induction heads" section).
--   miwb scripts/induction.lua [--model M] [--seed S] [--out DIR] [--seq_len 50] [--batch 10]
-- Runs the model on [BOS, R, R] (R = seq_len random tokens), reports the log-prob of the first
-- and second copy, the induction score of every head (attention from each token of the second
-- copy to the token after its first occurrence), the induction and previous-token heads, and
-- draws the loss per position, the scores and the induction heads' attention patterns.
local mi = require("miwb")
local A, E = mi.analysis, mi.experiment

local args = E.parse_args(arg, "induction", {seq_len = 50, batch = 10, threshold = 0.5,
                                             prev_threshold = 0.35}, {
  seq_len = "length of the random sequence R in [BOS, R, R]", batch = "sequences for the induction scores",
  threshold = "induction score above which a head is an induction head",
  prev_threshold = "previous-token score above which a head is a previous-token head"})
local model, model_name = E.load_model(args.model)
local cfg = model.cfg
print(("model: %s (%d layers x %d heads, d_model %d, d_vocab %d)"):format(model_name,
  cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_vocab))

-- one sequence, cached, for the loss per position and the pictures
local tokens1, logits1, cache = A.run_and_cache_model_repeated_tokens(model, args.seq_len, 1,
  {seed = args.seed})
local log_probs = A.get_log_probs(logits1, tokens1)[0]          -- [2*seq_len]
local first = log_probs:narrow(0, 0, args.seq_len):mean():item()
local second = log_probs:narrow(0, args.seq_len, args.seq_len):mean():item()
print(("log-prob of the first copy: %.3f   of the second copy: %.3f   (difference %.3f nats)")
  :format(first, second, second - first))

-- induction scores on a batch, through a hook (no cache)
local scores = A.induction_scores(model, nil, {seq_len = args.seq_len, batch = args.batch,
                                               seed = args.seed + 1})
local induction_heads = A.heads_above(scores, args.threshold)
cache:remove_batch_dim()
local prev_scores, prev_heads = A.prev_attn_detector(model, cache, args.prev_threshold)
print("induction scores [layer, head]:")
print(scores)
print("induction heads (score > " .. args.threshold .. "): " .. E.heads_str(induction_heads))
print("previous-token heads (> " .. args.prev_threshold .. "): " .. E.heads_str(prev_heads))

-- figures
local str = E.str_tokens(model, tokens1[0])
local figs = {}
figs.loss = mi.plot.loss_difference(log_probs, str, args.seq_len,
  {out = args.out .. "/loss_per_position.png", title = "Log-prob of each token, repeated random tokens"})
local head_labels = {}
for h = 0, cfg.n_heads - 1 do head_labels[#head_labels + 1] = tostring(h) end
local layer_labels = {}
for l = 0, cfg.n_layers - 1 do layer_labels[#layer_labels + 1] = tostring(l) end
figs.scores = mi.plot.imshow(scores, {title = "Induction score by head", xlabel = "Head",
  ylabel = "Layer", x = head_labels, y = layer_labels, text_auto = ".2f", range = {0, 1},
  out = args.out .. "/induction_scores.png", width = 900, height = 150 + 60 * cfg.n_layers})
local shown = {}
for _, name in ipairs(induction_heads) do
  shown[#shown + 1] = {A.parse_head(model, name)}
end
if #shown > 0 then
  local pats, names = {}, {}
  for _, lh in ipairs(shown) do
    pats[#pats + 1] = cache("pattern", lh[1])[lh[2]]
    names[#names + 1] = ("L%dH%d"):format(lh[1], lh[2])
  end
  figs.patterns = mi.plot.attention_patterns(str, mi.stack(pats, 0), {head_names = names,
    title = "Attention patterns of the induction heads", out = args.out .. "/induction_patterns.png"})
end
for k, p in pairs(figs) do print("figure: " .. p) end

local path = E.write_results(args.out, {
  model = model_name, seed = args.seed, seq_len = args.seq_len, batch = args.batch,
  first_half_log_prob = first, second_half_log_prob = second,
  induction_scores = scores, induction_heads = induction_heads, induction_threshold = args.threshold,
  prev_token_scores = prev_scores, prev_token_heads = prev_heads, figures = figs,
})
print("results: " .. path)
