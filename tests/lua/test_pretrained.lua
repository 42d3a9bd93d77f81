-- test_pretrained.lua: lua/miwb/pretrained.lua without a model class where possible.
--   conversion of a tiny Hugging Face GPT-2 folder against tests/fixtures/gen_hf_gpt2.py's own
--   TransformerLens-layout dumps (torch, float64 reference for the processing);
--   each processing step checked by what it must preserve, with plain tensor ops here;
--   model names, the cache, and `miwb pull` against a local HTTP server (127.0.0.1 only).
local T = require("testlib")
local mi = require("miwb")
local P = mi.pretrained

local HF = "tests/fixtures/hf_gpt2"
local EXP = "tests/fixtures/hf_gpt2_expect/"
local MIWB = (os.getenv("MIWB_BUILD") or "build") .. "/miwb"
local TMP = os.tmpname()
os.remove(TMP)
assert(os.execute("mkdir -p " .. TMP))

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function keys(t)
  local k = {}
  for n in pairs(t) do k[#k + 1] = n end
  table.sort(k)
  return k
end

-- same names; every tensor equal within tol (relative to the reference's largest magnitude)
local function same_sd(got, want, tol, what)
  T.eq(table.concat(keys(got), " "), table.concat(keys(want), " "), what .. ": names")
  for name, w in pairs(want) do
    local g = got[name]
    T.eq(table.concat(g:shape(), ","), table.concat(w:shape(), ","), what .. ": shape of " .. name)
    local scale = math.max(w:abs():max():item(), 1e-6)
    local err = (g - w):abs():max():item()
    if err > tol * scale then
      error(("%s: %s differs by %.3g (scale %.3g, tol %.3g)"):format(what, name, err, scale, tol), 2)
    end
  end
end

local function maxdiff(a, b) return (a - b):abs():max():item() end

-- LayerNorm as TransformerLens computes it, written out here
local function layernorm(x, w, b, eps)
  local xc = x - x:mean(-1, true)
  local y = xc / ((xc * xc):mean(-1, true) + eps):sqrt()
  if w then y = y * w + b end
  return y
end

-- a random TransformerLens state dict (1 layer, d 8, 2 heads of 4, d_mlp 16, vocab 11)
local cfg0 = {d_model = 8, n_heads = 2, d_head = 4, d_mlp = 16, d_vocab = 11, n_ctx = 6, n_layers = 1,
              normalization_type = "LN", eps = 1e-5, attn_only = false, positional_embedding_type = "standard"}
local function random_sd(g)
  local d, H, dh, m, V = 8, 2, 4, 16, 11
  local function r(...) return mi.randn({...}, g) end
  return {
    ["embed.W_E"] = r(V, d), ["pos_embed.W_pos"] = r(6, d),
    ["blocks.0.ln1.w"] = r(d) * 0.5 + 1, ["blocks.0.ln1.b"] = r(d),
    ["blocks.0.attn.W_Q"] = r(H, d, dh), ["blocks.0.attn.W_K"] = r(H, d, dh), ["blocks.0.attn.W_V"] = r(H, d, dh),
    ["blocks.0.attn.b_Q"] = r(H, dh), ["blocks.0.attn.b_K"] = r(H, dh), ["blocks.0.attn.b_V"] = r(H, dh),
    ["blocks.0.attn.W_O"] = r(H, dh, d), ["blocks.0.attn.b_O"] = r(d),
    ["blocks.0.ln2.w"] = r(d) * 0.5 + 1, ["blocks.0.ln2.b"] = r(d),
    ["blocks.0.mlp.W_in"] = r(d, m), ["blocks.0.mlp.b_in"] = r(m),
    ["blocks.0.mlp.W_out"] = r(m, d), ["blocks.0.mlp.b_out"] = r(d),
    ["ln_final.w"] = r(d) * 0.5 + 1, ["ln_final.b"] = r(d),
    ["unembed.W_U"] = r(d, V), ["unembed.b_U"] = r(V),
  }
end

-- ------------------------------------------------------------------ configs
T.test("hf_config_to_tl: the fixture's GPT2Config", function()
  local cfg = P.hf_config_to_tl(mi.json.decode(read(HF .. "/config.json")), "tiny")
  T.eq(cfg.d_model, 32); T.eq(cfg.n_heads, 4); T.eq(cfg.d_head, 8); T.eq(cfg.n_layers, 2)
  T.eq(cfg.d_mlp, 128); T.eq(cfg.n_ctx, 16); T.eq(cfg.d_vocab, 100); T.eq(cfg.d_vocab_out, 100)
  T.eq(cfg.act_fn, "gelu_new"); T.eq(cfg.normalization_type, "LN"); T.near(cfg.eps, 1e-5, 0)
  T.eq(cfg.positional_embedding_type, "standard"); T.eq(cfg.original_architecture, "GPT2LMHeadModel")
end)

local real = "../shared/assets/gpt2/config.json"
if os.getenv("MIWB_SHARED") then real = os.getenv("MIWB_SHARED") .. "/assets/gpt2/config.json" end
if io.open(real) then
  T.test("hf_config_to_tl: GPT-2 small's published config", function()
    local cfg = P.hf_config_to_tl(mi.json.decode(read(real)), "gpt2")
    T.eq(cfg.d_model, 768); T.eq(cfg.n_heads, 12); T.eq(cfg.d_head, 64); T.eq(cfg.n_layers, 12)
    T.eq(cfg.d_mlp, 3072); T.eq(cfg.n_ctx, 1024); T.eq(cfg.d_vocab, 50257); T.near(cfg.eps, 1e-5, 0)
  end)
else
  print("SKIP - GPT-2 small's config: " .. real .. " is absent")
end

T.test("hf_config_to_tl: bad configs name the field", function()
  local good = mi.json.decode(read(HF .. "/config.json"))
  local function bad(field, value, pattern)
    local c = {}
    for k, v in pairs(good) do c[k] = v end
    c[field] = value
    T.raises(function() P.hf_config_to_tl(c, "x", "cfg.json") end, pattern)
  end
  bad("n_embd", nil, "cfg.json: field 'n_embd' must be a positive integer")
  bad("n_layer", "2", "field 'n_layer' must be a positive integer")
  bad("n_head", 5, "n_embd 32 is not a multiple of n_head 5")
  bad("model_type", "llama", "model_type 'llama' is not supported")
  bad("layer_norm_epsilon", -1, "layer_norm_epsilon")
end)

T.test("kept fuzz inputs for config.json (tests/fuzz/config) are read or refused cleanly", function()
  local p = io.popen("ls tests/fuzz/config 2>/dev/null")
  local n = 0
  for f in p:lines() do
    if f ~= "README" then
      local text = read("tests/fuzz/config/" .. f)
      local ok, conf = pcall(mi.json.decode, text)
      if ok and type(conf) == "table" then
        local ok2, cfg = pcall(P.read_config, conf, "fuzz", "fuzz.json")
        if ok2 then T.truthy(cfg.d_model > 0 and cfg.n_heads > 0 and cfg.d_head > 0, f)
        else T.truthy(type(cfg) == "string" and cfg:find("fuzz.json", 1, true), f .. ": " .. tostring(cfg)) end
      else
        T.eq(type(conf), ok and type(conf) or "string", f)
      end
      n = n + 1
    end
  end
  p:close()
  T.truthy(n > 0, "corpus present")
end)

-- ------------------------------------------------------------------ conversion
T.test("HF GPT-2 folder -> TransformerLens names and shapes (model.safetensors)", function()
  local sd, cfg = mi.load_pretrained(HF, {fold_ln = false, center_writing_weights = false,
                                          center_unembed = false, fold_value_biases = false})
  T.eq(cfg.normalization_type, "LN")
  same_sd(sd, mi.load(EXP .. "tl_raw.safetensors"), 0, "raw conversion")
  T.eq(table.concat(sd["blocks.1.attn.W_Q"]:shape(), ","), "4,32,8")
  T.eq(table.concat(sd["blocks.1.attn.W_O"]:shape(), ","), "4,8,32")
  T.eq(table.concat(sd["unembed.W_U"]:shape(), ","), "32,100")
end)

T.test("HF GPT-2 folder with pytorch_model.bin (transformer. prefix, tied lm_head, buffers)", function()
  local dir = TMP .. "/binonly"
  assert(os.execute(("mkdir -p %s && cp %s/config.json %s/pytorch_model.bin %s/"):format(dir, HF, HF, dir)))
  local sd = mi.load_pretrained(dir, {fold_ln = false, center_writing_weights = false,
                                      center_unembed = false, fold_value_biases = false})
  same_sd(sd, mi.load(EXP .. "tl_raw.safetensors"), 0, "conversion from .bin")
end)

T.test("from_pretrained's processing matches TransformerLens's arithmetic (float64 reference)", function()
  local sd, cfg = mi.load_pretrained(HF)
  T.eq(cfg.normalization_type, "LNPre")
  T.eq(sd["blocks.0.ln1.w"], nil, "ln weights folded away")
  same_sd(sd, mi.load(EXP .. "tl_processed.safetensors"), 2e-6, "processed")
end)

T.test("missing or mis-shaped tensors name the tensor and the shapes", function()
  local cfg = P.hf_config_to_tl(mi.json.decode(read(HF .. "/config.json")), "tiny")
  local sd = mi.load(HF .. "/model.safetensors")
  sd["h.1.mlp.c_fc.bias"] = nil
  T.raises(function() P.convert_hf_gpt2(sd, cfg, "x.safetensors") end,
           "x.safetensors: tensor 'h.1.mlp.c_fc.bias' is missing")
  sd = mi.load(HF .. "/model.safetensors")
  sd["h.0.attn.c_attn.weight"] = mi.zeros(32, 95)
  T.raises(function() P.convert_hf_gpt2(sd, cfg, "x") end,
           "tensor 'h.0.attn.c_attn.weight' has shape [32,95], the config needs [32,96]")
end)

T.test("a TransformerLens attention-only folder (config fields, half-precision .pth with buffers)", function()
  local sd, cfg = mi.load_pretrained("tests/fixtures/ckpt/tl_attn_only", {fold_ln = false,
    center_writing_weights = false, center_unembed = false, fold_value_biases = false})
  T.eq(cfg.normalization_type, "None"); T.eq(cfg.attn_only, true); T.eq(cfg.n_heads, 4)
  T.eq(cfg.positional_embedding_type, "shortformer")
  T.eq(sd["blocks.0.attn.mask"], nil, "buffers dropped"); T.eq(sd["blocks.1.attn.IGNORE"], nil)
  local exp = mi.json.decode(read("tests/fixtures/ckpt/tl_attn_only.json"))
  local n = 0
  for name, e in pairs(exp) do
    n = n + 1
    local t = sd[name]
    T.truthy(t, name)
    local flat = t:reshape(-1):totable()
    for i, v in ipairs(e.values) do
      if flat[i] ~= v then error(("%s[%d] = %s, expected %s"):format(name, i - 1, flat[i], v)) end
    end
  end
  local m = 0
  for _ in pairs(sd) do m = m + 1 end
  T.eq(m, n)
  -- default processing of a shortformer model without LayerNorm: only fold_value_biases applies
  -- (TransformerLens switches center_unembed off for shortformer models)
  local p = mi.load_pretrained("tests/fixtures/ckpt/tl_attn_only")
  T.eq(maxdiff(p["embed.W_E"], sd["embed.W_E"]), 0, "W_E untouched (no LN)")
  T.eq(p["blocks.0.attn.b_V"]:abs():max():item(), 0)
  T.eq(maxdiff(p["unembed.W_U"], sd["unembed.W_U"]), 0, "W_U not centred (shortformer)")
end)


T.test("TransformerLens's per-config rules: shortformer models get no centring or folding, with its warnings", function()
  local got = T.warnings(function() mi.load_pretrained("tests/fixtures/ckpt/tl_attn_only") end)
  T.eq(#got, 3, table.concat(got, "\n"))
  T.eq(got[1], "You tried to specify fold_ln=True for a shortformer model, but this can't be done! Setting fold_ln=False instead.")
  T.eq(got[2], "You tried to specify center_unembed=True for a shortformer model, but this can't be done! " ..
               "Setting center_unembed=False instead.")
  T.eq(got[3], "You tried to specify center_writing_weights=True for a shortformer model, but this can't be done! " ..
               "Setting center_writing_weights=False instead.")
  -- switched off explicitly: no warning
  got = T.warnings(function() mi.load_pretrained("tests/fixtures/ckpt/tl_attn_only",
    {fold_ln = false, center_unembed = false, center_writing_weights = false}) end)
  T.eq(#got, 0)
  -- a standard-position model without LayerNorm: folding and centring the writing weights are
  -- skipped with TransformerLens's load_and_process_state_dict warnings; the unembedding is centred
  local sd = mi.load_pretrained("tests/fixtures/ckpt/tl_attn_only", {fold_ln = false, center_unembed = false,
    center_writing_weights = false, fold_value_biases = false})
  local cfg = {n_layers = 2, d_model = sd["embed.W_E"]:size(1), normalization_type = "None",
               positional_embedding_type = "standard", attn_only = true}
  local out
  got = T.warnings(function() out = P.process_weights(sd, cfg) end)
  T.eq(table.concat(got, "|"), "You are not using LayerNorm or RMSNorm, so the layer norm weights can't be folded! Skipping|" ..
       "You are not using LayerNorm, so the writing weights can't be centered! Skipping")
  T.truthy(out["unembed.W_U"]:sum(-1):abs():max():item() < 1e-4, "W_U centred")
  T.eq(maxdiff(out["embed.W_E"], sd["embed.W_E"]), 0)
end)

-- ------------------------------------------------------------------ processing, by invariants
T.test("fold_ln: LN(x) W + b before == LNPre(x) W' + b' after (Q, K, V, W_in, W_U)", function()
  local g = mi.Generator(11)
  local sd = random_sd(g)
  local f = P.fold_layer_norm(sd, cfg0)
  T.eq(f["blocks.0.ln1.w"], nil); T.eq(f["ln_final.b"], nil)
  local x = mi.randn({5, 8}, g) * 3 + 1
  local eps = cfg0.eps
  for _, n in ipairs({"Q", "K", "V"}) do
    for h = 0, 1 do
      local before = layernorm(x, sd["blocks.0.ln1.w"], sd["blocks.0.ln1.b"], eps)
        :matmul(sd["blocks.0.attn.W_" .. n]:select(0, h)) + sd["blocks.0.attn.b_" .. n]:select(0, h)
      local after = layernorm(x, nil, nil, eps):matmul(f["blocks.0.attn.W_" .. n]:select(0, h))
        + f["blocks.0.attn.b_" .. n]:select(0, h)
      T.truthy(maxdiff(before, after) < 1e-4, "W_" .. n .. " head " .. h .. ": " .. maxdiff(before, after))
      -- centred reading weights: every column sums to 0 over d_model
      T.truthy(f["blocks.0.attn.W_" .. n]:sum(1):abs():max():item() < 1e-5)
    end
  end
  local before = layernorm(x, sd["blocks.0.ln2.w"], sd["blocks.0.ln2.b"], eps):matmul(sd["blocks.0.mlp.W_in"])
    + sd["blocks.0.mlp.b_in"]
  local after = layernorm(x, nil, nil, eps):matmul(f["blocks.0.mlp.W_in"]) + f["blocks.0.mlp.b_in"]
  T.truthy(maxdiff(before, after) < 1e-4, "W_in")
  before = layernorm(x, sd["ln_final.w"], sd["ln_final.b"], eps):matmul(sd["unembed.W_U"]) + sd["unembed.b_U"]
  after = layernorm(x, nil, nil, eps):matmul(f["unembed.W_U"]) + f["unembed.b_U"]
  T.truthy(maxdiff(before, after) < 1e-4, "W_U")
  -- the input table is left alone
  T.truthy(sd["blocks.0.ln1.w"] ~= nil)
end)

T.test("center_unembed: logits change, log-probs do not", function()
  local g = mi.Generator(12)
  local sd = random_sd(g)
  local c = P.center_unembed(sd)
  local x = mi.randn({4, 8}, g)
  local l0 = x:matmul(sd["unembed.W_U"]) + sd["unembed.b_U"]
  local l1 = x:matmul(c["unembed.W_U"]) + c["unembed.b_U"]
  T.truthy(maxdiff(l0, l1) > 1e-2, "logits moved")
  T.truthy(maxdiff(l0:log_softmax(-1), l1:log_softmax(-1)) < 1e-5)
  T.truthy(c["unembed.W_U"]:sum(-1):abs():max():item() < 1e-5)
end)

T.test("fold_value_biases: a layer's attention output is unchanged for any pattern", function()
  local g = mi.Generator(13)
  local sd = random_sd(g)
  local f = P.fold_value_biases(sd, cfg0)
  T.eq(f["blocks.0.attn.b_V"]:abs():max():item(), 0)
  local x = mi.randn({5, 8}, g)
  local pattern = mi.randn({5, 5}, g):softmax(-1) -- any rows summing to 1
  local function out(s)
    local o = s["blocks.0.attn.b_O"]
    for h = 0, 1 do
      local v = x:matmul(s["blocks.0.attn.W_V"]:select(0, h)) + s["blocks.0.attn.b_V"]:select(0, h)
      o = o + pattern:matmul(v):matmul(s["blocks.0.attn.W_O"]:select(0, h))
    end
    return o
  end
  T.truthy(maxdiff(out(sd), out(f)) < 1e-4, "attention output: " .. maxdiff(out(sd), out(f)))
end)

T.test("center_writing_weights: LNPre of what they write is unchanged; means are 0", function()
  local g = mi.Generator(14)
  local sd = random_sd(g)
  local c = P.center_writing_weights(sd, cfg0)
  for _, n in ipairs({"embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_O", "blocks.0.mlp.W_out"}) do
    T.truthy(c[n]:mean(-1):abs():max():item() < 1e-5, n .. " centred")
    T.truthy(maxdiff(layernorm(sd[n], nil, nil, 1e-5), layernorm(c[n], nil, nil, 1e-5)) < 1e-4, n .. " LNPre")
  end
  T.truthy(math.abs(c["blocks.0.attn.b_O"]:mean():item()) < 1e-6)
  T.truthy(math.abs(c["blocks.0.mlp.b_out"]:mean():item()) < 1e-6)
end)

T.test("process_weights: options switch each step; attn-only models keep their missing LN", function()
  local g = mi.Generator(15)
  local sd = random_sd(g)
  local s1, c1 = P.process_weights(sd, cfg0, {fold_ln = false, center_writing_weights = false,
                                              center_unembed = false, fold_value_biases = false})
  for k, v in pairs(sd) do T.eq(s1[k], v, "untouched " .. k) end
  T.eq(c1.normalization_type, "LN")
  local s2 = P.process_weights(sd, cfg0, {fold_ln = false, center_writing_weights = false, center_unembed = false})
  T.eq(s2["blocks.0.attn.b_V"]:abs():max():item(), 0)
  T.eq(s2["unembed.W_U"], sd["unembed.W_U"])
  -- no LayerNorm at all (the seed notebook's model): fold_ln and centring skip, as in TL
  local ao = {}
  for k, v in pairs(sd) do if not (k:match("ln") or k:match("mlp")) then ao[k] = v end end
  local cfg = {}
  for k, v in pairs(cfg0) do cfg[k] = v end
  cfg.normalization_type, cfg.attn_only = "None", true
  local s3, c3 = P.process_weights(ao, cfg)
  T.eq(c3.normalization_type, "None")
  T.eq(s3["embed.W_E"], ao["embed.W_E"], "W_E not centred without LN")
  T.eq(s3["blocks.0.attn.b_V"]:abs():max():item(), 0)
  T.raises(function() P.process_weights(sd, cfg0, {refactor_factored_attn_matrices = true}) end,
           "refactor_factored_attn_matrices is not supported")
end)

-- ------------------------------------------------------------------ names, cache, pull
T.test("read_config: TransformerLens fields; null normalization is None, absent is LN", function()
  local c = P.read_config(mi.json.decode('{"d_model": 16, "d_head": 4, "n_layers": 1, "n_ctx": 8, ' ..
    '"d_vocab": 10, "normalization_type": null, "attn_only": true}'), "toy", "c.json")
  T.eq(c.normalization_type, "None"); T.eq(c.n_heads, 4); T.eq(c.d_vocab_out, 10); T.eq(c.model_name, "toy")
  c = P.read_config(mi.json.decode('{"d_model": 16, "n_heads": 2, "n_layers": 1, "n_ctx": 8, "d_vocab": 10}'))
  T.eq(c.normalization_type, "LN"); T.eq(c.d_head, 8)
  T.raises(function() P.read_config(mi.json.decode('{"d_model": 16, "n_layers": 1, "n_ctx": 8, "d_vocab": 10}'),
    "x", "c.json") end, "c.json: needs 'n_heads' or 'd_head'")
  T.raises(function() P.read_config(mi.json.decode('{"d_model": 0, "d_head": 4, "n_layers": 1, "n_ctx": 8, ' ..
    '"d_vocab": 10}'), "x", "c.json") end, "c.json: field 'd_model' must be a positive integer")
end)

T.test("TransformerLens model names and aliases", function()
  T.eq(P.resolve("gpt2-small").name, "gpt2")
  T.eq(P.resolve("gpt2").name, "gpt2")
  T.eq(P.resolve("GPT2-Medium").name, "gpt2-medium")
  T.eq(P.resolve("distil-gpt2").name, "distilgpt2")
  T.eq(P.resolve("gpt2-xl").repo, "openai-community/gpt2-xl")
  T.eq(P.resolve("attn_only_2L_half").name, "attn-only-2l-demo")
  T.eq(P.resolve("llama-70b"), nil)
  -- the families miwb converts: TransformerLens's hub-id names and its aliases
  T.eq(P.resolve("pythia-14m").repo, "EleutherAI/pythia-14m")
  T.eq(P.resolve("pythia").name, "EleutherAI/pythia-70m")
  T.eq(P.resolve("pythia-19m").name, "EleutherAI/pythia-70m")
  T.eq(P.resolve("EleutherAI/pythia-125m").name, "EleutherAI/pythia-160m")
  T.eq(P.resolve("pythia-800m").repo, "EleutherAI/pythia-1b")
  T.eq(P.resolve("Qwen/Qwen2-0.5B").repo, "Qwen/Qwen2-0.5B")
  T.eq(P.resolve("qwen/qwen2-0.5b").name, "Qwen/Qwen2-0.5B", "case ignored, as TransformerLens")
  T.eq(P.resolve("Pythia-70M").name, "EleutherAI/pythia-70m")
  T.eq(P.resolve("TinyLlama/TinyLlama-1.1B-Chat-v1.0").repo, "TinyLlama/TinyLlama-1.1B-Chat-v1.0")
  T.eq(P.resolve("HuggingFaceTB/SmolLM2-135M").repo, "HuggingFaceTB/SmolLM2-135M")
  -- any hub repository id; nothing that could leave the cache folder
  T.eq(P.hub_entry("meta-llama/Llama-3.2-1B").repo, "meta-llama/Llama-3.2-1B")
  for _, bad in ipairs({"../x", "a/..", "a/b/c", "/a/b", "a/", "a b/c", "a/.hidden"}) do
    T.eq(P.hub_entry(bad), nil, bad)
  end
  local urls = {}
  for _, f in ipairs(P.files(P.resolve("pythia-70m"), {"s1.safetensors", "s2.safetensors"})) do
    urls[#urls + 1] = f.url:match("/EleutherAI/pythia%-70m/resolve/main/(.*)$")
  end
  T.eq(table.concat(urls, " "), "config.json tokenizer.json model.safetensors.index.json s1.safetensors s2.safetensors")
end)

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

T.test("from_pretrained(NAME) looks only in the cache and says how to fill it", function()
  local home = TMP .. "/empty_home"
  local code, out = run(("MIWB_HOME=%s %s -e 'local mi = require(\"miwb\"); mi.load_pretrained(\"gpt2-small\")'")
    :format(home, MIWB))
  T.truthy(code ~= 0)
  T.truthy(out:find("model 'gpt2-small' is not in the cache (" .. home .. "/models/gpt2)", 1, true), out)
  T.truthy(out:find("miwb pull gpt2", 1, true), out)
  code, out = run(MIWB .. " -e 'require(\"miwb\").load_pretrained(\"no-such-model\")'")
  T.truthy(out:find("neither a model folder", 1, true), out)
end)

T.test("miwb pull offline fails at once, listing which files to put where", function()
  local home = TMP .. "/offline_home"
  local t0 = os.time()
  local code, out = run(("MIWB_HOME=%s MIWB_HUB_URL=http://127.0.0.1:9 %s pull gpt2"):format(home, MIWB))
  T.eq(code, 1, out)
  T.truthy(os.time() - t0 < 15, "took too long")
  T.truthy(out:find("cannot reach the model hub", 1, true), out)
  for _, f in ipairs({"config.json", "model.safetensors", "tokenizer.json"}) do
    T.truthy(out:find(home .. "/models/gpt2/" .. f, 1, true), "names " .. f .. ": " .. out)
  end
  T.truthy(out:find("openai-community/gpt2/resolve/main/model.safetensors", 1, true), out)
  code, out = run(MIWB .. " pull no-such-model")
  T.eq(code, 1)
  T.truthy(out:find("unknown model 'no-such-model'", 1, true), out)
end)

-- a local hub: TMP/hub/openai-community/gpt2/resolve/main/{config.json, model.safetensors, tokenizer.json}
local hub = TMP .. "/hub"
local main = hub .. "/openai-community/gpt2/resolve/main"
assert(os.execute(("mkdir -p %s && cp %s/config.json %s/model.safetensors %s/"):format(main, HF, HF, main)))
write(main .. "/tokenizer.json", '{"model": {"type": "BPE"}}\n')
local srv = io.popen("exec /usr/bin/python3 tests/fixtures/range_server.py " .. hub)
local port, pid = srv:read("n", "n")

T.test("miwb pull: downloads through redirects, resumes a partial file, checks size and sha256", function()
  T.truthy(port and pid, "server started")
  local home = TMP .. "/home"
  local url = ("http://127.0.0.1:%d/redirect"):format(port)
  local dir = home .. "/models/gpt2"
  -- a partial download: the first 5000 bytes of the real file
  local src = read(main .. "/model.safetensors")
  assert(os.execute("mkdir -p " .. dir))
  write(dir .. "/model.safetensors.part", src:sub(1, 5000))
  local code, out = run(("MIWB_HOME=%s MIWB_HUB_URL=%s %s pull gpt2-small"):format(home, url, MIWB))
  T.eq(code, 0, out)
  T.truthy(read(dir .. "/model.safetensors") == src, "the file is complete and equal")
  T.eq(io.open(dir .. "/model.safetensors.part"), nil, "no .part left")
  T.truthy(read(dir .. "/config.json") == read(main .. "/config.json"))
  -- the pulled model loads by name
  code, out = run(("MIWB_HOME=%s %s -e 'local sd, cfg = require(\"miwb\").load_pretrained(\"gpt2-small\"); " ..
    "print(cfg.d_model, cfg.normalization_type)'"):format(home, MIWB))
  T.eq(code, 0, out)
  T.truthy(out:find("32\tLNPre", 1, true), out)
  -- a partial file that does not match the server's: resumed, then refused by the sha256 check
  local home2 = TMP .. "/home2"
  assert(os.execute("mkdir -p " .. home2 .. "/models/gpt2"))
  write(home2 .. "/models/gpt2/model.safetensors.part", string.rep("x", 5000))
  code, out = run(("MIWB_HOME=%s MIWB_HUB_URL=%s %s pull gpt2"):format(home2, url, MIWB))
  T.eq(code, 1, out)
  T.truthy(out:find("sha256", 1, true) and out:find("partial file was removed", 1, true), out)
  T.eq(io.open(home2 .. "/models/gpt2/model.safetensors"), nil)
  -- a second pull of a complete model downloads nothing
  code, out = run(("MIWB_HOME=%s MIWB_HUB_URL=http://127.0.0.1:9 %s pull gpt2"):format(home, MIWB))
  T.eq(code, 0, out)
  T.truthy(out:find("already there", 1, true), out)
end)

T.test("miwb pull attn-only-2l-demo: files from two repositories, the notebook's config written", function()
  local demo = hub .. "/callummcdougall/attn_only_2L_half/resolve/main"
  local neox = hub .. "/EleutherAI/gpt-neox-20b/resolve/main"
  assert(os.execute(("mkdir -p %s %s && cp tests/fixtures/ckpt/tl_attn_only/model.pth %s/attn_only_2L_half.pth"):format(
    demo, neox, demo)))
  write(neox .. "/tokenizer.json", '{"model": {}}')
  local home = TMP .. "/home3"
  local code, out = run(("MIWB_HOME=%s MIWB_HUB_URL=http://127.0.0.1:%d %s pull attn_only_2L_half"):format(
    home, port, MIWB))
  T.eq(code, 0, out)
  local dir = home .. "/models/attn-only-2l-demo"
  T.truthy(read(dir .. "/model.pth") == read("tests/fixtures/ckpt/tl_attn_only/model.pth"))
  T.eq(read(dir .. "/tokenizer.json"), '{"model": {}}')
  local cfg = P.read_config(mi.json.decode(read(dir .. "/config.json")), "demo")
  T.eq(cfg.d_model, 768); T.eq(cfg.n_layers, 2); T.eq(cfg.d_vocab, 50278); T.eq(cfg.attn_only, true)
  T.eq(cfg.normalization_type, "None"); T.eq(cfg.positional_embedding_type, "shortformer")
  T.eq(cfg.use_attn_result, true); T.eq(cfg.seed, 398)
end)

T.test("miwb pull OWNER/NAME: a sharded repository, each shard resumed on its own", function()
  local FAM = "tests/fixtures/hf_families/llama"
  local repo = hub .. "/test-org/tiny-llama/resolve/main"
  local shard1, shard2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
  assert(os.execute(("mkdir -p %s && cp %s/* %s/"):format(repo, FAM, repo)))
  write(repo .. "/tokenizer.json", '{"model": {"type": "BPE"}}\n')
  local home = TMP .. "/home_sharded"
  local dir = home .. "/models/test-org/tiny-llama"
  local url = ("http://127.0.0.1:%d/redirect"):format(port)
  -- a partial second shard whose bytes differ from the server's: resumed (appended to), so refused
  assert(os.execute("mkdir -p " .. dir))
  local src2 = read(FAM .. "/" .. shard2)
  write(dir .. "/" .. shard2 .. ".part", string.rep("x", 3000))
  local code, out = run(("HF_TOKEN= MIWB_HOME=%s MIWB_HUB_URL=%s %s pull test-org/tiny-llama"):format(home, url, MIWB))
  T.eq(code, 1, out)
  T.truthy(out:find(shard2 .. ": sha256", 1, true) and out:find("partial file was removed", 1, true), out)
  -- what came before it is complete: the index and the first shard
  T.truthy(read(dir .. "/model.safetensors.index.json") == read(FAM .. "/model.safetensors.index.json"))
  T.truthy(read(dir .. "/" .. shard1) == read(FAM .. "/" .. shard1), "first shard complete")
  T.eq(io.open(dir .. "/" .. shard2), nil)
  -- now a true prefix of the second shard: the first shard is kept, the second completed
  write(dir .. "/" .. shard2 .. ".part", src2:sub(1, 3000))
  code, out = run(("HF_TOKEN= MIWB_HOME=%s MIWB_HUB_URL=%s %s pull test-org/tiny-llama"):format(home, url, MIWB))
  T.eq(code, 0, out)
  T.truthy(out:find(dir .. "/" .. shard1 .. ": already there", 1, true), out)
  T.truthy(read(dir .. "/" .. shard2) == src2, "second shard complete and equal")
  T.eq(io.open(dir .. "/" .. shard2 .. ".part"), nil, "no .part left")
  T.eq(io.open(dir .. "/model.safetensors"), nil, "no model.safetensors asked for")
  for _, f in ipairs({"config.json", "tokenizer.json"}) do T.truthy(read(dir .. "/" .. f) == read(repo .. "/" .. f), f) end
  -- it loads by its hub id, as the fixture folder itself does
  if mi.families then
    code, out = run(("MIWB_HOME=%s %s -e 'local sd, cfg = require(\"miwb\").load_pretrained(\"test-org/tiny-llama\", " ..
      "{fold_ln = false}); print(cfg.original_architecture, cfg.n_layers)'"):format(home, MIWB))
    T.eq(code, 0, out)
    T.truthy(out:find("LlamaForCausalLM\t2", 1, true), out)
  else
    print("SKIP - loading the pulled Llama folder: mi.families is not in this build")
  end
  -- a repository with neither model.safetensors nor an index says so
  local none = hub .. "/test-org/bin-only/resolve/main"
  assert(os.execute("mkdir -p " .. none))
  write(none .. "/config.json", "{}"); write(none .. "/tokenizer.json", "{}")
  code, out = run(("HF_TOKEN= MIWB_HOME=%s MIWB_HUB_URL=%s %s pull test-org/bin-only"):format(home, url, MIWB))
  T.eq(code, 1, out)
  T.truthy(out:find("model.safetensors is not on the hub (HTTP 404)", 1, true), out)
end)

T.test("miwb pull of a gated repository: 401/403 say to set HF_TOKEN, which is sent and never printed", function()
  local repo = hub .. "/meta-llama/Gated-Test"
  assert(os.execute(("mkdir -p %s/resolve/main && cp %s/config.json %s/model.safetensors %s/resolve/main/"):format(
    repo, HF, HF, repo)))
  write(repo .. "/resolve/main/tokenizer.json", "{}")
  local secret = "hf_secretTOKEN4217"
  write(repo .. "/.token", secret)
  local home = TMP .. "/home_gated"
  local url = ("http://127.0.0.1:%d"):format(port)
  local cmd = "HF_TOKEN=%s MIWB_HOME=%s MIWB_HUB_URL=%s %s pull meta-llama/Gated-Test"
  local code, out = run(cmd:format("", home, url, MIWB))
  T.eq(code, 1, out)
  T.truthy(out:find("HTTP 401, GatedRepo", 1, true), out)
  T.truthy(out:find("export HF_TOKEN=hf_...", 1, true), out)
  T.truthy(out:find("https://huggingface.co/meta-llama/Gated-Test", 1, true), out)
  -- a token the hub does not accept: 403, and the token appears nowhere
  code, out = run(cmd:format("hf_wrongTOKEN9931", home, url, MIWB))
  T.eq(code, 1, out)
  T.truthy(out:find("HTTP 403", 1, true) and out:find("HF_TOKEN is set, but", 1, true), out)
  T.eq(out:find("wrongTOKEN", 1, true), nil, "token printed: " .. out)
  -- the right token: sent as Authorization: Bearer, so the server lets the files through
  code, out = run(cmd:format(secret, home, url, MIWB))
  T.eq(code, 0, out)
  T.eq(out:find("secretTOKEN", 1, true), nil, "token printed: " .. out)
  T.truthy(read(home .. "/models/meta-llama/Gated-Test/model.safetensors") == read(HF .. "/model.safetensors"))
end)

if pid then os.execute("kill " .. math.tointeger(pid) .. " 2>/dev/null") end
srv:close()

-- ------------------------------------------------------------------ with the model class
if mi.HookedTransformer then
  T.test("from_pretrained(folder): logits match a torch GPT-2 forward; processing keeps log-probs", function()
    local ref = mi.load(EXP .. "logits.safetensors")
    local model = mi.from_pretrained_no_processing(HF)
    local logits = model(ref.tokens)
    T.truthy(maxdiff(logits, ref.logits) < 1e-4, "logits: " .. maxdiff(logits, ref.logits))
    local processed = mi.from_pretrained(HF)
    local lp = processed(ref.tokens):log_softmax(-1)
    T.truthy(maxdiff(lp, ref.logits:log_softmax(-1)) < 1e-4, "log-probs after processing")
    T.eq(processed.cfg.normalization_type, "LNPre")
    T.eq(model.cfg.normalization_type, "LN")
    -- processed logits differ from the raw ones (centred unembedding), by a constant per position
    local d = processed(ref.tokens) - logits
    T.truthy(maxdiff(d, logits) > 1e-3)
    T.truthy(maxdiff(d, d:mean(-1, true)) < 1e-4)
  end)

  T.test("save_pretrained writes a miwb folder that loads back to the same model", function()
    local ref = mi.load(EXP .. "logits.safetensors")
    local model = mi.from_pretrained(HF)
    local dir = mi.save_pretrained(model, TMP .. "/saved_model")
    local conf = mi.json.decode(read(dir .. "/config.json"))
    T.eq(conf.d_model, 32); T.eq(conf.normalization_type, "LNPre"); T.eq(conf.n_layers, 2)
    local back = mi.from_pretrained_no_processing(dir)
    T.eq(back.cfg.normalization_type, "LNPre")
    T.eq(maxdiff(back(ref.tokens), model(ref.tokens)), 0)
    -- processing again changes nothing that matters (it is idempotent)
    T.truthy(maxdiff(mi.from_pretrained(dir)(ref.tokens), model(ref.tokens)) < 1e-4)
    -- an attention-only model: normalization None survives as null
    local ao = mi.from_pretrained_no_processing("tests/fixtures/ckpt/tl_attn_only")
    local d2 = mi.save_pretrained(ao, TMP .. "/saved_ao")
    T.eq(mi.json.decode(read(d2 .. "/config.json")).normalization_type, mi.json.null)
    local tokens = mi.randint(0, 30, {1, 7}, mi.Generator(3))
    T.eq(maxdiff(mi.from_pretrained_no_processing(d2)(tokens), ao(tokens)), 0)
  end)

  T.test("attention-only shortformer folder: processing keeps the log-probs", function()
    local dir = "tests/fixtures/ckpt/tl_attn_only"
    local tokens = mi.randint(0, 30, {2, 9}, mi.Generator(5))
    local raw = mi.from_pretrained_no_processing(dir)
    local proc = mi.from_pretrained(dir)
    T.eq(raw.cfg.normalization_type, nil, "the model class's None")
    local a, b = raw(tokens):log_softmax(-1), proc(tokens):log_softmax(-1)
    T.truthy(maxdiff(a, b) < 1e-4, "log-probs " .. maxdiff(a, b))
  end)

  local tokjson = real:gsub("config%.json$", "tokenizer.json")
  if io.open(tokjson) and mi.load_tokenizer then
    T.test("from_pretrained hands the folder's tokenizer.json to the model", function()
      local dir = TMP .. "/withtok"
      assert(os.execute(("mkdir -p %s && cp %s/config.json %s/model.safetensors %s %s/"):format(dir, HF, HF, tokjson, dir)))
      local model = mi.from_pretrained(dir)
      T.eq(model.tokenizer:vocab_size(), 50257)
      T.eq(mi.from_pretrained(dir, {tokenizer = false}).tokenizer, nil)
    end)
  else
    print("SKIP - tokenizer wiring: " .. tokjson .. " is absent")
  end
else
  print("SKIP - from_pretrained with a model: mi.HookedTransformer is not in this build yet")
end

os.execute("rm -rf " .. TMP)
T.done()
