-- ov_qk_circuits.lua: the OV copying circuit of the induction heads and the positional QK
-- circuit of the previous-token head (the seed notebook's "Reverse-engineering induction
-- circuits"), with factored matrices streamed over the whole vocabulary.
--   miwb scripts/ov_qk_circuits.lua [--model M] [--seed S] [--out DIR] [--chunk 1000]
local mi = require("miwb")
local A, E = mi.analysis, mi.experiment

local args = E.parse_args(arg, "ov_qk_circuits", {chunk = 1000, sample = 200}, {
  chunk = "vocabulary rows per step of the full OV circuit", sample = "tokens in the drawn sample of the OV circuit"})
local model, model_name = E.load_model(args.model)
print("model: " .. model_name)
local L = model.cfg.n_layers

-- find the heads to study
local ind = A.induction_scores(model, nil, {seq_len = 50, batch = 10, seed = args.seed})
local ind_flat = ind[L - 1]
local v, best = ind_flat:topk(math.min(2, model.cfg.n_heads), -1)
local h1, h2 = best[0]:item(), best[math.min(1, best:size(0) - 1)]:item()
local rep = A.generate_repeated_tokens(model, 50, 1, {seed = args.seed})
local _, cache = model:run_with_cache(rep, {remove_batch_dim = true,
  names_filter = function(n) return n:match("hook_pattern$") ~= nil end})
local prev_s = A.prev_attn_detector(model, cache)
local _, prev_best = prev_s[0]:max(0)
local hp = prev_best:item()
print(("induction heads studied: %d.%d (score %.2f), %d.%d (score %.2f); previous-token head 0.%d (score %.2f)")
  :format(L - 1, h1, v[0]:item(), L - 1, h2, v[math.min(1, v:size(0) - 1)]:item(), hp, prev_s[{0, hp}]:item()))

local ov = A.full_ov_circuit(model, L - 1, h1)
local acc1 = A.top_1_acc(ov, {chunk = args.chunk, progress = mi.progress.callback("OV top-1")})
local acc5 = A.top_k_accuracy(ov, 5, {chunk = args.chunk})
print(("full OV circuit of %d.%d: top-1 diagonal accuracy %.4f, top-5 %.4f"):format(L - 1, h1, acc1, acc5))
local eff = A.effective_ov_circuit(model, {{L - 1, h1}, {L - 1, h2}})
local acc_eff = A.top_1_acc(eff, {chunk = args.chunk})
print(("effective OV circuit of %d.%d + %d.%d: top-1 accuracy %.4f"):format(L - 1, h1, L - 1, h2, acc_eff))

local pos = A.pos_qk_pattern(model, 0, hp)
local sub = pos:diagonal(-1, 0, 1):mean():item()
print(("positional QK pattern of 0.%d: mean first sub-diagonal %.4f"):format(hp, sub))

local g = mi.Generator(args.seed)
local V = model.cfg.d_vocab
local idx = mi.randint(0, V, {math.min(args.sample, V)}, g)
local sample = ov.A:index_select(0, idx):matmul(ov.B:index_select(1, idx))
local sample_tokens = E.str_tokens(model, idx)            -- the ticks name the sampled tokens
local n = math.min(100, pos:size(0))
local figs = {
  ov = mi.plot.imshow(sample, {title = ("Full OV circuit of %d.%d (random sample of tokens)"):format(L - 1, h1),
    xlabel = "Input token", ylabel = "Logits on output token", out = args.out .. "/full_ov_sample.png",
    x = sample_tokens, y = sample_tokens,
    width = 700, height = 650}),
  pos = mi.plot.imshow(pos:narrow(0, 0, n):narrow(1, 0, n), {title = ("Positional QK pattern of 0.%d"):format(hp),
    xlabel = "Key", ylabel = "Query", range = {0, 1}, out = args.out .. "/pos_qk_pattern.png",
    width = 700, height = 650}),
}
for _, p in pairs(figs) do print("figure: " .. p) end
print("results: " .. E.write_results(args.out, {model = model_name, seed = args.seed,
  induction_head = {L - 1, h1}, second_induction_head = {L - 1, h2}, prev_token_head = {0, hp},
  ov_top1 = acc1, ov_top5 = acc5, effective_ov_top1 = acc_eff, pos_subdiagonal_mean = sub,
  figures = figs}))
