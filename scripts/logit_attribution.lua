-- logit_attribution.lua: which components (direct path, each head) write the correct next
-- token's logit (the seed notebook's "Building interpretability tools"), on a text and on
-- both copies of a repeated random sequence.
--   miwb scripts/logit_attribution.lua [--model M] [--seed S] [--out DIR] [--seq_len 50]
local mi = require("miwb")
local A, E = mi.analysis, mi.experiment

local args = E.parse_args(arg, "logit_attribution", {seq_len = 50}, {seq_len = "length of the random sequence that is repeated"})
local model, model_name = E.load_model(args.model)
print("model: " .. model_name)
local TEXT = "We think that powerful, significantly superhuman machine intelligence is more likely " ..
  "than not to be created this century."

local function attribution(tokens)
  local logits, cache = model:run_with_cache(tokens, {remove_batch_dim = true})
  local attr, labels = A.logit_attribution_all(model, cache, tokens[0])
  -- the identity: the rows sum to the correct-token logits (up to the unembedding bias)
  local n = tokens:size(1)
  local correct = logits[0]:narrow(0, 0, n - 1):gather(-1, tokens[0]:narrow(0, 1, n - 1):unsqueeze(-1)):squeeze(-1)
  local b = model.b_U:index_select(0, tokens[0]:narrow(0, 1, n - 1))
  local err = (attr:sum(-1) + b - correct):abs():max():item()
  return attr, labels, err, cache
end

local figs, results = {}, {model = model_name, seed = args.seed}
if model.tokenizer then
  local tokens = model:to_tokens(TEXT)
  local attr, labels, err = attribution(tokens)
  print(("text: %d tokens; rows sum to the correct-token logits within %.2e"):format(tokens:size(1), err))
  figs.text = mi.plot.logit_attribution(labels, attr, model:to_str_tokens(tokens[0]),
    "Logit attribution (text)", {out = args.out .. "/text.png"})
  results.text = {tokens = tokens[0], attribution = attr, labels = labels, max_identity_error = err}
end

local rep = A.generate_repeated_tokens(model, args.seq_len, 1, {seed = args.seed})
local attr, labels, err = attribution(rep)
local S = args.seq_len
local first = attr:narrow(0, 0, S)          -- predictions of the first copy's tokens
local second = attr:narrow(0, S, S)         -- predictions of the second copy's tokens
print(("repeated tokens: rows sum to the correct-token logits within %.2e"):format(err))
local fm, sm = first:mean(0):totable(), second:mean(0):totable()
local order = {}
for i = 1, #labels do order[i] = i end
table.sort(order, function(a, b) return sm[a] - fm[a] > sm[b] - fm[b] end)
print("components whose attribution grows most on the second copy:")
for i = 1, math.min(5, #order) do
  local k = order[i]
  print(("  %-8s first copy %8.3f   second copy %8.3f"):format(labels[k], fm[k], sm[k]))
end
local str = E.str_tokens(model, rep[0])
local str1, str2 = {}, {}
for i = 1, S + 1 do str1[i] = str[i] end
for i = S + 1, 2 * S + 1 do str2[#str2 + 1] = str[i] end
figs.first = mi.plot.logit_attribution(labels, first, str1, "Logit attribution (first copy)",
  {out = args.out .. "/first_copy.png"})
figs.second = mi.plot.logit_attribution(labels, second, str2, "Logit attribution (second copy)",
  {out = args.out .. "/second_copy.png"})
for _, p in pairs(figs) do print("figure: " .. p) end
results.labels = labels
results.repeated = {first_copy_mean = first:mean(0), second_copy_mean = second:mean(0),
                    max_identity_error = err}
results.figures = figs
print("results: " .. E.write_results(args.out, results))
