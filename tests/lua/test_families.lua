-- Hugging Face folders of the model families (lua/miwb/families.lua, lua/miwb/pretrained.lua):
-- configs and weights converted to TransformerLens's, and TransformerLens's weight processing per
-- normalization, against tests/fixtures/gen_hf_families.py (float64 PyTorch, TransformerLens's
-- conversion and processing arithmetic written out there). Bad folders give errors naming the file
-- and the tensor or field.
local T = require("testlib")
local mi = require("miwb")

local FX = "tests/fixtures/hf_families/"
local FAMILIES = {"gpt_neox", "llama", "mistral", "qwen2", "gptj"}
local NONE = {fold_ln = false, center_writing_weights = false, center_unembed = false, fold_value_biases = false}

local function rel_err(a, b)
  return (a - b):abs():max():item() / math.max(b:abs():max():item(), 1e-12)
end

-- every tensor under prefix in the expectations equals sd's, and sd has no other tensor
local function same_state_dict(sd, exp, prefix, what)
  local n = 0
  for k, want in pairs(exp) do
    if k:sub(1, #prefix) == prefix then
      local name = k:sub(#prefix + 1)
      T.truthy(sd[name] ~= nil, what .. ": missing " .. name)
      if sd[name] then
        T.eq(table.concat(sd[name]:shape(), ","), table.concat(want:shape(), ","), what .. " " .. name)
        T.truthy(rel_err(sd[name], want) < 2e-6, what .. " " .. name .. " differs")
        n = n + 1
      end
    end
  end
  for k in pairs(sd) do T.truthy(exp[prefix .. k] ~= nil, what .. ": unexpected tensor " .. k) end
  T.truthy(n > 20, what .. ": compared " .. n .. " tensors")
end

for _, fam in ipairs(FAMILIES) do
  T.test(fam .. ": config and weights as TransformerLens converts them (sharded, bf16, f16, .bin)", function()
    local exp, meta = mi.load(FX .. fam .. "_expect.safetensors")
    local want = mi.json.decode(meta.tl_config)
    local sd, cfg = mi.load_pretrained(FX .. fam, NONE)
    for _, k in ipairs{"d_model", "d_head", "n_heads", "n_layers", "d_vocab", "d_mlp", "act_fn",
                       "normalization_type", "positional_embedding_type", "rotary_dim", "rotary_adjacent_pairs",
                       "parallel_attn_mlp", "gated_mlp", "final_rms"} do
      local w = want[k]
      if w == false and cfg[k] == nil then w = nil end
      T.eq(cfg[k], w, fam .. " " .. k)
    end
    T.near(cfg.eps, want.eps, 1e-15, fam .. " eps")
    T.near(cfg.rotary_base or 10000, want.rotary_base, 1e-9, fam .. " rotary_base")
    local kv = want.n_key_value_heads
    T.eq(cfg.n_key_value_heads, kv ~= mi.json.null and kv or nil, fam .. " n_key_value_heads")
    same_state_dict(sd, exp, "tl.", fam .. " converted")
  end)

  T.test(fam .. ": TransformerLens's default processing (fold_ln per normalization, centring, value biases)", function()
    local exp, meta = mi.load(FX .. fam .. "_expect.safetensors")
    local want = mi.json.decode(meta.tl_config_processed)
    local sd, cfg = mi.load_pretrained(FX .. fam)
    T.eq(cfg.normalization_type, want.normalization_type, fam)
    same_state_dict(sd, exp, "tlproc.", fam .. " processed")
  end)
end

-- a scratch copy of a fixture folder that a test may break
local function scratch(fam)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute(("mkdir -p '%s' && cp %s%s/* '%s'/"):format(dir, FX, fam, dir)))
  return dir
end
local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

T.test("bad folders: errors name the file and the tensor or field", function()
  local d = scratch("llama")
  os.remove(d .. "/model-00002-of-00002.safetensors")
  T.raises(function() mi.load_pretrained(d, NONE) end, "shard 'model-00002-of-00002.safetensors' is missing")
  local index = mi.json.decode(io.open(FX .. "llama/model.safetensors.index.json"):read("a"))
  index.weight_map["model.norm.weight"] = "../../etc/passwd"
  write(d .. "/model.safetensors.index.json", mi.json.encode(index))
  T.raises(function() mi.load_pretrained(d, NONE) end, "is not a file of the folder")
  write(d .. "/model.safetensors.index.json", '{"metadata": {}}')
  T.raises(function() mi.load_pretrained(d, NONE) end, "not a shard index")

  local g = scratch("gpt_neox")
  local conf = mi.json.decode(io.open(FX .. "gpt_neox/config.json"):read("a"))
  conf.hidden_size = 48
  write(g .. "/config.json", mi.json.encode(conf))
  T.raises(function() mi.load_pretrained(g, NONE) end, "tensor 'gpt_neox.embed_in.weight' has shape [64,32], the config needs [64,48]")
  conf.hidden_size = 32
  conf.architectures = {"FalconForCausalLM"}
  write(g .. "/config.json", mi.json.encode(conf))
  T.raises(function() mi.load_pretrained(g, NONE) end, "architecture 'FalconForCausalLM' is not supported (supported: GPT2LMHeadModel")
  conf.architectures = {"GPTNeoXForCausalLM"}
  conf.hidden_act = "swish_banana"
  write(g .. "/config.json", mi.json.encode(conf))
  T.raises(function() mi.load_pretrained(g, NONE) end, "hidden_act 'swish_banana' is not supported")
  conf.hidden_act = "gelu"
  conf.num_hidden_layers = nil
  write(g .. "/config.json", mi.json.encode(conf))
  T.raises(function() mi.load_pretrained(g, NONE) end, "field 'num_hidden_layers' is missing")

  local m = scratch("mistral")
  local mc = mi.json.decode(io.open(FX .. "mistral/config.json"):read("a"))
  mc.rope_scaling = {type = "linear", factor = 2.0}
  write(m .. "/config.json", mi.json.encode(mc))
  T.raises(function() mi.load_pretrained(m, NONE) end, "rope_scaling is not supported")
  os.execute(("rm -rf '%s' '%s' '%s'"):format(d, g, m))
end)

T.test("sliding windows: a window shorter than n_ctx caps n_ctx (and says so); a longer one changes nothing", function()
  local m = scratch("mistral")
  local mc = mi.json.decode(io.open(FX .. "mistral/config.json"):read("a"))
  mc.sliding_window = 8
  write(m .. "/config.json", mi.json.encode(mc))
  local _, cfg = mi.load_pretrained(m, NONE)
  T.eq(cfg.n_ctx, 8)
  mc.sliding_window = 4096
  write(m .. "/config.json", mi.json.encode(mc))
  _, cfg = mi.load_pretrained(m, NONE)
  T.eq(cfg.n_ctx, 32)
  local _, qcfg = mi.load_pretrained(FX .. "qwen2", NONE)   -- use_sliding_window = false
  T.eq(qcfg.n_ctx, 32); T.eq(qcfg.default_prepend_bos, false)
  os.execute(("rm -rf '%s'"):format(m))
end)

-- ---------------------------------------------------------------- the forward pass
-- every hook activation of the fixture (TransformerLens's names and shapes) against the model's
-- cache; -inf entries (masked scores) must match exactly, finite ones to 1e-5 of the largest
local function same_acts(cache, exp, prefix, what)
  local n = 0
  for k, want in pairs(exp) do
    local name = k:sub(#prefix + 1)
    if k:sub(1, #prefix) == prefix and (name:find("hook_") or name == "") then
      local got = cache[name]
      T.truthy(got ~= nil, what .. ": the cache has no " .. name)
      if got then
        T.eq(table.concat(got:shape(), ","), table.concat(want:shape(), ","), what .. " " .. name)
        local fin = want:gt(-math.huge)   -- masked scores are -inf
        T.truthy(got:gt(-math.huge):eq(fin):all(), what .. " " .. name .. ": masked entries differ")
        local err = rel_err(got[fin], want[fin])
        T.truthy(err < 1e-5, ("%s %s: relative error %.2g"):format(what, name, err))
        n = n + 1
      end
    end
  end
  T.truthy(n >= 20, what .. ": compared " .. n .. " activations")
  local names = 0
  for _ in pairs(cache:keys()) do names = names + 1 end
  T.eq(names, n, what .. ": the cache holds exactly TransformerLens's hook points")
end

for _, fam in ipairs(FAMILIES) do
  T.test(fam .. ": every hook activation, logits and loss as a float64 reference (unprocessed and processed)", function()
    local exp = mi.load(FX .. fam .. "_expect.safetensors")
    local toks = exp.tokens
    local raw = mi.from_pretrained_no_processing(FX .. fam, {tokenizer = false})
    local logits, cache = raw:run_with_cache(toks)
    same_acts(cache, exp, "raw.", fam .. " raw")
    T.truthy(rel_err(logits, exp["raw.logits"]) < 1e-5, fam .. ": raw logits")
    T.near(raw(toks, {return_type = "loss"}):item(), exp["raw.loss"]:item(), 1e-5, fam .. ": loss")
    local proc = mi.from_pretrained(FX .. fam, {tokenizer = false})
    local plogits, pcache = proc:run_with_cache(toks)
    same_acts(pcache, exp, "proc.", fam .. " processed")
    T.truthy(rel_err(plogits, exp["proc.logits"]) < 1e-5, fam .. ": processed logits")
  end)

  T.test(fam .. ": left padding (positions and rotary phases restart) and greedy generation", function()
    local exp = mi.load(FX .. fam .. "_expect.safetensors")
    local raw = mi.from_pretrained_no_processing(FX .. fam, {tokenizer = false})
    local lg = raw(exp.tokens, {attention_mask = exp.pad_mask})
    local want = exp["pad.logits"]
    local real = exp.pad_mask:bool():unsqueeze(-1):expand(want:shape())
    T.truthy(rel_err(lg[real], want[real]) < 1e-5, fam .. ": padded logits")
    local gen = exp["gen.tokens"]
    local P = exp.tokens:size(1)
    local out = raw:generate(exp.tokens[{{0, 1}}], {max_new_tokens = gen:size(1) - P, do_sample = false})
    T.eq(table.concat(out[0]:totable(), ","), table.concat(gen[0]:totable(), ","), fam .. ": greedy tokens")
  end)
end

-- ---------------------------------------------------------------- the backward pass
-- gradients at hook points against PyTorch autograd through the float64 TransformerLens-semantics
-- forward (gen_hf_families.py's F_grads.safetensors); each to 1e-4 of its own largest entry
local function same_grads(cache, ref, prefix, what, min)
  local n = 0
  for k, want in pairs(ref) do
    if k:sub(1, #prefix) == prefix and k:find("hook_") then
      local name = k:sub(#prefix + 1)
      local got = cache[name .. "_grad"]
      T.truthy(got ~= nil, what .. ": no gradient for " .. name)
      if got then
        T.eq(table.concat(got:shape(), ","), table.concat(want:shape(), ","), what .. " " .. name)
        local err = rel_err(got, want)
        T.truthy(err < 1e-4, ("%s %s_grad: relative error %.2g"):format(what, name, err))
        n = n + 1
      end
    end
  end
  T.truthy(n >= min, what .. ": compared " .. n .. " gradients")
end

for _, fam in ipairs(FAMILIES) do
  T.test(fam .. ": gradients at every hook point as PyTorch autograd's (loss; processed; padded, a functional)", function()
    local exp = mi.load(FX .. fam .. "_expect.safetensors")
    local ref = mi.load(FX .. fam .. "_grads.safetensors")
    local toks = exp.tokens
    local raw = mi.from_pretrained_no_processing(FX .. fam, {tokenizer = false})
    local loss, cache = raw:run_with_cache(toks, {incl_bwd = true, return_type = "loss"})
    T.near(loss:item(), exp["raw.loss"]:item(), 1e-5, fam .. ": loss")
    same_grads(cache, ref, "loss.", fam .. " raw", 35)
    -- every hook point of the model has its gradient (TransformerLens's names and shapes)
    for _, h in ipairs(raw:hook_names()) do T.truthy(cache:has(h .. "_grad"), fam .. ": cached " .. h .. "_grad") end
    local proc = mi.from_pretrained(FX .. fam, {tokenizer = false})
    local _, pcache = proc:run_with_cache(toks, {incl_bwd = true, return_type = "loss"})
    same_grads(pcache, ref, "proc.", fam .. " processed", 20)
    local R = ref["pad.R"]
    local _, gcache = raw:run_with_cache(toks, {attention_mask = exp.pad_mask, incl_bwd = true,
      grad_output = function(logits) return (logits * R):sum():item(), R end})
    same_grads(gcache, ref, "pad.", fam .. " padded", 14)
  end)
end

T.test("grouped-query attention: hook_k has the key/value heads; model.W_K repeats them as TransformerLens's", function()
  local m = mi.from_pretrained_no_processing(FX .. "llama", {tokenizer = false})
  T.eq(table.concat(m._W_K:shape(), ","), "2,2,32,8")
  T.eq(table.concat(m.W_K:shape(), ","), "2,4,32,8")
  T.truthy(m.W_K[{0, 1}]:equal(m._W_K[{0, 0}]) and m.W_K[{0, 2}]:equal(m._W_K[{0, 1}]), "head 1 reads kv head 0, head 2 kv head 1")
  local sd = m:state_dict()
  T.truthy(sd["blocks.0.attn._W_K"] ~= nil and sd["blocks.0.attn.W_K"] == nil, "state dict names as TransformerLens")
end)

T.done()
