-- miwb.families: Hugging Face model folders of the families TransformerLens loads, converted to
-- TransformerLens's config fields and state-dict names and shapes (TransformerLens 2.12's
-- convert_hf_model_config and pretrained/weight_conversions, with the Hugging Face config as the
-- authority where TransformerLens drops a field, e.g. Llama's rope_theta).
--
--   F.architecture(conf)            "LlamaForCausalLM", ... of a decoded config.json, or nil
--   F.config(conf, name, where)     HookedTransformerConfig fields (raises naming the field)
--   F.convert(sd, cfg, where)       the TransformerLens state dict of a Hugging Face one
--
-- Families: GPTNeoXForCausalLM (Pythia, GPT-NeoX), LlamaForCausalLM (Llama 2/3, TinyLlama,
-- SmolLM), MistralForCausalLM, Qwen2ForCausalLM, GPTJForCausalLM; GPT2LMHeadModel stays in
-- miwb.pretrained. Grouped-query attention keeps TransformerLens's names for the key/value
-- heads: blocks.L.attn._W_K / _W_V [Hkv, d, dh], _b_K / _b_V [Hkv, dh].
local F = {}
local mi

local MODEL_TYPES = {gpt_neox = "GPTNeoXForCausalLM", llama = "LlamaForCausalLM",
                     mistral = "MistralForCausalLM", qwen2 = "Qwen2ForCausalLM", gptj = "GPTJForCausalLM",
                     gpt2 = "GPT2LMHeadModel"}
F.SUPPORTED = {"GPT2LMHeadModel", "GPTNeoXForCausalLM", "LlamaForCausalLM", "MistralForCausalLM",
               "Qwen2ForCausalLM", "GPTJForCausalLM"}

local function is_null(v) return v == nil or (mi.json and v == mi.json.null) end

function F.architecture(conf)
  local a = conf.architectures
  if type(a) == "table" and type(a[1]) == "string" then return a[1] end
  if type(conf.model_type) == "string" then return MODEL_TYPES[conf.model_type] end
  return nil
end

local function field(conf, name, where, kind, default)
  local v = conf[name]
  if is_null(v) then
    if default ~= nil then return default end
    error(("%s: field '%s' is missing"):format(where, name), 3)
  end
  local ok = (kind == "posint" and math.type(v) == "integer" and v > 0)
          or (kind == "posnum" and type(v) == "number" and v > 0)
          or (kind == "bool" and type(v) == "boolean")
          or (kind == "string" and type(v) == "string")
  if not ok then
    local want = ({posint = "a positive integer", posnum = "a positive number", bool = "true or false",
                   string = "a string"})[kind]
    error(("%s: field '%s' must be %s, got %s"):format(where, name, want, tostring(v)), 3)
  end
  return v
end

local ACTS = {gelu = "gelu", gelu_new = "gelu_new", silu = "silu", relu = "relu", gelu_pytorch_tanh = "gelu_pytorch_tanh",
              gelu_fast = "gelu_fast"}
local function act_of(conf, name, where)
  local a = field(conf, name, where, "string")
  if not ACTS[a] then error(("%s: %s '%s' is not supported (gelu, gelu_new, silu, relu, gelu_pytorch_tanh)"):format(where, name, a), 3) end
  return ACTS[a]
end

-- Sliding-window attention (Mistral, Qwen2) is not implemented: a window at least n_ctx long changes
-- nothing; a shorter one caps n_ctx at the window, so every position attends exactly as the model
-- does, and says so.
local function window(conf, cfg, where)
  local w = conf.sliding_window
  if conf.use_sliding_window == false or is_null(w) then return end
  if math.type(w) ~= "integer" or w <= 0 then error(where .. ": field 'sliding_window' must be a positive integer or null", 3) end
  if w < cfg.n_ctx then
    io.stderr:write(("%s: sliding-window attention (window %d) is not supported; n_ctx is capped at %d, " ..
                     "where the window changes nothing\n"):format(where, w, w))
    cfg.n_ctx = w
  end
end

local function no_rope_scaling(conf, where)
  if not is_null(conf.rope_scaling) then
    error(where .. ": rope_scaling is not supported (this config asks for " .. mi.json.encode(conf.rope_scaling) .. ")", 3)
  end
end

local CONFIG = {}

