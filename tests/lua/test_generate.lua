-- model:generate and mi.utils.sample_logits (lua/miwb/model.lua over core/generate.c), against
-- independent computations:
--   - greedy tokens: an argmax loop over the full forward pass (itself checked against float64
--     PyTorch in test_model / test_families) and, for the Hugging Face families, the tokens the
--     Hugging Face model generated (tests/fixtures/gen_hf_families.py); with and without the cache,
--     on batches of prompts of different lengths (left padding);
--   - a cached step's activations equal the full forward's at the last position;
--   - sampling: kept sets computed here from the logits (top_k, top_p), frequencies of many seeded
--     draws against softmax(logits / T) by a chi-square bound (and the same bound rejecting a
--     wrong temperature, so the check can fail);
--   - EOS per row with TransformerLens's padding, return types, errors naming generate.
local T = require("testlib")
local mi = require("miwb")

local FX = "tests/fixtures/hf_families/"

local function enc(t) return mi.json.encode(t:totable()) end

local function rel_err(a, b)
  return (a - b):abs():max():item() / math.max(b:abs():max():item(), 1e-12)
end

-- the reference: one full forward per new token, argmax of the last position (mask grows by 1s)
local function argmax_loop(model, tokens, mask, n, hooks)
  for _ = 1, n do
    local lg = model:run_with_hooks(tokens, {attention_mask = mask, fwd_hooks = hooks})
    local nxt = lg[{{}, -1}]:argmax(-1):view(-1, 1)
    tokens = mi.cat({tokens, nxt}, 1)
    if mask then mask = mi.cat({mask, mi.ones({mask:size(0), 1}):long()}, 1) end
  end
  return tokens
end

-- two prompts of lengths P and P - 2, the shorter padded on the left (pad id 0)
local function padded_batch(row0, row1)
  local P = #row0
  local toks, mask = {row0, {}}, {{}, {}}
  for p = 1, P do
    mask[1][p] = 1
    toks[2][p] = p <= 2 and 0 or row1[p - 2]
    mask[2][p] = p <= 2 and 0 or 1
  end
  return mi.tensor(toks, "int64"), mi.tensor(mask, "int64")
end

local function gpt2_like()
  return mi.HookedTransformer({d_model = 32, d_head = 8, n_layers = 2, n_ctx = 40, d_vocab = 50, act_fn = "gelu_new",
                               seed = 3, initializer_range = 0.4})
end

local function models()
  local list = {{"gpt2-like", gpt2_like()},
                {"attn-only shortformer (bundled)", mi.from_pretrained_no_processing("models/attn_only_2L")}}
  for _, fam in ipairs{"gpt_neox", "llama", "mistral", "qwen2", "gptj"} do
    list[#list + 1] = {fam, mi.from_pretrained_no_processing(FX .. fam, {tokenizer = false})}
  end
  return list
end

T.test("greedy: cached == uncached == an argmax loop of full forwards, prompts of different lengths (every family)", function()
  for _, pair in ipairs(models()) do
    local name, model = pair[1], pair[2]
    local V = model.cfg.d_vocab
    local r0, r1 = {}, {}
    for p = 1, 7 do r0[p] = (11 * p + 5) % V; r1[p] = (17 * p + 2) % V end
    local toks, mask = padded_batch(r0, {table.unpack(r1, 1, 5)})
    local n = 6
    -- the core's loop takes the mask directly (Model:generate makes it from a list of texts, or
    -- from leading pad tokens with padding_side "left": tested below on a model with a tokenizer)
    local want = argmax_loop(model, toks, mask, n)
    local batched = model._core:generate({tokens = toks, attention_mask = mask, max_new_tokens = n, do_sample = false})
    local uncached = model._core:generate({tokens = toks, attention_mask = mask, max_new_tokens = n, do_sample = false,
                                           use_past_kv_cache = false})
    T.eq(enc(batched), enc(want), name .. ": cached, left padded batch vs the argmax loop")
    T.eq(enc(uncached), enc(want), name .. ": uncached vs the argmax loop")
    -- row 1 alone, without its padding: the same continuation
    local alone = model:generate(mi.tensor({{table.unpack(r1, 1, 5)}}, "int64"),
                                 {max_new_tokens = n, do_sample = false, stop_at_eos = false, verbose = false})
    T.eq(enc(alone[0][{{5}}]), enc(want[1][{{7}}]), name .. ": the padded row continues as the row alone")
    local row0 = model:generate(toks[{{0, 1}}], {max_new_tokens = n, do_sample = false, stop_at_eos = false,
                                                 verbose = false})
    T.eq(enc(row0[0]), enc(want[0]), name .. ": row 0 through Model:generate")
  end
end)

