-- gpt2_small.lua: the seed notebook's GPT-2 small section, when GPT-2 small is in the model
-- cache ($MIWB_HOME, default ~/.cache/miwb); otherwise it says how to get it.
--   miwb scripts/gpt2_small.lua [--model gpt2-small] [--seed S] [--out DIR]
local mi = require("miwb")
local A, E = mi.analysis, mi.experiment

local args = E.parse_args(arg, "gpt2_small", {seq_len = 50, batch = 10}, {
  seq_len = "length of the random sequence that is repeated", batch = "sequences per batch"})
if args.model == E.default_model() and not os.getenv("MIWB_MODEL") then args.model = "gpt2-small" end
local ok, model = pcall(mi.from_pretrained, args.model)
if not ok then
  -- from_pretrained's message says where the files go and which command fetches them
  print("GPT-2 small is not available here, so this script stops.")
  print((tostring(model):gsub("^.-:%d+: ", "")))
  os.exit(0)
end
local cfg = model.cfg
print("Facts about GPT-2 Small model")
print(" n_layers:", cfg.n_layers)
print(" n heads per layer: ", cfg.n_heads)
print(" maximum context window: ", cfg.n_ctx)

local text = "The the the the the the the the the"
local loss = model(text, {return_type = "loss"})
print("Model loss:", loss)
print(table.concat(model:to_str_tokens("gpt2"), "|"))
print(model:to_tokens("gpt2"))
print(model:to_string(mi.tensor({50256, 70, 457, 17}, {dtype = "int64"})))

local logits = model(text, {return_type = "logits"})
local n = logits:size(1)
local prediction = logits:argmax(-1)[0]:narrow(0, 0, n - 1)
local true_tokens = model:to_tokens(text)[0]:narrow(0, 1, n - 1)
local correct = prediction:eq(true_tokens)
print(("Model answered %d/%d correctly"):format(correct:sum():item(), n - 1))

local gpt2_text = "My entrepreneurship responsibilities are straightforward: to enthusiastically " ..
  "provide telecommunications and cryptocurrencies to disproportionately affected environmentalists in Charlottesville"
local tokens = model:to_tokens(gpt2_text)
local _, cache = model:run_with_cache(tokens, {remove_batch_dim = true})
local q, k = cache("q", 0), cache("k", 0)
local scores = mi.einsum("seqQ nhead dhead, seqK nhead dhead -> nhead seqQ seqK", q, k) / math.sqrt(cfg.d_head)
local P = q:size(0)
scores:masked_fill_(mi.ones(P, P):triu(1):bool(), -math.huge)
local err = (scores:softmax(-1) - cache("pattern", 0)):abs():max():item()
print(("layer-0 pattern rebuilt from q and k matches the cache within %.2e"):format(err))

local rep = A.generate_repeated_tokens(model, args.seq_len, args.batch, {seed = args.seed})
local ind = A.induction_scores(model, rep)
local no_pos = A.induction_scores(model, rep, {extra_hooks = {{
  function(nm) return nm:find("pos_embed", 1, true) ~= nil end, function(x) x:zero_() end}}})
print("induction heads (> 0.5): " .. E.heads_str(A.heads_above(ind, 0.5)))
print("with the positional embedding zeroed: " .. E.heads_str(A.heads_above(no_pos, 0.5)))
local figs = {
  patterns = mi.plot.attention_patterns(model:to_str_tokens(gpt2_text), cache("pattern", 0),
    {title = "Layer 0 head attention patterns", out = args.out .. "/layer0_patterns.png"}),
  scores = mi.plot.imshow(ind, {title = "Induction score by head in GPT-2 small", xlabel = "Head",
    ylabel = "Layer", text_auto = ".2f", range = {-1, 1}, out = args.out .. "/induction_scores.png"}),
  no_pos = mi.plot.imshow(no_pos, {title = "Induction scores, positional embedding zeroed",
    xlabel = "Head", ylabel = "Layer", text_auto = ".2f", range = {-1, 1},
    out = args.out .. "/induction_scores_no_pos.png"}),
}
print("results: " .. E.write_results(args.out, {model = args.model, loss_the = loss,
  correct = correct:sum():item(), pattern_error = err, induction_scores = ind,
  induction_scores_no_pos = no_pos, figures = figs}))
