-- composition.lua: how layer-1 heads read what layer-0 heads write (the seed notebook's
-- K-composition section): the decomposed query and key inputs of an induction head, the
-- decomposed attention scores, the full K-composition circuit through the previous-token head,
-- and Q/K/V composition scores of every head pair against a random baseline.
--   miwb scripts/composition.lua [--model M] [--seed S] [--out DIR] [--samples 300]
local mi = require("miwb")
local A, E = mi.analysis, mi.experiment

local args = E.parse_args(arg, "composition", {samples = 300, seq_len = 50, chunk = 1000}, {
  samples = "random factor pairs for the composition-score baseline",
  seq_len = "length of the random sequence that is repeated",
  chunk = "vocabulary rows per step of the full-circuit products",
})
local model, model_name = E.load_model(args.model)
print("model: " .. model_name)
local H = model.cfg.n_heads
if model.cfg.n_layers < 2 then error("composition: the model needs at least 2 layers", 0) end

local rep = A.generate_repeated_tokens(model, args.seq_len, 1, {seed = args.seed})
local _, cache = model:run_with_cache(rep, {remove_batch_dim = true})
local ind_s = select(1, A.induction_attn_detector(model, cache))
local prev_s = select(1, A.prev_attn_detector(model, cache))
local _, hi = ind_s[1]:max(0); hi = hi:item()
local _, hp = prev_s[0]:max(0); hp = hp:item()
print(("induction head 1.%d, previous-token head 0.%d"):format(hi, hp))

local dqk = A.decompose_qk_input(cache)                 -- [2+H, seq, d]
local dq = A.decompose_q(dqk, hi, model)
local dk = A.decompose_k(dqk, hi, model)
-- the decomposition leaves out the biases (b_O of layer 0, b_Q / b_K of the head): add them back
local bO = model.b_O[0]
local err_q = (dq:sum(0) + bO:matmul(model.W_Q[1][hi]) + model.b_Q[1][hi]
               - cache("q", 1)[{{}, hi}]):abs():max():item()
local err_k = (dk:sum(0) + bO:matmul(model.W_K[1][hi]) + model.b_K[1][hi]
               - cache("k", 1)[{{}, hi}]):abs():max():item()
print(("decomposed q and k (plus biases) sum to the cached ones within %.2e and %.2e"):format(err_q, err_k))
local scores = A.decompose_attn_scores(dq, dk)          -- [2+H, 2+H, seq, seq]
local n = scores:size(-1)
local stds = scores:reshape({(2 + H) * (2 + H), n * n}):std(-1):reshape({2 + H, 2 + H})
local labels = {"Embed", "PosEmbed"}
for h = 0, H - 1 do labels[#labels + 1] = "0." .. h end
local best_q, best_k, best_v = 1, 1, -1
local st = stds:totable()
for i = 1, 2 + H do for j = 1, 2 + H do
  if st[i][j] > best_v then best_q, best_k, best_v = i, j, st[i][j] end
end end
print(("largest attention-score contribution: query %s x key %s (std %.2f)")
  :format(labels[best_q], labels[best_k], best_v))

local kcomp = A.find_K_comp_full_circuit(model, hp, hi)
local kacc = A.top_1_acc(kcomp.T, {chunk = args.chunk, progress = mi.progress.callback("K-comp top-1")})
print(("full K-composition circuit 0.%d -> 1.%d: top-1 accuracy (key side) %.4f"):format(hp, hi, kacc))

local comp = A.composition_scores(model)
local base = A.random_comp_baseline(model, args.samples, {seed = args.seed,
  progress = mi.progress.callback("baseline")})
local bmean, bstd = base:mean():item(), base:std():item()
print(("random baseline: mean %.4f, std %.4f over %d samples"):format(bmean, bstd, args.samples))
for _, kind in ipairs{"Q", "K", "V"} do
  local c = comp[kind]
  local v, i = c:reshape({H * H}):max(0)
  print(("%s-composition: largest %.4f (0.%d -> 1.%d), %.1f baseline std above the mean")
    :format(kind, v:item(), i:item() // H, i:item() % H, (v:item() - bmean) / bstd))
end

local heads = {}
for h = 0, H - 1 do heads[#heads + 1] = tostring(h) end
local figs = {
  q_norms = mi.plot.imshow(dq:pow(2):sum(-1), {title = "Norms of components of query", xlabel = "Position",
    ylabel = "Component", y = labels, out = args.out .. "/query_components.png"}),
  k_norms = mi.plot.imshow(dk:pow(2):sum(-1), {title = "Norms of components of key", xlabel = "Position",
    ylabel = "Component", y = labels, out = args.out .. "/key_components.png"}),
  stds = mi.plot.imshow(stds, {title = "Std of attention score contributions", xlabel = "Key component",
    ylabel = "Query component", x = labels, y = labels, out = args.out .. "/score_contribution_std.png"}),
  baseline = mi.plot.hist(base, {title = "Random composition scores", xlabel = "Composition score",
    bins = 50, out = args.out .. "/baseline_hist.png"}),
}
for _, kind in ipairs{"Q", "K", "V"} do
  figs[kind] = mi.plot.comp_scores(comp[kind], kind .. " composition scores", bmean,
    {out = args.out .. "/" .. kind .. "_composition.png"})
end
for _, p in pairs(figs) do print("figure: " .. p) end
print("results: " .. E.write_results(args.out, {model = model_name, seed = args.seed,
  induction_head = {1, hi}, prev_token_head = {0, hp}, decomposition_error_q = err_q,
  decomposition_error_k = err_k, score_contribution_std = stds, component_labels = labels,
  k_comp_top1 = kacc, composition = comp, baseline_mean = bmean, baseline_std = bstd,
  figures = figs}))
