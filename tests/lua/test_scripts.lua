-- Every script of scripts/ runs on the hand-built toy model (whose circuit is known: previous-token
-- head 0.1, induction head 1.2) and its results.json says what the planted circuit implies.
-- Scripts that need a tokenizer run on the bundled trained model when it is in the repository.
local T = require("testlib")
local mi = require("miwb")

local build = os.getenv("MIWB_BUILD") or "build"
local miwb = build .. "/miwb"
local tmp = os.tmpname()
os.remove(tmp)
os.execute("mkdir -p " .. tmp)

local function run(script, args, env)
  local out = tmp .. "/" .. script
  local cmd = ("%s%s scripts/%s.lua --out %s %s 2>&1"):format(env or "", miwb, script, out, args or "")
  local p = io.popen(cmd)
  local text = p:read("a")
  local ok, _, code = p:close()
  return text, ok and 0 or code, out
end

local function results(dir)
  local f = assert(io.open(dir .. "/results.json"))
  local r = mi.json.decode(f:read("a"))
  f:close()
  return r
end

local function png_ok(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local sig = f:read(8)
  f:close()
  return sig == "\137PNG\r\n\26\n"
end

local function figures_ok(r)
  local n = 0
  for _, p in pairs(r.figures or {}) do
    T.truthy(png_ok(p), "figure " .. tostring(p) .. " is a PNG")
    n = n + 1
  end
  T.truthy(n > 0, "at least one figure")
end

T.test("induction.lua finds the planted heads", function()
  local text, code, out = run("induction", "--model toy --batch 4")
  T.eq(code, 0, text)
  local r = results(out)
  T.eq(table.concat(r.induction_heads, ","), "1.2")
  T.eq(table.concat(r.prev_token_heads, ","), "0.1")
  T.truthy(r.second_half_log_prob - r.first_half_log_prob > 3, "second copy predicted")
  T.truthy(text:find("induction heads (score > 0.5): 1.2", 1, true), "report line")
  figures_ok(r)
  -- same seed, same numbers
  local _, _, out2 = run("induction", "--model toy --batch 4 --out " .. tmp .. "/induction2")
  local r2 = results(tmp .. "/induction2")
  T.eq(r2.first_half_log_prob, r.first_half_log_prob)
  T.eq(out2 ~= nil, true)
end)

T.test("detectors.lua", function()
  local text, code, out = run("detectors", "--model toy")
  T.eq(code, 0, text)
  local r = results(out)
  T.eq(table.concat(r.previous_token.heads, ","), "0.1")
  T.eq(table.concat(r.induction.heads, ","), "1.2")
  T.eq(#r.current_token.heads, 0)
  T.eq(#r.first_token.heads, 0)
  figures_ok(r)
end)

T.test("hooks_ablation.lua: the planted heads cost the most when ablated", function()
  local text, code, out = run("hooks_ablation", "--model toy --batch 4")
  T.eq(code, 0, text)
  local r = results(out)
  local z = r.zero_ablation            -- [layer][head], 1-based lists
  T.truthy(z[1][2] > 1 and z[2][3] > 1, "planted heads")
  for l = 1, 2 do for h = 1, 4 do
    if not ((l == 1 and h == 2) or (l == 2 and h == 3)) then T.truthy(math.abs(z[l][h]) < 0.1) end
  end end
  T.truthy(r.induction_scores_no_pos[2][3] < 0.2, "no positions, no previous-token head, no induction")
  figures_ok(r)
end)

T.test("logit_attribution.lua: the identity holds and the induction head carries the repeat", function()
  local text, code, out = run("logit_attribution", "--model toy")
  T.eq(code, 0, text)
  local r = results(out)
  T.truthy(r.repeated.max_identity_error < 1e-3)
  local labels = r.labels
  local idx
  for i, l in ipairs(labels) do if l == "L1H2" then idx = i end end
  T.truthy(idx, "label L1H2")
  T.truthy(r.repeated.second_copy_mean[idx] > r.repeated.first_copy_mean[idx] + 3)
  figures_ok(r)
end)

T.test("ov_qk_circuits.lua", function()
  local text, code, out = run("ov_qk_circuits", "--model toy --chunk 37")
  T.eq(code, 0, text)
  local r = results(out)
  T.eq(r.induction_head[2], 2)
  T.eq(r.prev_token_head[2], 1)
  T.near(r.ov_top1, 1, 1e-9)
  T.truthy(r.pos_subdiagonal_mean > 0.99)
  figures_ok(r)
end)

T.test("composition.lua: K-composition of the planted pair far above the baseline", function()
  local text, code, out = run("composition", "--model toy --samples 40")
  T.eq(code, 0, text)
  local r = results(out)
  local k = r.composition.K[2][3]      -- row 0.1, column 1.2
  T.truthy(k > r.baseline_mean + 20 * r.baseline_std)
  T.near(r.k_comp_top1, 1, 1e-9)
  T.truthy(r.decomposition_error_q < 1e-3 and r.decomposition_error_k < 1e-3)
  figures_ok(r)
end)

T.test("fuzzy_induction.lua refuses a model without a tokenizer, clearly", function()
  local text, code = run("fuzzy_induction", "--model toy")
  T.truthy(code ~= 0)
  T.truthy(text:find("no tokenizer", 1, true), text)
end)

T.test("gpt2_small.lua says how to get GPT-2 small when it is not in the cache", function()
  -- MIWB_HOME points at an empty folder for this run
  local text, code = run("gpt2_small", "", "MIWB_HOME=" .. tmp .. "/empty-home ")
  T.eq(code, 0, text)
  T.truthy(text:find("miwb pull gpt2", 1, true), text)
end)

T.test("scripts reject unknown options in one line and print --help", function()
  local text, code = run("induction", "--model toy --bogus 3")
  T.eq(code, 2)
  T.eq(text, "induction: unknown option --bogus (see --help)\n")
  text, code = run("induction", "--seq_len many")
  T.eq(code, 2)
  T.eq(text, "induction: --seq_len wants a number, got 'many' (see --help)\n")
  text, code = run("detectors", "--help")
  T.eq(code, 0)
  T.truthy(text:find("usage: miwb scripts/detectors.lua", 1, true))
end)

T.test("every script's --help says what each flag means and its default", function()
  local p = io.popen("ls scripts/*.lua")
  local n = 0
  for path in p:lines() do
    local name = path:match("scripts/(.-)%.lua$")
    local h = io.popen(miwb .. " " .. path .. " --help 2>&1")
    local text = h:read("a")
    local ok = h:close()
    T.truthy(ok, name .. " --help failed: " .. text)
    local flags = 0
    for line in text:gmatch("[^\n]+") do
      if line:match("^  %-%-") then
        flags = flags + 1
        T.truthy(line:match("^  %-%-[%w_]+ +%S.* %(default: .+%)$"), name .. ": " .. line)
      end
    end
    T.truthy(flags >= 3, name .. ": " .. text)
    n = n + 1
  end
  p:close()
  T.truthy(n >= 9)
end)

T.test("train_attn_only.lua takes flags, and writes a new folder, not the bundled model, by default", function()
  local h = io.popen(miwb .. " scripts/train_attn_only.lua --help 2>&1")
  local text = h:read("a")
  h:close()
  T.truthy(text:find("--out +.-%(default: models/attn_only_2L_new%)"), text)
  T.truthy(text:find("--steps +training steps %(default: 11000%)"), text)
  h = io.popen(miwb .. " scripts/train_attn_only.lua steps=10 2>&1; echo \"rc=$?\"")
  text = h:read("a")
  h:close()
  T.eq(text, "train_attn_only: unexpected argument 'steps=10' (see --help)\nrc=2\n")
end)

-- fuzzy_induction.lua end to end with a real tokenizer (GPT-2's, from ../shared/assets) on a
-- small random-weight model: no induction at all, which the finding must say.
local gpt2_tok = (os.getenv("MIWB_SHARED") or "../shared") .. "/assets/gpt2/tokenizer.json"
local tf = io.open(gpt2_tok)
if tf then
  tf:close()
  T.test("fuzzy_induction.lua on a random model with GPT-2's tokenizer", function()
    local cfg = mi.HookedTransformerConfig{d_model = 16, d_head = 4, n_heads = 2, n_layers = 2, n_ctx = 64,
      d_vocab = 50257, attn_only = true, normalization_type = "None",
      positional_embedding_type = "shortformer", use_attn_result = true, seed = 1}
    local folder = tmp .. "/random-gpt2tok"
    mi.save_pretrained(mi.HookedTransformer(cfg), folder, {tokenizer = gpt2_tok})
    local text, code, out = run("fuzzy_induction", "--model " .. folder .. " --reps 1 --n_words 10 --max_pairs 60")
    T.eq(code, 0, text)
    local r = results(out)
    T.truthy(r.n_pairs_all >= 100, "synonym pairs of single GPT-2 tokens: " .. tostring(r.n_pairs_all))
    T.eq(r.n_pairs, 60)
    T.eq(#r.stripe_attention.exact, 2); T.eq(#r.stripe_attention.exact[1], 2)
    T.truthy(r.finding:find("does no induction", 1, true), r.finding)
    figures_ok(r)
  end)
else
  print("SKIP - fuzzy_induction.lua with GPT-2's tokenizer: ../shared/assets is absent")
end

local bundled = "models/attn_only_2L"
local f = io.open(bundled .. "/config.json")
if f then
  f:close()
  T.test("fuzzy_induction.lua on the bundled model: its log-probs and statistics recomputed", function()
    local N = 8
    local text, code, out = run("fuzzy_induction", "--model " .. bundled .. " --reps 2 --n_words " .. N .. " --max_sense 0")
    T.eq(code, 0, text)
    local r = results(out)
    T.truthy(r.n_pairs >= 20)
    -- the first sequence's log-probs, from one plain forward pass per condition
    local model = mi.from_pretrained_no_processing(bundled)
    local w = r.example.words
    local function id(word) return model.tokenizer:encode_list(" " .. word, {add_special_tokens = false})[1] end
    for _, cond in ipairs{"exact", "synonym", "shuffled", "control"} do
      local first = cond == "exact" and w.second or cond == "synonym" and w.first or w[cond]
      local toks = {model.tokenizer:bos_token_id()}
      for k = 1, N do toks[#toks + 1] = id(first[k]) end
      for k = 1, N do toks[#toks + 1] = id(w.second[k]) end
      local lsm = model(mi.tensor({toks}, {dtype = "int64"})):log_softmax(-1)
      for k = 2, N do
        local pos = N + k - 1        -- 0-based position of A(k-1)* in the second half
        T.near(r.example.log_probs[cond].target[k - 1], lsm[{0, pos, id(w.second[k])}]:item(), 1e-4, cond)
        T.near(r.example.log_probs[cond].copy[k - 1], lsm[{0, pos, id(w.first[k])}]:item(), 1e-4, cond)
        T.near(r.example.log_probs[cond].random[k - 1], lsm[{0, pos, id(w.random[k])}]:item(), 1e-4, cond)
      end
    end
    -- effects: the mean of the per-pair table; intervals around it; exact repeats clearly predicted
    for _, name in ipairs{"exact", "fuzzy", "copy", "random", "fuzzy_vs_random", "priming", "fuzzy_induction"} do
      local sum, n = 0, 0
      for _, e in ipairs(r.per_pair) do sum = sum + e[name]; n = n + 1 end
      local e = r.effects[name]
      T.near(e.mean, sum / n, 1e-9, name)
      T.truthy(e.ci95[1] <= e.mean and e.mean <= e.ci95[2], name)
      T.truthy(e.p_sign_flip > 0 and e.p_sign_flip <= 1, name)
    end
    for _, e in ipairs(r.per_pair) do
      T.near(e.fuzzy_vs_random, e.fuzzy - e.random, 1e-9)
      T.near(e.fuzzy_induction, e.fuzzy - e.priming, 1e-5)
    end
    T.truthy(r.effects.exact.mean > 3 and r.effects.exact.ci95[1] > 2, "exact repeats are predicted")
    T.truthy(r.effects.exact.p_sign_flip < 0.01)
    T.truthy(r.top_heads[1].exact > 0.5, "an induction head attends along the stripe")
    T.truthy(r.finding:find(("%+.3f nats"):format(r.effects.fuzzy_induction.mean), 1, true), r.finding)
    figures_ok(r)
  end)
else
  print("SKIP - fuzzy_induction.lua on the bundled model: models/attn_only_2L is not there yet")
end

os.execute("rm -rf " .. tmp)
T.done()
