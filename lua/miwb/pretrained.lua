-- miwb.pretrained: pretrained models from files, as TransformerLens loads them.
--
--   mi.from_pretrained(name_or_folder [, opts])       a HookedTransformer with processed weights
--   mi.from_pretrained_no_processing(name_or_folder [, opts])
--   mi.load_pretrained(name_or_folder [, opts])       -> state_dict, cfg, folder (no model class)
--   mi.save_pretrained(model, folder)                 a miwb model folder that from_pretrained reads
--   mi.pretrained.pull(name [, opts]), and `miwb pull NAME` (mi.cli.pull)
--
-- A folder is either a Hugging Face GPT-2 folder (config.json with n_embd/n_layer/..., weights in
-- model.safetensors or pytorch_model.bin with names like h.0.attn.c_attn.weight) or a miwb model
-- folder (config.json with HookedTransformerConfig fields, model.safetensors with TransformerLens
-- state-dict names; a .pth/.pt torch file is accepted too). Either may hold tokenizer.json.
--
-- Names: TransformerLens's model names and aliases (gpt2-small = gpt2, ...) resolve to folders
-- $MIWB_HOME/models/NAME (MIWB_HOME defaults to ~/.cache/miwb). from_pretrained only looks
-- there; `miwb pull NAME` is what downloads.
--
-- opts.tokenizer: a tokenizer or a path (default: the folder's tokenizer.json), false for none.
-- Processing (opts, all true by default, as TransformerLens's from_pretrained, and under its rules:
-- a shortformer model gets no fold_ln, center_writing_weights or center_unembed; a model without
-- LayerNorm no fold_ln or center_writing_weights; each skip prints TransformerLens's warning):
--   fold_ln                 LayerNorm w, b folded into the next W_Q/W_K/W_V, W_in, W_U (+ biases;
--                           solu_ln's mlp.ln into W_out, b_out);
--                           the reading weights centred; normalization_type becomes "LNPre"
--   center_writing_weights  mean over d_model removed from W_E, W_pos, W_O, b_O, W_out, b_out
--   center_unembed          mean over the vocabulary removed from W_U and b_U
--   fold_value_biases       b_O += sum_h b_V[h] @ W_O[h]; b_V = 0
-- Each step is a function on state-dict tables (name -> tensor) here, usable on its own.
local M = {}
local mi

-- the processing switches, and every option of from_pretrained / load_pretrained
local PROCESSING = {"fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                    "refactor_factored_attn_matrices"}
local PRETRAINED_OPTS = {"tokenizer", table.unpack(PROCESSING)}

-- ---------------------------------------------------------------- model names
-- TransformerLens's official names, their aliases, and where the files live on the hub.
M.MODELS = {
  {name = "gpt2", aliases = {"gpt2-small"}, repo = "openai-community/gpt2"},
  {name = "gpt2-medium", repo = "openai-community/gpt2-medium"},
  {name = "gpt2-large", repo = "openai-community/gpt2-large"},
  {name = "gpt2-xl", repo = "openai-community/gpt2-xl"},
  {name = "distilgpt2", aliases = {"distillgpt2", "distill-gpt2", "distil-gpt2", "gpt2-xs"},
   repo = "distilbert/distilgpt2"},
  -- the seed notebook's attention-only model: a TransformerLens state dict saved with torch.save,
  -- the GPT-NeoX tokenizer, and the notebook's config (written into the folder by pull)
  {name = "attn-only-2l-demo", aliases = {"attn_only_2L_half"},
   files = {{repo = "callummcdougall/attn_only_2L_half", file = "attn_only_2L_half.pth", as = "model.pth"},
            {repo = "EleutherAI/gpt-neox-20b", file = "tokenizer.json"}},
   config = {d_model = 768, d_head = 64, n_heads = 12, n_layers = 2, n_ctx = 2048, d_vocab = 50278,
             attention_dir = "causal", attn_only = true, tokenizer_name = "EleutherAI/gpt-neox-20b",
             seed = 398, use_attn_result = true, normalization_type = "None",
             positional_embedding_type = "shortformer", act_fn = "gelu_new",
             default_prepend_bos = true, original_architecture = "HookedTransformer"}},
  -- Hugging Face folders of the families miwb converts (miwb.families); TransformerLens's names
  -- are the hub ids, its aliases as in its MODEL_ALIASES
  {name = "EleutherAI/pythia-14m", aliases = {"pythia-14m"}, repo = "EleutherAI/pythia-14m"},
  {name = "EleutherAI/pythia-31m", aliases = {"pythia-31m"}, repo = "EleutherAI/pythia-31m"},
  {name = "EleutherAI/pythia-70m", aliases = {"pythia-70m", "pythia", "EleutherAI/pythia-19m", "pythia-19m"},
   repo = "EleutherAI/pythia-70m"},
  {name = "EleutherAI/pythia-160m", aliases = {"pythia-160m", "EleutherAI/pythia-125m", "pythia-125m"},
   repo = "EleutherAI/pythia-160m"},
  {name = "EleutherAI/pythia-410m", aliases = {"pythia-410m", "EleutherAI/pythia-350m", "pythia-350m"},
   repo = "EleutherAI/pythia-410m"},
  {name = "EleutherAI/pythia-1b", aliases = {"pythia-1b", "EleutherAI/pythia-800m", "pythia-800m"},
   repo = "EleutherAI/pythia-1b"},
  {name = "Qwen/Qwen2-0.5B", repo = "Qwen/Qwen2-0.5B"},
  {name = "TinyLlama/TinyLlama-1.1B-Chat-v1.0", repo = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"},
  {name = "HuggingFaceTB/SmolLM2-135M", repo = "HuggingFaceTB/SmolLM2-135M"},
}
local HF_FILES = {"config.json", "tokenizer.json", "model.safetensors"}
local SHARD_INDEX = "model.safetensors.index.json"

-- a hub repository id "owner/name" that is in no list: its own entry (nil if name is not one)
function M.hub_entry(name)
  local owner, repo = tostring(name):match("^([%w][%w._-]*)/([%w][%w._-]*)$")
  if not owner or owner:find("..", 1, true) or repo:find("..", 1, true) or #name > 96 then return nil end
  return {name = name, repo = name}
end

-- the entry of a name or alias (case as TransformerLens: exact, then ignoring case)
function M.resolve(name)
  for _, low in ipairs({false, true}) do
    local try = low and name:lower() or name
    local function is(n) return (low and n:lower() or n) == try end
    for _, m in ipairs(M.MODELS) do
      if is(m.name) then return m end
      for _, a in ipairs(m.aliases or {}) do if is(a) then return m end end
    end
  end
  return nil
end

function M.home()
  local h = os.getenv("MIWB_HOME")
  if h and h ~= "" then return h end
  return (os.getenv("HOME") or ".") .. "/.cache/miwb"
end

function M.model_dir(name)
  local m = M.resolve(name)
  return M.home() .. "/models/" .. (m and m.name or name), m
end

-- the files of a model: {url, dest (relative to the model folder), repo}. A hub repository's
-- weights are model.safetensors, or (shards: the file names its index lists) the index and its shards.
function M.files(m, shards)
  local hub = os.getenv("MIWB_HUB_URL") or "https://huggingface.co"
  local out = {}
  local function add(repo, file, as)
    out[#out + 1] = {url = ("%s/%s/resolve/main/%s"):format(hub, repo, file), dest = as or file, repo = repo}
  end
  if m.files then
    for _, f in ipairs(m.files) do add(f.repo, f.file, f.as) end
  else
    for _, f in ipairs(HF_FILES) do
      if f ~= "model.safetensors" or not shards then add(m.repo, f) end
    end
    if shards then
      add(m.repo, SHARD_INDEX)
      for _, f in ipairs(shards) do add(m.repo, f) end
    end
  end
  return out
end

-- ---------------------------------------------------------------- small helpers
local function exists(path) return mi.utils.file_exists(path) end

local function read_all(path) return mi.utils.read_file(path) end

local function is_dir(path) return exists(path .. "/.") or exists(path .. "/config.json") end

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- the tensor sd[name] with exactly this shape, or an error naming both (also miwb.families')
local function need(sd, name, shape, where)
  local t = sd[name]
  if t == nil then error(("%s: tensor '%s' is missing"):format(where, name), 3) end
  local s = t:shape()
  local ok = #s == #shape
  for i = 1, #shape do ok = ok and s[i] == shape[i] end
  if not ok then
    error(("%s: tensor '%s' has shape %s, the config needs [%s]"):format(where, name, shape_str(t),
      table.concat(shape, ",")), 3)
  end
  return t
end

M.need = need

local function is_null(v) return v == nil or (mi and mi.json and v == mi.json.null) end

-- ---------------------------------------------------------------- configs
local function posint(hf, field, where)
  local v = hf[field]
  if math.type(v) ~= "integer" or v <= 0 then
    error(("%s: field '%s' must be a positive integer, got %s"):format(where, field, tostring(v)), 3)
  end
  return v
end

-- A Hugging Face GPT2Config (decoded config.json) -> HookedTransformerConfig fields, as
-- TransformerLens's convert_hf_model_config does for GPT2LMHeadModel.
function M.hf_config_to_tl(hf, name, where)
  where = where or "config.json"
  if hf.model_type ~= nil and hf.model_type ~= "gpt2" then
    error(("%s: model_type '%s' is not supported (GPT-2 only)"):format(where, tostring(hf.model_type)), 2)
  end
  local d, h = posint(hf, "n_embd", where), posint(hf, "n_head", where)
  if d % h ~= 0 then error(("%s: n_embd %d is not a multiple of n_head %d"):format(where, d, h), 2) end
  local act = hf.activation_function
  if is_null(act) then act = "gelu_new" end
  if hf.scale_attn_by_inverse_layer_idx == true then
    error(where .. ": scale_attn_by_inverse_layer_idx = true is not supported", 2)
  end
  local eps = hf.layer_norm_epsilon
  if is_null(eps) then eps = 1e-5 end
  if type(eps) ~= "number" or eps <= 0 then error(where .. ": field 'layer_norm_epsilon' must be a positive number", 2) end
  local n_inner = hf.n_inner
  local d_mlp = is_null(n_inner) and 4 * d or n_inner
  if math.type(d_mlp) ~= "integer" or d_mlp <= 0 then error(where .. ": field 'n_inner' must be a positive integer", 2) end
  local n_ctx = hf.n_positions
  if is_null(n_ctx) then n_ctx = hf.n_ctx end
  local cfg = {
    d_model = d, d_head = d // h, n_heads = h, d_mlp = d_mlp,
    n_layers = posint(hf, "n_layer", where),
    n_ctx = (math.type(n_ctx) == "integer" and n_ctx > 0) and n_ctx or posint(hf, "n_positions", where),
    eps = eps, d_vocab = posint(hf, "vocab_size", where), act_fn = act,
    use_attn_scale = true, use_local_attn = false, attn_only = false,
    normalization_type = "LN", positional_embedding_type = "standard", attention_dir = "causal",
    original_architecture = "GPT2LMHeadModel", tokenizer_name = name, model_name = name,
    default_prepend_bos = true, use_attn_result = false,
  }
  cfg.d_vocab_out = cfg.d_vocab
  return cfg
end

-- ---------------------------------------------------------------- HF GPT-2 -> TransformerLens
-- sd: HF names (with or without the "transformer." prefix). Returns a new table with the
-- TransformerLens names and shapes (docs/tl-conventions.md), the unembedding tied to wte unless an
-- lm_head.weight is present. Buffers (attn.bias, attn.masked_bias) are dropped.
function M.convert_hf_gpt2(sd, cfg, where)
  where = where or "state dict"
  local hf = {}
  for k, v in pairs(sd) do hf[(k:gsub("^transformer%.", ""))] = v end
  local d, H, dh, V, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.d_mlp
  local out = {}
  local wte = need(hf, "wte.weight", {V, d}, where)
  out["embed.W_E"] = wte
  out["pos_embed.W_pos"] = need(hf, "wpe.weight", {cfg.n_ctx, d}, where)
  for l = 0, cfg.n_layers - 1 do
    local p, q = ("h.%d."):format(l), ("blocks.%d."):format(l)
    out[q .. "ln1.w"] = need(hf, p .. "ln_1.weight", {d}, where)
    out[q .. "ln1.b"] = need(hf, p .. "ln_1.bias", {d}, where)
    -- c_attn.weight [d, 3d] = [W_Q | W_K | W_V]; the columns of each are (head, d_head)
    local W = need(hf, p .. "attn.c_attn.weight", {d, 3 * d}, where)
    local bias = need(hf, p .. "attn.c_attn.bias", {3 * d}, where):reshape(3, H, dh)
    for i, n in ipairs({"Q", "K", "V"}) do
      out[q .. "attn.W_" .. n] = W:narrow(1, (i - 1) * d, d):reshape(d, H, dh):permute(1, 0, 2):contiguous()
      out[q .. "attn.b_" .. n] = bias:select(0, i - 1):contiguous()
    end
    -- c_proj.weight [d, d]: rows are (head, d_head)
    out[q .. "attn.W_O"] = need(hf, p .. "attn.c_proj.weight", {d, d}, where):reshape(H, dh, d)
    out[q .. "attn.b_O"] = need(hf, p .. "attn.c_proj.bias", {d}, where)
    out[q .. "ln2.w"] = need(hf, p .. "ln_2.weight", {d}, where)
    out[q .. "ln2.b"] = need(hf, p .. "ln_2.bias", {d}, where)
    out[q .. "mlp.W_in"] = need(hf, p .. "mlp.c_fc.weight", {d, m}, where)
    out[q .. "mlp.b_in"] = need(hf, p .. "mlp.c_fc.bias", {m}, where)
    out[q .. "mlp.W_out"] = need(hf, p .. "mlp.c_proj.weight", {m, d}, where)
    out[q .. "mlp.b_out"] = need(hf, p .. "mlp.c_proj.bias", {d}, where)
  end
  out["ln_final.w"] = need(hf, "ln_f.weight", {d}, where)
  out["ln_final.b"] = need(hf, "ln_f.bias", {d}, where)
  M.unembed_from(out, sd, wte, V, d, where)
  return out
end

-- out's unembed.W_U [d, V] from sd's lm_head.weight [V, d], or tied to the embedding emb [V, d]
-- when there is none; b_U zeros (also miwb.families')
function M.unembed_from(out, sd, emb, V, d, where)
  local head = sd["lm_head.weight"] and need(sd, "lm_head.weight", {V, d}, where) or emb
  out["unembed.W_U"] = head:t():contiguous()
  out["unembed.b_U"] = mi.zeros(V)
end

-- ---------------------------------------------------------------- weight processing
-- Each takes a TransformerLens state dict and config and returns a new state dict (the input
-- table and its tensors are left unchanged), with TransformerLens's arithmetic.

-- TransformerLens's default normalization_type (absent) is "LN"; "None" means none
local function ln_type(cfg)
  local t = cfg.normalization_type
  return t == nil or t == "LN" or t == "LNPre"
end

-- LayerNorm weights into the maps that read its output. Missing ln weights (an LNPre model) act
-- as w = 1, b = 0, as TransformerLens fills them in.
function M.fold_layer_norm(sd, cfg, opts)
  opts = opts or {}
  local fold_biases = opts.fold_biases ~= false
  local center = opts.center_weights ~= false
  sd = copy(sd)
  local d = cfg.d_model
  local function fold(prefix_ln, reads)
    -- reads: list of {W name, b name, reshape of the LN vectors to broadcast over W, d_model dim}
    local w, b = sd[prefix_ln .. ".w"], sd[prefix_ln .. ".b"]
    for _, r in ipairs(reads) do
      local Wn, bn, shape, dim, scale_only = r[1], r[2], r[3], r[4], r[5]
      local W = sd[Wn]
      if W == nil then error(("fold_layer_norm: tensor '%s' is missing"):format(Wn), 3) end
      -- b folds in as b @ W (summing over d_model) without a W-sized temporary; then one new W
      -- scaled by w, centred in place. TransformerLens folds only w into a gate (W_gate)
      local c = center and not scale_only
      if fold_biases and b and not scale_only then sd[bn] = sd[bn] + b:matmul(W) end
      if w then W = W * w:reshape(shape) elseif c then W = W:clone() end
      if c then W:sub_(W:mean(dim, true)) end
      sd[Wn] = W
    end
    if fold_biases then sd[prefix_ln .. ".b"] = nil end
    sd[prefix_ln .. ".w"] = nil
  end
  local g = cfg.n_key_value_heads and "_" or ""   -- grouped K/V: TransformerLens's _W_K, _b_K, ...
  for l = 0, cfg.n_layers - 1 do
    local q = ("blocks.%d."):format(l)
    fold(q .. "ln1", {
      {q .. "attn.W_Q", q .. "attn.b_Q", {1, d, 1}, 1},
      {q .. "attn." .. g .. "W_K", q .. "attn." .. g .. "b_K", {1, d, 1}, 1},
      {q .. "attn." .. g .. "W_V", q .. "attn." .. g .. "b_V", {1, d, 1}, 1},
    })
    if not cfg.attn_only then
      local reads = {{q .. "mlp.W_in", q .. "mlp.b_in", {d, 1}, 0}}
      if cfg.gated_mlp then reads[2] = {q .. "mlp.W_gate", nil, {d, 1}, 0, true} end
      fold(q .. "ln2", reads)
      -- solu_ln: the MLP's own LayerNorm (mlp.ln, over d_mlp) into W_out and b_out, as
      -- TransformerLens folds it ("ln3")
      if cfg.act_fn == "solu_ln" then
        local Wo = sd[q .. "mlp.W_out"]   -- [d_mlp, d]; fold raises when it is missing
        fold(q .. "mlp.ln", {{q .. "mlp.W_out", q .. "mlp.b_out", {Wo and Wo:size(0) or 1, 1}, 0}})
      end
    end
  end
  fold("ln_final", {{"unembed.W_U", "unembed.b_U", {d, 1}, 0}})
  return sd
end

function M.center_writing_weights(sd, cfg)
  sd = copy(sd)
  local function c(name, last)
    local t = sd[name]
    if t == nil then error(("center_writing_weights: tensor '%s' is missing"):format(name), 3) end
    sd[name] = last and (t - t:mean(-1, true)) or (t - t:mean())
  end
  c("embed.W_E", true)
  if cfg.positional_embedding_type ~= "rotary" then c("pos_embed.W_pos", true) end
  for l = 0, cfg.n_layers - 1 do
    local q = ("blocks.%d."):format(l)
    c(q .. "attn.W_O", true)
    c(q .. "attn.b_O", false)
    if not cfg.attn_only then
      c(q .. "mlp.W_out", true)
      c(q .. "mlp.b_out", false)
    end
  end
  return sd
end

function M.center_unembed(sd)
  sd = copy(sd)
  local W, b = sd["unembed.W_U"], sd["unembed.b_U"]
  if W == nil or b == nil then error("center_unembed: tensors 'unembed.W_U' and 'unembed.b_U' are needed", 2) end
  sd["unembed.W_U"] = W - W:mean(-1, true)
  sd["unembed.b_U"] = b - b:mean()
  return sd
end

function M.fold_value_biases(sd, cfg)
  sd = copy(sd)
  local bv = cfg.n_key_value_heads and "attn._b_V" or "attn.b_V"
  for l = 0, cfg.n_layers - 1 do
    local q = ("blocks.%d."):format(l)
    local bV, WO, bO = sd[q .. bv], sd[q .. "attn.W_O"], sd[q .. "attn.b_O"]
    if not (bV and WO and bO) then error(("fold_value_biases: layer %d needs b_V, W_O and b_O"):format(l), 2) end
    sd[q .. bv] = mi.zeros(bV:shape())
    -- grouped heads: each key/value head's bias serves n_heads / n_key_value_heads query heads
    if cfg.n_key_value_heads then
      local kv, dh = bV:size(0), bV:size(1)
      bV = bV:unsqueeze(1):expand(kv, cfg.n_heads // kv, dh):reshape(cfg.n_heads, dh)
    end
    -- b_V [H, dh] -> [H, dh, 1] times W_O [H, dh, d], summed over heads and d_head
    sd[q .. "attn.b_O"] = bO + (bV:unsqueeze(-1) * WO):sum({0, 1})
  end
  return sd
end

-- every step from_pretrained does, switched by opts; returns the new state dict and a copy of
-- cfg (normalization_type "LNPre" once LayerNorm is folded). As TransformerLens's
-- load_and_process_state_dict: a model without LayerNorm skips fold_ln and
-- center_writing_weights, with TransformerLens's warnings.
-- TransformerLens's fill_missing_keys(model, state_dict): every parameter of the model that
-- state_dict lacks is filled in (in place) with the model's own current value, with TL's warning
-- for each weight matrix ("W_" in its name); returns state_dict.
function M.fill_missing_keys(model, state_dict, ...)
  if select("#", ...) > 0 then
    error("fill_missing_keys: takes (model, state_dict), as TransformerLens's; got " .. (2 + select("#", ...)) ..
          " arguments", 2)
  end
  if type(model) ~= "table" or type(model.state_dict) ~= "function" then
    error("fill_missing_keys: expected a model (HookedTransformer), got " .. mi.utils.typename(model), 2)
  end
  if type(state_dict) ~= "table" then
    error("fill_missing_keys: expected a state dict {name = tensor}, got " .. mi.utils.typename(state_dict), 2)
  end
  local default = model:state_dict()
  local missing = {}
  for k in pairs(default) do if state_dict[k] == nil then missing[#missing + 1] = k end end
  table.sort(missing)
  for _, k in ipairs(missing) do
    if not k:find("hf_model", 1, true) then
      if k:find("W_", 1, true) then
        mi.utils.warn("Missing key for a weight matrix in pretrained, filled in with an empty tensor: " .. k)
      end
      state_dict[k] = default[k]
    end
  end
  return state_dict
end

function M.process_weights(sd, cfg, opts)
  mi.utils.check_opts("process_weights", opts, PROCESSING)
  opts = opts or {}
  if opts.refactor_factored_attn_matrices then
    error("process_weights: refactor_factored_attn_matrices is not supported by miwb", 2)
  end
  local function on(k) return opts[k] ~= false end
  cfg = copy(cfg)
  -- TransformerLens's rules (load_and_process_state_dict), with its warnings: LayerNorm folds
  -- weights and biases and centres the reading weights; RMSNorm folds only its weights; centring
  -- the writing weights needs LayerNorm (not final_rms)
  if on("fold_ln") then
    if ln_type(cfg) then
      sd = M.fold_layer_norm(sd, cfg)
      cfg.normalization_type = "LNPre"
    elseif cfg.normalization_type == "RMS" or cfg.normalization_type == "RMSPre" then
      sd = M.fold_layer_norm(sd, cfg, {fold_biases = false, center_weights = false})
      cfg.normalization_type = "RMSPre"
    else
      mi.utils.warn("You are not using LayerNorm or RMSNorm, so the layer norm weights can't be folded! Skipping")
    end
  end
  if on("center_writing_weights") then
    if not ln_type(cfg) then
      mi.utils.warn("You are not using LayerNorm, so the writing weights can't be centered! Skipping")
    elseif cfg.final_rms then
      mi.utils.warn("This model is using final RMS normalization, so the writing weights can't be centered! Skipping")
    else
      sd = M.center_writing_weights(sd, cfg)
    end
  end
  if on("center_unembed") then sd = M.center_unembed(sd) end
  if on("fold_value_biases") then sd = M.fold_value_biases(sd, cfg) end
  return sd, cfg
end

-- A decoded config.json -> (HookedTransformerConfig fields, "tl") for a miwb / TransformerLens
-- config (it has d_model), or (converted fields, "hf") for a Hugging Face GPT2Config.
function M.read_config(conf, name, where)
  where = where or "config.json"
  if type(conf) ~= "table" then error(where .. ": not a JSON object", 2) end
  if conf.d_model == nil then
    local arch = mi.families.architecture(conf)
    if arch == nil or arch == "GPT2LMHeadModel" then return M.hf_config_to_tl(conf, name, where), "hf" end
    return mi.families.config(conf, name, where), "hf"
  end
  local cfg = {}
  for k, v in pairs(conf) do if not is_null(v) then cfg[k] = v end end
  -- TransformerLens's None (JSON null, or the string) is spelled "None" here; absent means "LN"
  local nt = conf.normalization_type
  if nt ~= nil and (is_null(nt) or nt == false or tostring(nt):lower() == "none") then cfg.normalization_type = "None"
  elseif nt == nil then cfg.normalization_type = "LN" end
  cfg.model_name = cfg.model_name or name
  for _, f in ipairs({"d_model", "n_layers", "d_vocab", "n_ctx"}) do
    if math.type(cfg[f]) ~= "integer" or cfg[f] <= 0 then
      error(("%s: field '%s' must be a positive integer"):format(where, f), 2)
    end
  end
  for _, f in ipairs({"n_heads", "d_head", "d_mlp", "d_vocab_out"}) do
    if cfg[f] ~= nil and (math.type(cfg[f]) ~= "integer" or (cfg[f] <= 0 and cfg[f] ~= -1)) then
      error(("%s: field '%s' must be a positive integer"):format(where, f), 2)
    end
  end
  if not cfg.n_heads and not cfg.d_head then error(where .. ": needs 'n_heads' or 'd_head'", 2) end
  cfg.n_heads = cfg.n_heads or (cfg.d_model // cfg.d_head)
  cfg.d_head = cfg.d_head or (cfg.d_model // cfg.n_heads)
  if cfg.n_heads <= 0 or cfg.d_head <= 0 then error(where .. ": 'n_heads' and 'd_head' must be positive", 2) end
  if cfg.d_vocab_out == nil or cfg.d_vocab_out == -1 then cfg.d_vocab_out = cfg.d_vocab end
  return cfg, "tl"
end

-- ---------------------------------------------------------------- folders
local WEIGHT_FILES = {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json", "model.pth", "model.pt"}

-- A sharded checkpoint: the index's weight_map names, for every tensor, a file of the folder; every
-- file is loaded once and must hold the tensors the index gives it.
-- A shard index file's shards: the sorted file names and, for each, its tensor names (also miwb pull's)
function M.shard_index(ipath)
  local text, err = read_all(ipath)
  if not text then error(("%s: cannot read: %s"):format(ipath, tostring(err)), 3) end
  local ok, index = pcall(mi.json.decode, text)
  if not ok or type(index) ~= "table" or type(index.weight_map) ~= "table" then
    error(("%s: not a shard index (a JSON object with a 'weight_map' object)"):format(ipath), 3)
  end
  local names_of, order = {}, {}
  for name, file in pairs(index.weight_map) do
    if type(name) ~= "string" or type(file) ~= "string" then error(ipath .. ": weight_map maps names to file names", 3) end
    if file:find("/", 1, true) or file:find("\\", 1, true) or file == ".." or file == "." or file == "" then
      error(("%s: shard '%s' of tensor '%s' is not a file of the folder"):format(ipath, file, name), 3)
    end
    if not names_of[file] then names_of[file] = {}; order[#order + 1] = file end
    table.insert(names_of[file], name)
  end
  table.sort(order)
  return order, names_of
end

local function load_sharded(folder, ipath)
  local order, names_of = M.shard_index(ipath)
  local sd = {}
  for _, file in ipairs(order) do
    local path = folder .. "/" .. file
    if not exists(path) then error(("%s: shard '%s' is missing (listed in %s)"):format(folder, file, ipath), 3) end
    local part, perr = mi.load(path)
    if not part then error(perr, 3) end
    for _, name in ipairs(names_of[file]) do
      if part[name] == nil then error(("%s: tensor '%s' is not in shard %s"):format(ipath, name, file), 3) end
      sd[name] = part[name]
    end
  end
  return sd
end

-- the (unprocessed) TransformerLens state dict, config and tokenizer path of a folder
function M.load_folder(folder, name)
  local cpath = folder .. "/config.json"
  local text, err = read_all(cpath)
  if not text then error(("%s: cannot read: %s"):format(cpath, tostring(err)), 2) end
  local ok, conf = pcall(mi.json.decode, text)
  if not ok or type(conf) ~= "table" then error(("%s: not a JSON object: %s"):format(cpath, tostring(conf)), 2) end
  local wpath
  for _, f in ipairs(WEIGHT_FILES) do
    if exists(folder .. "/" .. f) then wpath = folder .. "/" .. f break end
  end
  if not wpath then
    error(("%s: no weights (one of %s)"):format(folder, table.concat(WEIGHT_FILES, ", ")), 2)
  end
  local sd
  if wpath:match("%.index%.json$") then sd = load_sharded(folder, wpath)
  else
    local e
    sd, e = mi.load(wpath)
    if not sd then error(e, 2) end
  end
  local cfg, kind = M.read_config(conf, name or folder:match("([^/]+)/*$"), cpath)
  if kind == "tl" then
    -- buffers TransformerLens keeps in its state dicts
    for k in pairs(sd) do
      if k:match("%.attn%.mask$") or k:match("%.attn%.IGNORE$") then sd[k] = nil end
    end
  elseif cfg.original_architecture == "GPT2LMHeadModel" then
    sd = M.convert_hf_gpt2(sd, cfg, wpath)
  else
    sd = mi.families.convert(sd, cfg, wpath)
  end
  local tok = folder .. "/tokenizer.json"
  return sd, cfg, exists(tok) and tok or nil
end

local function locate(name_or_folder)
  if is_dir(name_or_folder) and exists(name_or_folder .. "/config.json") then return name_or_folder end
  local dir, m = M.model_dir(name_or_folder)
  if exists(dir .. "/config.json") then return dir, m end
  local lines = {}
  if m then
    lines[#lines + 1] = ("model '%s' is not in the cache (%s)."):format(name_or_folder, dir)
    lines[#lines + 1] = ("Download it with:  miwb pull %s"):format(m.name)
  else
    local names = {}
    for _, e in ipairs(M.MODELS) do names[#names + 1] = e.name end
    lines[#lines + 1] = ("'%s' is neither a model folder (with config.json) nor a known model name (%s)."):format(
      name_or_folder, table.concat(names, ", "))
  end
  error(table.concat(lines, "\n"), 3)
end

-- TransformerLens's from_pretrained rules for a config: a shortformer model gets no fold_ln,
-- center_unembed or center_writing_weights (its positional embedding never enters the residual
-- stream, so they would change what the model computes), each with TransformerLens's warning.
-- Returns a copy of opts with the processing switches that apply.
function M.processing_options(cfg, opts)
  local o = {}
  for _, k in ipairs(PROCESSING) do o[k] = (opts or {})[k] end
  if cfg.positional_embedding_type == "shortformer" then
    for _, k in ipairs({"fold_ln", "center_unembed", "center_writing_weights"}) do
      if o[k] ~= false then
        mi.utils.warn(("You tried to specify %s=True for a shortformer model, but this can't be done! " ..
                       "Setting %s=False instead."):format(k, k))
        o[k] = false
      end
    end
  end
  return o
end

-- state dict (processed per opts, under TransformerLens's rules), config and folder; no model class
function M.load_pretrained(name_or_folder, opts)
  mi.utils.check_opts("load_pretrained", opts, PRETRAINED_OPTS)
  opts = opts or {}
  local folder = locate(name_or_folder)
  local sd, cfg, tok = M.load_folder(folder, name_or_folder)
  sd, cfg = M.process_weights(sd, cfg, M.processing_options(cfg, opts))
  return sd, cfg, folder, tok
end

function M.from_pretrained(name_or_folder, opts)
  mi.utils.check_opts("from_pretrained", opts, PRETRAINED_OPTS)
  opts = opts or {}
  local sd, cfg, folder, tok = M.load_pretrained(name_or_folder, opts)
  if not mi.HookedTransformer then
    error("from_pretrained: this build has no HookedTransformer; mi.load_pretrained gives the weights", 2)
  end
  local tokenizer = opts.tokenizer
  if tokenizer == nil and tok and mi.load_tokenizer then tokenizer = tok end
  if tokenizer == false then
    -- none at all: the model class would otherwise look for cfg.tokenizer_name
    tokenizer = nil
    cfg.tokenizer_name = nil
  end
  local model = mi.HookedTransformer(cfg, {tokenizer = tokenizer})
  model:load_state_dict(sd)
  model.folder = folder
  return model
end

function M.from_pretrained_no_processing(name_or_folder, opts)
  local o = copy(opts or {})
  o.fold_ln, o.center_writing_weights, o.center_unembed, o.fold_value_biases = false, false, false, false
  return M.from_pretrained(name_or_folder, o)
end

-- Writes a miwb model folder that from_pretrained reads back: config.json (the config's
-- HookedTransformerConfig fields; normalization None as null), model.safetensors (state-dict
-- names) and tokenizer.json (copied). what: a HookedTransformer, or a state dict with opts.cfg.
-- opts.tokenizer: a tokenizer.json path to copy (default: the model's own folder's, if any).
function M.save_pretrained(what, folder, opts)
  mi.utils.check_opts("save_pretrained", opts, {"cfg", "tokenizer"})
  mi.utils.check_name("save_pretrained", "folder", folder)
  opts = opts or {}
  local sd, cfg, tok = what, opts.cfg, opts.tokenizer
  local kind = mi.utils.typename(what)   -- by type: a cache's fields are hook names, what.cfg would raise
  if kind ~= "miwb.HookedTransformer" and kind ~= "table" then
    error("save_pretrained: needs a model, or a state dict and opts.cfg; got " .. kind, 2)
  end
  if kind == "miwb.HookedTransformer" then
    sd, cfg = what:state_dict(), cfg or what.cfg
    if tok == nil and what.folder and exists(what.folder .. "/tokenizer.json") then tok = what.folder .. "/tokenizer.json" end
  end
  if type(sd) ~= "table" or type(cfg) ~= "table" then
    error("save_pretrained: needs a model, or a state dict and opts.cfg", 2)
  end
  local made, merr = mi.utils.mkdir_p(folder)
  if not made then error("save_pretrained: " .. merr, 2) end
  local conf = {}
  for k, v in pairs(cfg) do
    local t = type(v)
    if type(k) == "string" and (t == "string" or t == "number" or t == "boolean") then conf[k] = v end
  end
  if cfg.normalization_type == nil or cfg.normalization_type == "None" then conf.normalization_type = mi.json.null end
  mi.save(folder .. "/model.safetensors", sd)
  local f = assert(io.open(folder .. "/config.json", "w"))
  f:write(mi.json.encode(conf, {indent = true}), "\n")
  f:close()
  if tok then
    local src = assert(io.open(tok, "rb"))
    local data = src:read("a")
    src:close()
    local dst = assert(io.open(folder .. "/tokenizer.json", "wb"))
    dst:write(data)
    dst:close()
  end
  return folder
end

-- ---------------------------------------------------------------- downloads (`miwb pull`)
local function shq(s) return mi.utils.shell_quote(s) end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- HF_TOKEN for curl: the Authorization header in a private temporary file (os.tmpname makes it
-- with mode 0600; curl -H @FILE reads it), so the token is on no command line and in no message.
-- Returns the curl option ("" without a token) and a function removing the file; or nil, message.
local function auth_header()
  local token = os.getenv("HF_TOKEN")
  if not token or token == "" then return "", function() end end
  if token:find("[%c%s]") then return nil, "miwb pull: HF_TOKEN holds spaces or control characters" end
  local path = os.tmpname()
  local f = io.open(path, "wb")
  if not f then return nil, "miwb pull: cannot write a temporary file for HF_TOKEN" end
  f:write("Authorization: Bearer ", token, "\n")
  f:close()
  return " -H @" .. shq(path), function() os.remove(path) end
end

-- HEAD of url (following redirects): the size the server announces, and when it tells (the hub's
-- X-Linked-Etag of LFS files) the content's sha256; or nil, message, the last HTTP status (nil when
-- no server answered) and the hub's X-Error-Code
local function remote_size(url, auth)
  local cmd = ("curl -sS -I -L --connect-timeout 10 --max-time 60%s %s 2>&1"):format(auth or "", shq(url))
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  if not ok then return nil, (out:gsub("%s+$", "")) end
  -- the last response's Content-Length; the hub also sends x-linked-size for large files
  local size, linked, sha, status, code
  for line in out:gmatch("[^\r\n]+") do
    local st = line:match("^HTTP/%S+%s+(%d+)")
    if st then size, status = nil, tonumber(st) end -- each redirect starts a new response
    local k, v = line:match("^([%w%-]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      if k == "content-length" then size = tonumber(v) end
      if k == "x-linked-size" then linked = tonumber(v) end
      if k == "x-linked-etag" then sha = v:match('^"?(%x+)"?$') end
      if k == "x-error-code" then code = v end
    end
  end
  if status ~= 200 then return nil, ("HTTP %s"):format(tostring(status)), status, code end
  if sha and #sha ~= 64 then sha = nil end
  return size or linked, sha and sha:lower()
end

local function offline_message(m, dir, files, why)
  local lines = {("miwb pull %s: cannot reach the model hub (%s)."):format(m.name, why),
                 "Place these files by hand instead:"}
  for _, f in ipairs(files) do lines[#lines + 1] = ("  %s/%s   <- %s"):format(dir, f.dest, f.url) end
  if m.config then lines[#lines + 1] = ("  (%s/config.json is written by miwb pull itself)"):format(dir) end
  return table.concat(lines, "\n")
end

-- the hub answered 401 / 403: a gated or private repository (or none: the hub says 401 for both)
local function refused_message(m, repo, status, code)
  local page = "https://huggingface.co/" .. repo
  local lines = {("miwb pull %s: the hub refused %s (HTTP %d%s)."):format(m.name, repo, status,
    code and (", " .. code) or "")}
  if os.getenv("HF_TOKEN") and os.getenv("HF_TOKEN") ~= "" then
    lines[#lines + 1] = "HF_TOKEN is set, but the hub does not accept it for this repository: check that the " ..
      "token is valid and that its account was granted access on " .. page .. "."
  else
    lines[#lines + 1] = ("%s is gated or private (or does not exist) and needs a Hugging Face token:"):format(repo)
    lines[#lines + 1] = ("  1. request access on %s (gated models such as meta-llama/... ask you to accept a licence)"):format(page)
    lines[#lines + 1] = "  2. create a token with read access on https://huggingface.co/settings/tokens"
    lines[#lines + 1] = ("  3. export HF_TOKEN=hf_...   and run   miwb pull %s   again"):format(m.name)
    lines[#lines + 1] = "(miwb pull passes the token to curl as an Authorization header and never prints it)"
  end
  return table.concat(lines, "\n")
end

-- one file into dest: curl's progress bar, resume of dest.part (curl -C -), then the size and
-- (when announced) sha256 checked before the rename; true, or nil and a message
local function download(f, dest, size, sha, auth, quiet)
  local part = dest .. ".part"
  if not quiet then io.stderr:write(("%s -> %s (%.1f MB)\n"):format(f.url, dest, size / 1e6)) end
  local cmd = ("curl -L --fail -C - %s --connect-timeout 20%s -o %s %s"):format(
    quiet and "-sS" or "--progress-bar", auth, shq(part), shq(f.url))
  local ok = os.execute(cmd)
  local got = file_size(part)
  if not ok and got ~= size then
    return nil, ("miwb pull: downloading %s failed (%s of %d bytes kept in %s; run pull again to resume)"):format(
      f.url, tostring(got or 0), size, part)
  end
  if got ~= size then
    return nil, ("miwb pull: %s has %s bytes, the server announced %d; remove it and pull again"):format(
      part, tostring(got), size)
  end
  if sha then
    local sum = mi.sha256_file(part)
    if sum ~= sha then
      os.remove(part)
      return nil, ("miwb pull: %s: sha256 %s, the server announced %s; the partial file was removed, " ..
        "pull again"):format(f.dest, tostring(sum), sha)
    end
  end
  local ren_ok, ren_err = os.rename(part, dest)
  if not ren_ok then return nil, "miwb pull: " .. tostring(ren_err) end
  return true
end

-- why a HEAD request failed, as a message: refused (401/403), absent (404), or offline
local function head_failure(m, dir, f, why, status, code)
  if status == 401 or status == 403 then return refused_message(m, f.repo, status, code) end
  if status == 404 then
    local extra = (f.dest == "model.safetensors") and
      " (miwb pull fetches model.safetensors, or model.safetensors.index.json and its shards; this repository has neither)" or ""
    return ("miwb pull %s: %s is not on the hub (HTTP 404)%s"):format(m.name, f.url, extra)
  end
  return offline_message(m, dir, M.files(m), why or "no size announced")
end

local function pull_files(m, dir, auth, opts)
  local function mkdir() return mi.utils.mkdir_p(dir) end -- no shell
  -- a hub repository's weights: model.safetensors, or a shard index and every shard it names
  -- (each shard a file of its own, resumed on its own)
  local shards
  if not m.files then
    local ipath = dir .. "/" .. SHARD_INDEX
    if not exists(dir .. "/model.safetensors") and not exists(ipath) then
      local all = M.files(m, {})
      local fi = all[#all]
      local size, sha, status, code = remote_size(fi.url, auth)
      if size then
        local made, merr = mkdir()
        if not made then return nil, "miwb pull: " .. merr end
        local ok, err = download(fi, ipath, size, sha, auth, opts.quiet)
        if not ok then return nil, err end
      elseif status ~= 404 then
        return nil, head_failure(m, dir, fi, sha, status, code)
      end
    end
    if exists(ipath) then
      local ok, order = pcall(M.shard_index, ipath)
      if not ok then return nil, "miwb pull: " .. tostring(order) end
      shards = order
    end
  end
  local files = M.files(m, shards)
  -- one quick request per missing file first, so that an offline machine fails at once
  local sizes, shas = {}, {}
  for i, f in ipairs(files) do
    if not exists(dir .. "/" .. f.dest) then
      local size, sha, status, code = remote_size(f.url, auth)
      if not size then return nil, head_failure(m, dir, f, sha, status, code) end
      sizes[i], shas[i] = size, sha
    end
  end
  local made, merr = mi.utils.mkdir_p(dir)
  if not made then return nil, "miwb pull: " .. merr end
  for i, f in ipairs(files) do
    local dest = dir .. "/" .. f.dest
    if exists(dest) then
      if not opts.quiet then io.stderr:write(("%s: already there\n"):format(dest)) end
    else
      local ok, err = download(f, dest, sizes[i], shas[i], auth, opts.quiet)
      if not ok then return nil, err end
    end
  end
  if m.config and not exists(dir .. "/config.json") then
    local f = assert(io.open(dir .. "/config.json", "w"))
    f:write(mi.json.encode(m.config, {indent = true}), "\n")
    f:close()
  end
  return dir
end

local function known_names()
  local names = {}
  for _, e in ipairs(M.MODELS) do names[#names + 1] = e.name end
  return table.concat(names, ", ")
end

-- Downloads a model's files into its cache folder $MIWB_HOME/models/NAME: a progress bar (curl's),
-- resume of partial downloads (FILE.part, curl -C -), a size and sha256 check against what the
-- server announced. NAME: a TransformerLens name or alias, or any hub repository id OWNER/NAME
-- (config.json, tokenizer.json, and model.safetensors or the shards of model.safetensors.index.json).
-- HF_TOKEN, when set, is sent as "Authorization: Bearer" (gated repositories).
-- Returns the folder, or nil and a message. opts.quiet hides the progress bar.
function M.pull(name, opts)
  opts = opts or {}
  local m = M.resolve(name) or M.hub_entry(name)
  if not m then
    return nil, ("miwb pull: unknown model '%s' (known: %s; or any hub repository id OWNER/NAME)"):format(
      name, known_names())
  end
  local dir = M.home() .. "/models/" .. m.name
  if not os.execute("command -v curl >/dev/null 2>&1") then
    return nil, "miwb pull: the curl command is missing (Debian package curl)\n" ..
      offline_message(m, dir, M.files(m), "no curl")
  end
  local auth, drop = auth_header()
  if not auth then return nil, drop end
  local ok, got, err = pcall(pull_files, m, dir, auth, opts)
  drop()
  if not ok then error(got, 0) end
  return got, err
end

-- `miwb pull NAME...`: returns the exit status
function M.cli_pull(args)
  if #args == 0 or args[1] == "-h" or args[1] == "--help" then
    io.stdout:write("usage: miwb pull NAME...\n  downloads a model into " .. M.home() ..
      "/models/NAME\n  known: " .. known_names() .. " (and TransformerLens's aliases: pythia-70m, ...)\n" ..
      "  or any hub repository id OWNER/NAME (config.json, tokenizer.json, model.safetensors or its shards)\n" ..
      "  gated repositories (meta-llama/...): export HF_TOKEN=hf_... first\n")
    return #args == 0 and 2 or 0
  end
  for _, name in ipairs(args) do
    local dir, err = M.pull(name)
    if not dir then
      io.stderr:write(err, "\n")
      return 1
    end
    io.stdout:write(("%s is in %s\n"):format(name, dir))
  end
  return 0
end

function M._install(miwb)
  mi = miwb
  mi.from_pretrained = M.from_pretrained
  mi.from_pretrained_no_processing = M.from_pretrained_no_processing
  mi.load_pretrained = M.load_pretrained
  mi.save_pretrained = M.save_pretrained
  mi.cli = mi.cli or {}
  mi.cli.pull = M.cli_pull
end

return M