T.test("Hugging Face families: the cached greedy tokens are the ones Hugging Face generated", function()
  for _, fam in ipairs{"gpt_neox", "llama", "mistral", "qwen2", "gptj"} do
    local exp = mi.load(FX .. fam .. "_expect.safetensors")
    local raw = mi.from_pretrained_no_processing(FX .. fam, {tokenizer = false})
    local gen = exp["gen.tokens"]
    local P = exp.tokens:size(1)
    for _, cache in ipairs{true, false} do
      local out = raw:generate(exp.tokens[{{0, 1}}], {max_new_tokens = gen:size(1) - P, do_sample = false,
                                                      use_past_kv_cache = cache, verbose = false})
      T.eq(enc(out[0]), enc(gen[0]), fam .. (cache and ": cached" or ": uncached"))
    end
  end
end)

T.test("hooks with the cache see the new position only (TransformerLens's cached generation); without it everything", function()
  local model = gpt2_like()
  local toks = mi.tensor({{1, 2, 3, 4}, {5, 6, 7, 8}}, "int64")
  for _, cache in ipairs{true, false} do
    local resid, pattern = {}, {}
    local hooks = {{"blocks.0.hook_resid_pre", function(x) resid[#resid + 1] = table.concat(x:shape(), ",") end},
                   {"blocks.1.attn.hook_pattern", function(x) pattern[#pattern + 1] = table.concat(x:shape(), ",") end}}
    model:generate(toks, {max_new_tokens = 3, do_sample = false, fwd_hooks = hooks, use_past_kv_cache = cache,
                          verbose = false})
    if cache then
      T.eq(table.concat(resid, " "), "2,4,32 2,1,32 2,1,32")
      T.eq(table.concat(pattern, " "), "2,4,4,4 2,4,1,5 2,4,1,6")
    else
      T.eq(table.concat(resid, " "), "2,4,32 2,5,32 2,6,32")
      T.eq(table.concat(pattern, " "), "2,4,4,4 2,4,5,5 2,4,6,6")
    end
  end
end)

T.test("steering {pos = -1} with the cache steers each generated position once, when it was new", function()
  local model = gpt2_like()
  local toks = mi.tensor({{3, 1, 4, 1, 5, 9}}, "int64")
  local v = mi.randn({32}, {seed = 2})
  local P, n = toks:size(1), 6
  local got = model:generate(toks, {max_new_tokens = n, do_sample = false, verbose = false,
    fwd_hooks = {{"blocks.0.hook_resid_post", mi.steering.add(v, 3, {pos = -1})}}})
  -- the reference: full forwards whose hook adds 3 v at the prompt's last position and every later one
  local want = argmax_loop(model, toks, nil, n, {{"blocks.0.hook_resid_post", function(x) x[{{}, {P - 1}}]:add_(v * 3) end}})
  T.eq(enc(got), enc(want))
  local uncached = model:generate(toks, {max_new_tokens = n, do_sample = false, verbose = false, use_past_kv_cache = false,
    fwd_hooks = {{"blocks.0.hook_resid_post", mi.steering.add(v, 3, {pos = -1})}}})
  T.eq(enc(uncached), enc(argmax_loop(model, toks, nil, n, {{"blocks.0.hook_resid_post", mi.steering.add(v, 3, {pos = -1})}})),
       "without the cache: the last position of each rerun")
  T.truthy(not got:equal(uncached), "the two differ here (else the test shows nothing)")
end)

T.test("a cached step's activations are the full forward's at the last position (final residual, pattern row)", function()
  for _, pair in ipairs({{"gpt2-like", gpt2_like()},
                         {"llama", mi.from_pretrained_no_processing(FX .. "llama", {tokenizer = false})}}) do
    local name, model = pair[1], pair[2]
    local toks = mi.tensor({{3, 1, 4, 1, 5}}, "int64")
    local steps, pats = {}, {}
    local out = model:generate(toks, {max_new_tokens = 4, do_sample = false, verbose = false, fwd_hooks = {
      {"ln_final.hook_normalized", function(x) steps[#steps + 1] = x[{{}, -1}]:clone() end},
      {"blocks.1.attn.hook_pattern", function(x) pats[#pats + 1] = x[{{}, {}, -1}]:clone() end}}})
    local _, cache = model:run_with_cache(out[{{}, {0, -1}}])   -- every position that was fed
    local fin, pat = cache["ln_final.hook_normalized"], cache["blocks.1.attn.hook_pattern"]
    T.eq(#steps, 4)
    for i, s in ipairs(steps) do
      local p = 5 + i - 2                                      -- the position fed at step i
      T.truthy(rel_err(s, fin[{{}, p}]) < 1e-5, name .. ": ln_final at position " .. p)
      T.truthy(rel_err(pats[i], pat[{{}, {}, p, {0, p + 1}}]) < 1e-5, name .. ": pattern row " .. p)
    end
  end
end)

-- ---------------------------------------------------------------- sampling
-- chi-square statistic of counts against probabilities
local function chi2(counts, probs, n)
  local x = 0
  for i, p in ipairs(probs) do x = x + (counts[i] - n * p) ^ 2 / (n * p) end
  return x
end

local function draw_counts(logits, n, opts)
  local V = logits:size(0)
  local ids = mi.utils.sample_logits(logits:view(1, V):expand(n, V), opts):totable()
  local c = {}
  for i = 1, V do c[i] = 0 end
  for _, id in ipairs(ids) do c[id + 1] = c[id + 1] + 1 end
  return c
end

T.test("sample_logits: frequencies of seeded draws match softmax(logits / T) (chi-square, df 5, p = 0.001)", function()
  local logits = mi.tensor({1.0, 0.2, -0.5, 2.0, 0.0, -1.5})
  local n, crit = 20000, 20.52
  for _, temp in ipairs{1.0, 0.7, 2.5} do
    local c = draw_counts(logits, n, {temperature = temp, seed = 17})
    local want = (logits / temp):softmax(-1):totable()
    local x = chi2(c, want, n)
    T.truthy(x < crit, ("T = %g: chi-square %.2f >= %.2f"):format(temp, x, crit))
    local wrong = (logits / (temp * 1.25)):softmax(-1):totable()
    T.truthy(chi2(c, wrong, n) > crit, ("T = %g: a 25%% wrong temperature passes the same bound"):format(temp))
  end
  -- freq_penalty: logits / T - penalty * (count of each token in tokens)
  local tokens = mi.tensor({{3, 3, 0, 5, 3}}, "int64"):expand(n, 5)
  local c = draw_counts(logits, n, {temperature = 0.8, freq_penalty = 0.4, tokens = tokens, seed = 3})
  local adj = logits / 0.8 - mi.tensor({1, 0, 0, 3, 0, 1}) * 0.4
  T.truthy(chi2(c, adj:softmax(-1):totable(), n) < crit, "freq_penalty frequencies")
  T.truthy(chi2(c, (logits / 0.8):softmax(-1):totable(), n) > crit, "the penalty changes the frequencies")
end)

T.test("sample_logits: top_k stays in the k largest, top_p in TransformerLens's nucleus; seeds repeat", function()
  local model = mi.from_pretrained_no_processing("models/attn_only_2L")
  local logits = model(model:to_tokens("The cat sat on the"))[0][-1]       -- [V]
  local V, n = logits:size(0), 400
  local _, top = logits:topk(5)
  local in_top = {}
  for _, id in ipairs(top:totable()) do in_top[id] = true end
  local ids = mi.utils.sample_logits(logits:view(1, V):expand(n, V), {top_k = 5, seed = 1}):totable()
  local distinct = {}
  for _, id in ipairs(ids) do T.truthy(in_top[id], "top_k = 5 drew " .. id); distinct[id] = true end
  local nd = 0
  for _ in pairs(distinct) do nd = nd + 1 end
  T.truthy(nd >= 3, "top_k = 5 drew only " .. nd .. " distinct tokens")
  -- top_p = 0.6: sorted probabilities; a token stays when the mass before it is <= 0.6
  local p, order = logits:softmax(-1):sort(-1, true)
  local kept, before = {}, 0
  for k = 0, V - 1 do
    if k > 0 and before > 0.6 then break end
    kept[order[k]:item()] = true
    before = before + p[k]:item()
  end
  local outside = 0
  for _, id in ipairs(mi.utils.sample_logits(logits:view(1, V):expand(n, V), {top_p = 0.6, seed = 2}):totable()) do
    T.truthy(kept[id], "top_p = 0.6 drew " .. id .. " outside the nucleus")
  end
  for _, id in ipairs(mi.utils.sample_logits(logits:view(1, V):expand(n, V), {seed = 2}):totable()) do
    if not kept[id] then outside = outside + 1 end
  end
  T.truthy(outside > 0, "plain sampling never left the nucleus: the check could not fail")
  -- the same seed, the same draws; greedy at temperature 0
  local a = mi.utils.sample_logits(logits:view(1, V):expand(50, V), {seed = 9})
  local b = mi.utils.sample_logits(logits:view(1, V):expand(50, V), {seed = 9})
  local c = mi.utils.sample_logits(logits:view(1, V):expand(50, V), {seed = 10})
  T.truthy(a:equal(b) and not a:equal(c), "seeded draws repeat, other seeds differ")
  T.eq(mi.utils.sample_logits(logits:view(1, V), {temperature = 0})[0]:item(), logits:argmax():item())
  T.raises(function() mi.utils.sample_logits(logits:view(1, V), {top_k = 0}) end, "sample_logits: top_k must be a positive integer")
  T.raises(function() mi.utils.sample_logits(logits:view(1, V), {freq_penalty = 1}) end, "freq_penalty needs the tokens")
end)

T.test("generate with sampling: the same seed gives the same tokens, cached or not; mi.manual_seed without a seed", function()
  local model = mi.from_pretrained_no_processing("models/attn_only_2L")
  local toks = model:to_tokens("Once upon a time")
  local o = {max_new_tokens = 12, top_p = 0.9, temperature = 0.8, seed = 4, stop_at_eos = false, verbose = false}
  local a = model:generate(toks, o)
  o.use_past_kv_cache = false
  local b = model:generate(toks, o)
  T.eq(enc(a), enc(b), "cached and uncached sampling with one seed")
  o.seed, o.use_past_kv_cache = 5, nil
  T.truthy(not model:generate(toks, o):equal(a), "another seed, other tokens")
  o.seed = nil
  mi.manual_seed(3); local c = model:generate(toks, o)
  mi.manual_seed(3); local d = model:generate(toks, o)
  T.eq(enc(c), enc(d), "mi.manual_seed makes generate repeat")
end)

T.test("EOS: a row stops at its EOS and gets EOS padding; generation ends when every row has stopped", function()
  local model = mi.from_pretrained_no_processing("models/attn_only_2L")
  local toks, mask = model:to_tokens({"The man went to the", "In the"}, {padding_side = "left"})
  local P, n = toks:size(1), 8
  local free = model:generate({"The man went to the", "In the"}, {max_new_tokens = n, do_sample = false,
                                                                  stop_at_eos = false, return_type = "tokens", verbose = false})
  T.eq(enc(free), enc(argmax_loop(model, toks, mask, n)), "a list of prompts is padded on the left")
  local rows = free:totable()
  local eos = rows[1][P + 3]                                  -- row 0's third new token
  local function expected(row, stop_list, pad)
    local out, done = {}, false
    for i = 1, P + n do
      if i <= P then out[i] = row[i]
      elseif done then out[i] = pad
      else out[i] = row[i]; done = stop_list[row[i]] or false end
    end
    return out
  end
  local got = model:generate({"The man went to the", "In the"}, {max_new_tokens = n, do_sample = false,
                             eos_token_id = eos, return_type = "tokens", verbose = false})
  local w0, w1 = expected(rows[1], {[eos] = true}, eos), expected(rows[2], {[eos] = true}, eos)
  T.eq(mi.json.encode(got:totable()), mi.json.encode({table.move(w0, 1, got:size(1), 1, {}),
                                                      table.move(w1, 1, got:size(1), 1, {})}))
  -- both rows stop early: the output is shorter than P + n
  local e1 = rows[2][P + 2]
  local both = model:generate({"The man went to the", "In the"}, {max_new_tokens = n, do_sample = false,
                              eos_token_id = {eos, e1}, return_type = "tokens", verbose = false})
  local tok_eos = model.tokenizer:eos_token_id()
  local x0 = expected(rows[1], {[eos] = true, [e1] = true}, tok_eos)
  local x1 = expected(rows[2], {[eos] = true, [e1] = true}, tok_eos)
  T.truthy(both:size(1) < P + n, "every row stopped: shorter output, got " .. both:size(1))
  T.eq(mi.json.encode(both:totable()), mi.json.encode({table.move(x0, 1, both:size(1), 1, {}),
                                                       table.move(x1, 1, both:size(1), 1, {})}),
       "a list of stop tokens pads with the tokenizer's EOS")
  -- the same prompts as left-padded tokens: padding_side "left" finds the leading pad tokens
  local tk = model:generate(toks, {max_new_tokens = n, do_sample = false, stop_at_eos = false, padding_side = "left",
                                   verbose = false})
  T.eq(enc(tk), enc(free), "tokens with leading pad tokens and padding_side 'left'")
end)

T.test("return types: a string gives the text without BOS, a list a list, 'tokens' / 'tensor' the tokens", function()
  local model = mi.from_pretrained_no_processing("models/attn_only_2L")
  local o = {max_new_tokens = 5, do_sample = false, stop_at_eos = false, verbose = false}
  local s = model:generate("The cat", o)
  local t = model:generate(model:to_tokens("The cat"), o)
  T.eq(type(s), "string")
  T.eq(s, model.tokenizer:decode(t[0][{{1}}]))
  T.eq(s:sub(1, 7), "The cat")
  local l = model:generate({"The cat", "A"}, o)
  T.eq(type(l), "table"); T.eq(#l, 2); T.eq(l[1], s)
  T.eq(l[2]:sub(1, 1), "A")
  o.return_type = "tensor"
  T.truthy(mi.is_tensor(model:generate("The cat", o)))
  o.return_type = "str"
  T.eq(type(model:generate(t, o)), "string")
end)

T.test("errors name generate and say what to write", function()
  local model = mi.from_pretrained_no_processing("models/attn_only_2L")
  local function raises(opts, pat, input)
    T.raises(function() return model:generate(input or "The", opts) end, pat)
  end
  raises({top_k = 0}, "generate: top_k must be a positive integer")
  raises({top_k = 2.5}, "generate: top_k must be a positive integer")
  raises({top_p = 0}, "generate: top_p must be in (0, 1]")
  raises({temperature = -1}, "generate: temperature must be a number >= 0")
  raises({freq_penalty = -0.5}, "generate: freq_penalty must be a number >= 0")
  raises({max_new_tokens = -1}, "generate: max_new_tokens must be an integer >= 0")
  raises({return_type = "text"}, "generate: return_type must be")
  raises({seed = "x"}, "generate: seed must be an integer")
  raises({eos_token_id = "x"}, "generate: eos_token_id must be a token id")
  raises({do_sample = 1}, "generate: do_sample must be true or false")
  raises({max_tokens = 3}, "generate: unknown option 'max_tokens'")
  raises({padding_side = "right"}, "padding_side 'right' cannot generate", {"The cat sat", "A"})
  raises({}, "generate: input must be", 42)
  local bare = gpt2_like()
  T.raises(function() bare:generate(mi.tensor({{1, 2}}, "int64"), {stop_at_eos = true}) end,
           "generate: stop_at_eos needs eos_token_id")
  T.raises(function() bare:generate(mi.tensor({{1, 2}}, "int64"), {max_new_tokens = 2, fwd_hooks = {
    {"blocks.0.hook_resid_pre", function() error("boom") end}}}) end, "boom")
  T.eq(bare:generate(mi.tensor({{1, 2}}, "int64"), {max_new_tokens = 2, do_sample = false}):size(1), 4,
       "the model is usable after a hook raised")
end)

T.done()
