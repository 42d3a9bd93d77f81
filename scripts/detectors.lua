-- detectors.lua: current-token, previous-token, first-token and induction heads (the seed
-- notebook's "write your own detectors"), plus TransformerLens's detect_head patterns.
--   miwb scripts/detectors.lua [--model M] [--seed S] [--out DIR] [--seq_len 50]
-- On a model with a tokenizer the first three detectors run on the notebook's text; without
-- one, on repeated random tokens. Induction is measured on repeated random tokens.
local mi = require("miwb")
local A, E = mi.analysis, mi.experiment

local args = E.parse_args(arg, "detectors", {seq_len = 50, current = 0.3, prev = 0.35,
                                             first = 0.7, induction = 0.5}, {
  seq_len = "length of the random sequence that is repeated (induction detector)",
  current = "score above which a head counts as a current-token head",
  prev = "score above which a head counts as a previous-token head",
  first = "score above which a head counts as a first-token head",
  induction = "score above which a head counts as an induction head"})
local model, model_name = E.load_model(args.model)
print("model: " .. model_name)

local TEXT = "We think that powerful, significantly superhuman machine intelligence is more likely " ..
  "than not to be created this century. If current machine learning techniques were scaled up to " ..
  "this level, we think they would by default produce systems that are deceptive or manipulative, " ..
  "and that no solid plans are known for how to avoid this."
local tokens
if model.tokenizer then
  tokens = model:to_tokens(TEXT)
  print(("text: %d tokens of the notebook's paragraph"):format(tokens:size(1)))
else
  tokens = A.generate_repeated_tokens(model, args.seq_len, 1, {seed = args.seed})
  print("text: repeated random tokens (the model has no tokenizer)")
end
local _, cache = model:run_with_cache(tokens, {remove_batch_dim = true,
  names_filter = function(n) return n:match("hook_pattern$") ~= nil end})
local cur_s, cur = A.current_attn_detector(model, cache, args.current)
local prev_s, prev = A.prev_attn_detector(model, cache, args.prev)
local first_s, first = A.first_attn_detector(model, cache, args.first)
local rep = A.generate_repeated_tokens(model, args.seq_len, 1, {seed = args.seed + 1})
local _, rep_cache = model:run_with_cache(rep, {remove_batch_dim = true,
  names_filter = function(n) return n:match("hook_pattern$") ~= nil end})
local ind_s, ind = A.induction_attn_detector(model, rep_cache, args.induction)
print("Heads attending to current token  = " .. E.heads_str(cur))
print("Heads attending to previous token = " .. E.heads_str(prev))
print("Heads attending to first token    = " .. E.heads_str(first))
print("Induction heads                   = " .. E.heads_str(ind))

-- TransformerLens's detect_head on the repeated sequence
local tl = {}
for _, name in ipairs{"previous_token_head", "duplicate_token_head", "induction_head"} do
  tl[name] = A.detect_head(model, rep[0], name, {cache = rep_cache})
  print(("detect_head %-21s best: %s"):format(name, E.heads_str(A.heads_above(tl[name], 0.5))))
end

local figs = {}
local H = {}
for h = 0, model.cfg.n_heads - 1 do H[#H + 1] = tostring(h) end
for key, s in pairs{current = cur_s, previous = prev_s, first = first_s, induction = ind_s} do
  figs[key] = mi.plot.imshow(s, {title = key .. "-token detector score by head", xlabel = "Head",
    ylabel = "Layer", x = H, text_auto = ".2f", range = {0, 1},
    out = args.out .. "/" .. key .. "_scores.png"})
end
for _, p in pairs(figs) do print("figure: " .. p) end
print("results: " .. E.write_results(args.out, {
  model = model_name, seed = args.seed, seq_len = args.seq_len,
  current_token = {scores = cur_s, heads = cur, threshold = args.current},
  previous_token = {scores = prev_s, heads = prev, threshold = args.prev},
  first_token = {scores = first_s, heads = first, threshold = args.first},
  induction = {scores = ind_s, heads = ind, threshold = args.induction},
  detect_head = tl, figures = figs}))
