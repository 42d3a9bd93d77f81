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

T.done()
