-- The bundled trained models hold the circuits the seed notebook studies, measured as the notebook
-- measures them: models/attn_only_2L (issue 7) and models/attn_only_2L_8k (issue 19: a vocabulary big
-- enough for the fuzzy-induction experiment). SKIPs while a model is absent.
local T = require("testlib")
local mi = require("miwb")
local A = mi.analysis

local function folder_size(dir)
  local total = 0
  for _, name in ipairs{"config.json", "model.safetensors", "tokenizer.json", "README.md"} do
    local fh = assert(io.open(dir .. "/" .. name, "rb"), name)
    total = total + fh:seek("end")
    fh:close()
  end
  return total
end

-- the notebook's three measurements on repeated random tokens (seq_len 50, batch 10)
local function induction_checks(model, label, n_heads, min_score)
  T.test(("%s: %d induction head(s) >= %s, a previous-token head, 3 nats of in-context gain"):format(label, n_heads,
         min_score), function()
    local tokens = A.generate_repeated_tokens(model, 50, 10, {seed = 0})
    local scores = A.induction_scores(model, tokens)
    T.truthy(#A.heads_above(scores, min_score) >= n_heads, "induction scores:\n" .. tostring(scores))
    local logits, cache = model:run_with_cache(tokens, {names_filter = function(n)
      return n:match("hook_pattern$") ~= nil end})
    local s = A.prev_attn_detector(model, cache)
    T.truthy(s:max():item() >= 0.35, "previous-token scores:\n" .. tostring(s))
    local lp = A.get_log_probs(logits, tokens)
    local first = lp:narrow(1, 0, 50):mean():item()
    local second = lp:narrow(1, 50, 50):mean():item()
    T.truthy(second - first >= 3, ("first half %.3f, second half %.3f"):format(first, second))
  end)
end

local dir2 = "models/attn_only_2L_8k"
if mi.utils.file_exists(dir2 .. "/config.json") then
  local m2 = mi.from_pretrained_no_processing(dir2)
  T.test("second bundled model: 2 layers, attention only, >= 8192 tokens, under 16 MB", function()
    T.eq(m2.cfg.n_layers, 2)
    T.truthy(m2.cfg.attn_only)
    T.truthy(m2.cfg.d_vocab >= 8192 and m2.tokenizer:vocab_size() == m2.cfg.d_vocab)
    T.truthy(folder_size(dir2) <= 16 * 1024 * 1024, ("%d bytes"):format(folder_size(dir2)))
  end)
  induction_checks(m2, "second bundled model", 1, 0.6)
  T.test("second bundled model: >= 300 WordNet synonym pairs of single tokens with the default sense filter", function()
    local words = assert(mi.wordnet.load_wordlist())
    local n = #mi.wordnet.synonym_pairs{max_sense = 2, keep = function(w)
      return words[w] and w:match("^%l+$") and #m2.tokenizer:encode_list(" " .. w, {add_special_tokens = false}) == 1
    end}
    T.truthy(n >= 300, n .. " pairs")
  end)
  T.test("second bundled model: from_pretrained's processing keeps the log-probs", function()
    local processed
    T.warnings(function() processed = mi.from_pretrained(dir2) end)
    local tokens = A.generate_repeated_tokens(m2, 20, 2, {seed = 1})
    local d = (processed(tokens):log_softmax(-1) - m2(tokens):log_softmax(-1)):abs():max():item()
    T.truthy(d < 1e-3, "log-probs differ by " .. d)
  end)
else
  print("SKIP - second bundled model: " .. dir2 .. " is not there yet")
end

local dir = "models/attn_only_2L"
local f = io.open(dir .. "/config.json")
if not f then
  print("SKIP - bundled model: " .. dir .. " is not there yet")
  T.done()
end
f:close()

local model = mi.from_pretrained_no_processing(dir)

T.test("bundled model: a 2-layer attention-only shortformer model with its tokenizer, under 16 MB", function()
  T.eq(model.cfg.n_layers, 2)
  T.truthy(model.cfg.attn_only)
  T.eq(model.cfg.positional_embedding_type, "shortformer")
  T.truthy(model.tokenizer ~= nil, "tokenizer")
  T.truthy(folder_size(dir) <= 16 * 1024 * 1024, ("%d bytes"):format(folder_size(dir)))
end)

induction_checks(model, "bundled model", 2, 0.5)

T.test("bundled model: from_pretrained follows TransformerLens (shortformer: no centred unembedding)", function()
  local processed
  local got = T.warnings(function() processed = mi.from_pretrained(dir) end)
  T.truthy(#got == 3 and got[2]:find("center_unembed=True for a shortformer model", 1, true), table.concat(got, "\n"))
  local tokens = A.generate_repeated_tokens(model, 20, 2, {seed = 1})
  -- only fold_value_biases applies, which leaves the logits as they are
  local d = (processed(tokens) - model(tokens)):abs():max():item()
  T.truthy(d < 1e-4, "logits differ by " .. d)
end)

T.done()
