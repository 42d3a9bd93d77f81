-- fuzzy_induction.lua: does the model do "fuzzy induction"? After [A] [B] ... [A*], does it
-- predict [B*] where * is a synonym? (The seed notebook's closing idea, built for real.)
--   miwb scripts/fuzzy_induction.lua [--model M] [--seed S] [--out DIR] [--n_words 20] [--batch 40]
-- Synonym pairs come from WordNet (Debian's wordnet-base), kept where both words are ordinary
-- English words (Debian's wamerican list) and single tokens of the model's tokenizer with the
-- leading space. Each sequence is BOS, n_words random words, then
--   exact:   the same words again;
--   fuzzy:   each word replaced by a synonym;
--   control: n_words other random words.
-- Reported per condition: attention of every head along the induction stripe (second-half
-- token i -> first-half token i+1), the loss on the second half, and, in the fuzzy condition,
-- the log-prob of the synonym that comes next (B*) and of the word that came next in the first
-- half (B, what a literal copier would predict).
local mi = require("miwb")
local A, E, wn = mi.analysis, mi.experiment, mi.wordnet

local args = E.parse_args(arg, "fuzzy_induction", {n_words = 20, batch = 40, max_sense = 2}, {
  n_words = "words per sequence (each with its synonym later)", batch = "sequences per condition",
  max_sense = "keep a synonym pair only if its synset is among each word's first max_sense senses"})
local model, model_name = E.load_model(args.model)
print("model: " .. model_name)
if not model.tokenizer then
  error("fuzzy_induction: the model has no tokenizer (words must be tokenized); use a trained model", 0)
end
local tok = model.tokenizer
local N, B = args.n_words, args.batch

-- synonym pairs whose words are single tokens with the leading space and ordinary words
local words = assert(wn.load_wordlist())
local token_of = {}
local function single_token(w)
  if token_of[w] == nil then
    local ids = tok:encode_list(" " .. w, {add_special_tokens = false})
    token_of[w] = (#ids == 1) and ids[1] or false
  end
  return token_of[w]
end
-- max_sense: both words in one of their most frequent senses (WordNet's sense order), so that
-- pairs are synonyms as a reader would take them ("lie/rest", not "try/hear")
local pairs_all = wn.synonym_pairs{max_sense = args.max_sense > 0 and args.max_sense or nil, keep = function(w)
  return words[w] and w:match("^%l+$") and single_token(w) and true or false end}
print(("synonym pairs: %d (WordNet synsets, both words %s, single tokens, in the word list)"):format(#pairs_all,
  args.max_sense > 0 and ("in their " .. args.max_sense .. " most frequent senses") or "in any sense"))
if #pairs_all < 2 * N then
  error(("fuzzy_induction: only %d usable synonym pairs, need at least %d"):format(#pairs_all, 2 * N), 0)
end

-- sequences: the same pair choices for all three conditions
local g = mi.Generator(args.seed)
local function rand_int(n) return mi.randint(0, n, {1}, g):item() end
local bos = A.bos_id(model)
local rows = {exact = {}, fuzzy = {}, control = {}}
local originals = {}          -- per sequence: the first-half ids (B for the fuzzy condition)
local examples = {}
for b = 1, B do
  local chosen, used = {}, {}
  while #chosen < 2 * N do
    local i = rand_int(#pairs_all) + 1
    if not used[i] then used[i] = true; chosen[#chosen + 1] = i end
  end
  local first, syn, other = {}, {}, {}
  for k = 1, N do
    local p = pairs_all[chosen[k]]
    local flip = rand_int(2) == 1
    local a, s = p[flip and 2 or 1], p[flip and 1 or 2]
    first[k], syn[k] = token_of[a], token_of[s]
    other[k] = token_of[pairs_all[chosen[N + k]][1]]
    if b == 1 and k <= 4 then examples[#examples + 1] = a .. " -> " .. s end
  end
  local function seq(second)
    local t = {bos}
    for k = 1, N do t[#t + 1] = first[k] end
    for k = 1, N do t[#t + 1] = second[k] end
    return t
  end
  rows.exact[b], rows.fuzzy[b], rows.control[b] = seq(first), seq(syn), seq(other)
  originals[b] = first
end
print("example pairs of the first sequence: " .. table.concat(examples, ", "))

local L, H = model.cfg.n_layers, model.cfg.n_heads
local results = {model = model_name, seed = args.seed, n_words = N, batch = B,
                 n_pairs = #pairs_all, conditions = {}}
local stripe, order = {}, {"exact", "fuzzy", "control"}
for _, cond in ipairs(order) do
  local tokens = mi.tensor(rows[cond], {dtype = "int64"})                    -- [B, 1+2N]
  local st = mi.zeros(L, H)
  local logits = model:run_with_hooks(tokens, {return_type = "logits", fwd_hooks = {{
    function(n) return n:match("hook_pattern$") ~= nil end,
    function(p, hook) st[hook:layer()] = p:diagonal(1 - N, -2, -1):mean({0, 2}) end}}})
  local lp = A.get_log_probs(logits, tokens)                                   -- [B, 2N]
  -- predictions of second-half tokens 2..N (token 1 of the second half has no cue)
  local second = lp:narrow(1, N + 1, N - 1)
  local per_seq = second:mean(1)                                               -- [B]
  local loss = -per_seq:mean():item()
  local se = per_seq:std():item() / math.sqrt(B)
  local entry = {second_half_loss = loss, second_half_loss_se = se, stripe_attention = st}
  if cond == "fuzzy" then
    -- log-prob of the first half's next word B at the positions where B* comes next
    local lsm = logits:log_softmax(-1)
    local orig = {}
    for b = 1, B do
      local r = {}
      for k = 2, N do r[#r + 1] = originals[b][k] end
      orig[b] = r
    end
    local idx = mi.tensor(orig, {dtype = "int64"}):unsqueeze(-1)               -- [B, N-1, 1]
    local pos = lsm:narrow(1, N + 1, N - 1)                                    -- [B, N-1, V]
    entry.log_prob_original_word = pos:gather(-1, idx):mean():item()
    entry.log_prob_synonym = second:mean():item()
  end
  results.conditions[cond] = entry
  stripe[cond] = st
  print(("%-8s second-half loss %.3f +- %.3f nats"):format(cond, loss, se))
end

-- the heads with the most stripe attention in the exact condition
local flat = stripe.exact:reshape({L * H})
local k = math.min(3, L * H)
local _, top = flat:topk(k, 0)
print("induction-stripe attention of the strongest induction heads (exact / fuzzy / control):")
local head_rows = {}
for i = 0, k - 1 do
  local id = top[i]:item()
  local l, h = id // H, id % H
  local vals = {}
  for _, cond in ipairs(order) do vals[#vals + 1] = stripe[cond][{l, h}]:item() end
  head_rows[#head_rows + 1] = {head = l .. "." .. h, exact = vals[1], fuzzy = vals[2], control = vals[3]}
  print(("  %d.%d   %.3f / %.3f / %.3f"):format(l, h, vals[1], vals[2], vals[3]))
end
results.top_heads = head_rows

local c = results.conditions
local gain = c.control.second_half_loss - c.fuzzy.second_half_loss
local gain_se = math.sqrt(c.control.second_half_loss_se ^ 2 + c.fuzzy.second_half_loss_se ^ 2)
local h0 = head_rows[1]
-- d = control loss - condition loss: said as "higher" / "lower", never as a signed difference
local function vs_control(d, se)
  return ("%.3f nats %s than on unrelated words (+- %.3f)"):format(math.abs(d), d >= 0 and "lower" or "higher", se)
end
local finding
local exact_gain = c.control.second_half_loss - c.exact.second_half_loss
if h0.exact < 0.2 and exact_gain < 1 then
  finding = ("The model does no induction even on exact repeats (strongest stripe attention %.3f at %s; " ..
    "exact repeats only %.3f nats easier than unrelated words), so it cannot show fuzzy induction either; " ..
    "after synonyms the second-half loss is %s.")
    :format(h0.exact, h0.head, exact_gain, vs_control(gain, gain_se))
elseif gain > 2 * gain_se and h0.fuzzy > 2 * h0.control then
  finding = ("The model does fuzzy induction: after a synonym of an earlier word, its induction heads " ..
    "attend along the stripe (%s: %.3f fuzzy vs %.3f control) and the second-half loss is %s.")
    :format(h0.head, h0.fuzzy, h0.control, vs_control(gain, gain_se))
elseif h0.fuzzy > 2 * h0.control then
  finding = ("Partial: the induction heads attend along the stripe after synonyms (%s: %.3f fuzzy vs %.3f " ..
    "control), but the second-half loss is not clearly lower than on unrelated words: it is %s.")
    :format(h0.head, h0.fuzzy, h0.control, vs_control(gain, gain_se))
else
  finding = ("No fuzzy induction found: the induction heads attend along the stripe for exact repeats " ..
    "(%s: %.3f) but not after synonyms (%.3f, control %.3f); after synonyms the second-half loss is %s.")
    :format(h0.head, h0.exact, h0.fuzzy, h0.control, vs_control(gain, gain_se))
end
if c.fuzzy.log_prob_original_word then
  finding = finding .. (" In the fuzzy condition the word that followed earlier (B) gets log-prob %.2f, " ..
    "the synonym that actually follows (B*) %.2f."):format(c.fuzzy.log_prob_original_word,
    c.fuzzy.log_prob_synonym)
end
print("finding: " .. finding)
results.finding = finding
results.max_sense = args.max_sense

local heads = {}
for h = 0, H - 1 do heads[#heads + 1] = tostring(h) end
local figs = {}
for _, cond in ipairs(order) do
  figs[cond] = mi.plot.imshow(stripe[cond], {title = "Induction-stripe attention, " .. cond .. " repeat",
    xlabel = "Head", ylabel = "Layer", x = heads, text_auto = ".2f", range = {0, 1},
    out = args.out .. "/stripe_" .. cond .. ".png"})
end
local series = {}
for _, cond in ipairs(order) do series[#series + 1] = stripe[cond]:reshape({L * H}) end
local head_names = {}
for l = 0, L - 1 do for h = 0, H - 1 do head_names[#head_names + 1] = l .. "." .. h end end
figs.by_head = mi.plot.line(series, {title = "Induction-stripe attention by head and condition",
  xlabel = "Head", ylabel = "Mean attention on the stripe", xticks = head_names, labels = order,
  out = args.out .. "/stripe_by_head.png"})
for _, p in pairs(figs) do print("figure: " .. p) end
results.figures = figs
print("results: " .. E.write_results(args.out, results))