function CONFIG.GPTNeoXForCausalLM(conf, where)
  local d, H = field(conf, "hidden_size", where, "posint"), field(conf, "num_attention_heads", where, "posint")
  local dh = d // H
  no_rope_scaling(conf, where)
  local pct = field(conf, "rotary_pct", where, "posnum", 1.0)
  return {d_model = d, d_head = dh, n_heads = H, d_mlp = field(conf, "intermediate_size", where, "posint"),
    n_layers = field(conf, "num_hidden_layers", where, "posint"),
    n_ctx = field(conf, "max_position_embeddings", where, "posint"),
    eps = field(conf, "layer_norm_eps", where, "posnum", 1e-5), d_vocab = field(conf, "vocab_size", where, "posint"),
    act_fn = act_of(conf, "hidden_act", where), normalization_type = "LN",
    parallel_attn_mlp = field(conf, "use_parallel_residual", where, "bool", true),
    positional_embedding_type = "rotary", rotary_dim = math.floor(pct * dh + 0.5), rotary_adjacent_pairs = false,
    rotary_base = field(conf, "rotary_emb_base", where, "posnum", field(conf, "rope_theta", where, "posnum", 10000))}
end

function CONFIG.LlamaForCausalLM(conf, where)
  local d, H = field(conf, "hidden_size", where, "posint"), field(conf, "num_attention_heads", where, "posint")
  local dh = field(conf, "head_dim", where, "posint", d // H)
  local kv = field(conf, "num_key_value_heads", where, "posint", H)
  if H % kv ~= 0 then error(("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d"):format(where, H, kv), 3) end
  no_rope_scaling(conf, where)
  if conf.attention_bias == true or conf.mlp_bias == true then error(where .. ": attention_bias / mlp_bias are not supported", 3) end
  return {d_model = d, d_head = dh, n_heads = H, n_key_value_heads = kv ~= H and kv or nil,
    d_mlp = field(conf, "intermediate_size", where, "posint"), n_layers = field(conf, "num_hidden_layers", where, "posint"),
    n_ctx = field(conf, "max_position_embeddings", where, "posint"), eps = field(conf, "rms_norm_eps", where, "posnum", 1e-6),
    d_vocab = field(conf, "vocab_size", where, "posint"), act_fn = act_of(conf, "hidden_act", where),
    normalization_type = "RMS", final_rms = true, gated_mlp = true, positional_embedding_type = "rotary",
    rotary_dim = dh, rotary_adjacent_pairs = false, rotary_base = field(conf, "rope_theta", where, "posnum", 10000)}
end

function CONFIG.MistralForCausalLM(conf, where)
  local cfg = CONFIG.LlamaForCausalLM(conf, where)
  window(conf, cfg, where)
  return cfg
end

function CONFIG.Qwen2ForCausalLM(conf, where)
  local cfg = CONFIG.LlamaForCausalLM(conf, where)
  window(conf, cfg, where)
  cfg.default_prepend_bos = false   -- as TransformerLens: Qwen2's tokenizer adds no BOS
  return cfg
end

function CONFIG.GPTJForCausalLM(conf, where)
  local d, H = field(conf, "n_embd", where, "posint"), field(conf, "n_head", where, "posint")
  return {d_model = d, d_head = d // H, n_heads = H, d_mlp = field(conf, "n_inner", where, "posint", 4 * d),
    n_layers = field(conf, "n_layer", where, "posint"), n_ctx = field(conf, "n_positions", where, "posint"),
    eps = field(conf, "layer_norm_epsilon", where, "posnum", 1e-5), d_vocab = field(conf, "vocab_size", where, "posint"),
    act_fn = act_of(conf, "activation_function", where), normalization_type = "LN", parallel_attn_mlp = true,
    positional_embedding_type = "rotary", rotary_dim = field(conf, "rotary_dim", where, "posint", d // H),
    rotary_adjacent_pairs = true}
end

function F.config(conf, name, where)
  local arch = F.architecture(conf)
  local make = arch and CONFIG[arch]
  if not make then
    error(("%s: architecture '%s' is not supported (supported: %s)"):format(where, tostring(arch),
      table.concat(F.SUPPORTED, ", ")), 2)
  end
  local cfg = make(conf, where)
  cfg.d_vocab_out = cfg.d_vocab
  cfg.use_attn_scale, cfg.attention_dir, cfg.attn_only = true, "causal", false
  cfg.original_architecture, cfg.model_name, cfg.tokenizer_name = arch, name, name
  if cfg.default_prepend_bos == nil then cfg.default_prepend_bos = true end
  return cfg
end

-- ---------------------------------------------------------------- weights
-- sd[name] with exactly this shape, or an error naming the tensor, its shape and the config's
local function need(sd, name, shape, where) return mi.pretrained.need(sd, name, shape, where) end

-- nn.Linear weight [heads*dh, d] -> [heads, d, dh]; bias [heads*dh] -> [heads, dh]
local function heads_in(W, heads, dh) return W:reshape(heads, dh, -1):permute(0, 2, 1):contiguous() end
-- nn.Linear weight [d, H*dh] (the output projection) -> [H, dh, d]
local function heads_out(W, H, dh) return W:t():reshape(H, dh, -1):contiguous() end

local CONVERT = {}

function CONVERT.GPTNeoXForCausalLM(sd, c, where)
  local d, H, dh, m, V = c.d_model, c.n_heads, c.d_head, c.d_mlp, c.d_vocab
  local out = {["embed.W_E"] = need(sd, "gpt_neox.embed_in.weight", {V, d}, where)}
  for l = 0, c.n_layers - 1 do
    local p, q = ("gpt_neox.layers.%d."):format(l), ("blocks.%d."):format(l)
    out[q .. "ln1.w"] = need(sd, p .. "input_layernorm.weight", {d}, where)
    out[q .. "ln1.b"] = need(sd, p .. "input_layernorm.bias", {d}, where)
    -- query_key_value [3 d, d]: rows are (head, q|k|v, d_head)
    local W = need(sd, p .. "attention.query_key_value.weight", {3 * H * dh, d}, where):reshape(H, 3, dh, d)
    local b = need(sd, p .. "attention.query_key_value.bias", {3 * H * dh}, where):reshape(H, 3, dh)
    for i, n in ipairs({"Q", "K", "V"}) do
      out[q .. "attn.W_" .. n] = W:select(1, i - 1):permute(0, 2, 1):contiguous()
      out[q .. "attn.b_" .. n] = b:select(1, i - 1):contiguous()
    end
    out[q .. "attn.W_O"] = heads_out(need(sd, p .. "attention.dense.weight", {d, H * dh}, where), H, dh)
    out[q .. "attn.b_O"] = need(sd, p .. "attention.dense.bias", {d}, where)
    out[q .. "ln2.w"] = need(sd, p .. "post_attention_layernorm.weight", {d}, where)
    out[q .. "ln2.b"] = need(sd, p .. "post_attention_layernorm.bias", {d}, where)
    out[q .. "mlp.W_in"] = need(sd, p .. "mlp.dense_h_to_4h.weight", {m, d}, where):t():contiguous()
    out[q .. "mlp.b_in"] = need(sd, p .. "mlp.dense_h_to_4h.bias", {m}, where)
    out[q .. "mlp.W_out"] = need(sd, p .. "mlp.dense_4h_to_h.weight", {d, m}, where):t():contiguous()
    out[q .. "mlp.b_out"] = need(sd, p .. "mlp.dense_4h_to_h.bias", {d}, where)
  end
  out["ln_final.w"] = need(sd, "gpt_neox.final_layer_norm.weight", {d}, where)
  out["ln_final.b"] = need(sd, "gpt_neox.final_layer_norm.bias", {d}, where)
  out["unembed.W_U"] = need(sd, "embed_out.weight", {V, d}, where):t():contiguous()
  out["unembed.b_U"] = mi.zeros(V)
  return out
end

local function llama_like(sd, c, where, biases)
  local d, H, dh, m, V = c.d_model, c.n_heads, c.d_head, c.d_mlp, c.d_vocab
  local kv = c.n_key_value_heads or H
  local g = c.n_key_value_heads and "_" or ""
  local emb = need(sd, "model.embed_tokens.weight", {V, d}, where)
  local out = {["embed.W_E"] = emb}
  for l = 0, c.n_layers - 1 do
    local p, q = ("model.layers.%d."):format(l), ("blocks.%d."):format(l)
    out[q .. "ln1.w"] = need(sd, p .. "input_layernorm.weight", {d}, where)
    for _, r in ipairs({{"q_proj", "W_Q", "b_Q", H}, {"k_proj", g .. "W_K", g .. "b_K", kv}, {"v_proj", g .. "W_V", g .. "b_V", kv}}) do
      out[q .. "attn." .. r[2]] = heads_in(need(sd, p .. "self_attn." .. r[1] .. ".weight", {r[4] * dh, d}, where), r[4], dh)
      out[q .. "attn." .. r[3]] = biases and need(sd, p .. "self_attn." .. r[1] .. ".bias", {r[4] * dh}, where):reshape(r[4], dh)
                                  or mi.zeros(r[4], dh)
    end
    out[q .. "attn.W_O"] = heads_out(need(sd, p .. "self_attn.o_proj.weight", {d, H * dh}, where), H, dh)
    out[q .. "attn.b_O"] = mi.zeros(d)
    out[q .. "ln2.w"] = need(sd, p .. "post_attention_layernorm.weight", {d}, where)
    out[q .. "mlp.W_in"] = need(sd, p .. "mlp.up_proj.weight", {m, d}, where):t():contiguous()
    out[q .. "mlp.W_gate"] = need(sd, p .. "mlp.gate_proj.weight", {m, d}, where):t():contiguous()
    out[q .. "mlp.b_in"] = mi.zeros(m)
    out[q .. "mlp.W_out"] = need(sd, p .. "mlp.down_proj.weight", {d, m}, where):t():contiguous()
    out[q .. "mlp.b_out"] = mi.zeros(d)
  end
  out["ln_final.w"] = need(sd, "model.norm.weight", {d}, where)
  mi.pretrained.unembed_from(out, sd, emb, V, d, where)
  return out
end

function CONVERT.LlamaForCausalLM(sd, c, where) return llama_like(sd, c, where, false) end
CONVERT.MistralForCausalLM = CONVERT.LlamaForCausalLM
function CONVERT.Qwen2ForCausalLM(sd, c, where) return llama_like(sd, c, where, true) end

function CONVERT.GPTJForCausalLM(sd, c, where)
  local d, H, dh, m, V = c.d_model, c.n_heads, c.d_head, c.d_mlp, c.d_vocab
  local out = {["embed.W_E"] = need(sd, "transformer.wte.weight", {V, d}, where)}
  for l = 0, c.n_layers - 1 do
    local p, q = ("transformer.h.%d."):format(l), ("blocks.%d."):format(l)
    local w, b = need(sd, p .. "ln_1.weight", {d}, where), need(sd, p .. "ln_1.bias", {d}, where)
    out[q .. "ln1.w"], out[q .. "ln1.b"] = w, b
    out[q .. "ln2.w"], out[q .. "ln2.b"] = w, b   -- GPT-J's attention and MLP read one LayerNorm
    for _, n in ipairs({"Q", "K", "V"}) do
      out[q .. "attn.W_" .. n] = heads_in(need(sd, p .. "attn." .. n:lower() .. "_proj.weight", {H * dh, d}, where), H, dh)
      out[q .. "attn.b_" .. n] = mi.zeros(H, dh)
    end
    out[q .. "attn.W_O"] = heads_out(need(sd, p .. "attn.out_proj.weight", {d, H * dh}, where), H, dh)
    out[q .. "attn.b_O"] = mi.zeros(d)
    out[q .. "mlp.W_in"] = need(sd, p .. "mlp.fc_in.weight", {m, d}, where):t():contiguous()
    out[q .. "mlp.b_in"] = need(sd, p .. "mlp.fc_in.bias", {m}, where)
    out[q .. "mlp.W_out"] = need(sd, p .. "mlp.fc_out.weight", {d, m}, where):t():contiguous()
    out[q .. "mlp.b_out"] = need(sd, p .. "mlp.fc_out.bias", {d}, where)
  end
  out["ln_final.w"] = need(sd, "transformer.ln_f.weight", {d}, where)
  out["ln_final.b"] = need(sd, "transformer.ln_f.bias", {d}, where)
  out["unembed.W_U"] = need(sd, "lm_head.weight", {V, d}, where):t():contiguous()
  out["unembed.b_U"] = need(sd, "lm_head.bias", {V}, where)
  return out
end

function F.convert(sd, cfg, where)
  local make = CONVERT[cfg.original_architecture]
  if not make then error(("%s: no weight conversion for '%s'"):format(where, tostring(cfg.original_architecture)), 2) end
  return make(sd, cfg, where)
end

function F._install(m) mi = m end

return F
