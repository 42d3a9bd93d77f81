-- mi.HookedTransformer and mi.HookedTransformerConfig: TransformerLens's model class over the C
-- forward pass of core/model.c (bound in lua/lmodel.c).
--
--   local cfg = mi.HookedTransformerConfig{d_model = 768, d_head = 64, n_layers = 2, n_ctx = 2048,
--       d_vocab = 50278, attn_only = true, normalization_type = "None",  -- or false (Python's None)
--       positional_embedding_type = "shortformer", use_attn_result = true, seed = 398}
--   local model = mi.HookedTransformer(cfg, {tokenizer = tok_or_path})   -- weights initialized
--   model:load_state_dict(sd); model:state_dict(); model.cfg
--   model.W_E, W_pos, W_Q, W_K, W_V [L,H,d,dh], W_O [L,H,dh,d], b_Q, b_K, b_V, b_O, W_in, b_in,
--       W_out, b_out, W_U, b_U (views: edits change the model); model.QK, model.OV (FactoredMatrix)
--   model(input, opts) == model:forward(input, opts)
--       input: a string, a list of strings (padded; attention mask), int64 tokens [B,P] or [P],
--       or with start_at_layer a residual stream [B,P,d]
--       opts: return_type "logits" (default) | "loss" | "both" (returns logits, loss) | "none";
--       loss_per_token, prepend_bos, padding_side, attention_mask, start_at_layer, stop_at_layer
--       (returns the residual stream entering that block), tokens (for the loss when starting
--       from a residual), fwd_hooks, last_only (with return_type "logits": logits [B,1,d_vocab] of each
--       row's last real position, the only row unembedded; miwb's own, TransformerLens has none)
--   model:run_with_cache(input, {names_filter = name | {names} | function(name), remove_batch_dim,
--       return_type, fwd_hooks (for this call), ...}) -> out, cache   (out is {logits=, loss=} for return_type "both")
--   model:run_with_cache(input, {incl_bwd = true, return_type = "loss" | grad_output = fn, bwd_hooks})
--       also caches each activation's gradient as name .. "_grad" (fn(logits) -> value, d/dlogits)
--   model:run_with_hooks(input, {fwd_hooks = {{name_or_filter, fn}, ...}, return_type, ...})
--       bwd_hooks = {{name_or_filter, fn(grad, hook)}} with a scalar (as incl_bwd) runs the
--       backward pass too
--       fn(act, hook): act may be edited in place, or fn returns a tensor of act's shape to replace
--       it; hook.name, hook:layer(), hook.ctx. act is valid during the call; a tensor kept from
--       it becomes a copy once the call returns.
--   model:add_hook(name_or_filter, fn, {is_permanent, prepend, level}), model:add_perma_hook(name, fn),
--   model:reset_hooks({including_permanent, level, clear_contexts}) (permanent hooks stay unless
--   including_permanent), model:remove_all_hook_fns(...) the same,
--   model:hooks(list, function() ... end)  (hooks live for the function's run)  or
--   local h <close> = model:hooks(list)   (until h goes out of scope, or h:remove()); each such
--   context is one level deeper (model.context_level); reset_hooks{level = n} removes that level's
--   model:set_use_attn_result(bool) (and TransformerLens's other set_use_* switches: the ones the
--   core lacks raise when switched on)
--   model:generate(input, {max_new_tokens, temperature, top_k, top_p, freq_penalty, do_sample, seed,
--       stop_at_eos, eos_token_id, use_past_kv_cache, prepend_bos, padding_side, return_type, verbose,
--       fwd_hooks})   (C loop with a key/value cache: hooks see the new position only; README)
--   mi.utils.sample_logits(final_logits [B,V], {top_k, top_p, temperature, freq_penalty, tokens, seed})
-- Every options table rejects keys it does not know, naming the key and the function.
--   model:to_tokens, to_str_tokens, to_string, to_single_token, tokens_to_residual_directions
--   model:all_composition_scores("Q" | "K" | "V") -> [L, H, L, H]
local M = {}

local mi

-- ---------------------------------------------------------------- config
local CONFIG_METHODS = {}
local CONFIG_MT = {__name = "miwb.HookedTransformerConfig", __index = CONFIG_METHODS}

-- TransformerLens's cfg.is_layer_norm_activation(): an activation with a LayerNorm inside (SoLU-LN)
function CONFIG_METHODS:is_layer_norm_activation()
  return type(self.act_fn) == "string" and self.act_fn:sub(-3) == "_ln"
end

-- TransformerLens 2.12's HookedTransformerConfig fields that are not the core's numeric ones
-- (core/config.h, finished by mi._config_finish): their defaults, and for the features miwb does
-- not have yet, the only value accepted (the default). Any other name is an error, as Python's
-- dataclass raises for an unknown keyword.
local LUA_FIELDS = {
  model_name = "custom", original_architecture = false, tokenizer_name = false, default_prepend_bos = true,
  tokenizer_prepends_bos = false, init_weights = true, from_checkpoint = false, checkpoint_index = false,
  checkpoint_label_type = false, checkpoint_value = false, n_params = false, trust_remote_code = false,
  device = "cpu",
}
local ONLY = {  -- field = the one value miwb supports (TransformerLens's default)
  init_mode = "gpt2", attention_dir = "causal", n_devices = 1, dtype = "float32", load_in_4bit = false,
  use_split_qkv_input = false, use_hook_mlp_in = false, use_attn_in = false, use_local_attn = false,
  ungroup_grouped_query_attention = false, window_size = false, attn_types = false,
  scale_attn_by_inverse_layer_idx = false, use_hook_tokens = false,
  post_embedding_ln = false, num_experts = false,
  experts_per_token = false, relative_attention_max_distance = false, relative_attention_num_buckets = false,
  decoder_start_token_id = false, tie_word_embeddings = false, use_normalization_before_and_after = false,
  attn_scores_soft_cap = -1.0, output_logits_soft_cap = -1.0, use_NTK_by_parts_rope = false,
  NTK_by_parts_low_freq_factor = 1.0, NTK_by_parts_high_freq_factor = 4.0, NTK_by_parts_factor = 8.0,
}
local BOOL_FIELDS = {default_prepend_bos = true, init_weights = true, from_checkpoint = true,
                     trust_remote_code = true}
-- ONLY fields that are booleans in TransformerLens (False, not None, when unset): the config
-- holds false for them, as TL's does (cfg.load_in_4bit == false)
local BOOL_ONLY = {use_split_qkv_input = true, use_hook_mlp_in = true, use_attn_in = true, use_local_attn = true,
                   ungroup_grouped_query_attention = true, scale_attn_by_inverse_layer_idx = true,
                   use_hook_tokens = true, post_embedding_ln = true, load_in_4bit = true,
                   tie_word_embeddings = true, use_normalization_before_and_after = true,
                   use_NTK_by_parts_rope = true}

local function is_none(v) return v == false or v == "None" or (mi.json and v == mi.json.null) end

local function same(v, want)
  if want == false then return is_none(v) or v == "False" or v == "false" end
  if type(want) == "number" then return tonumber(v) == want end
  if want == "float32" then return v == "float32" or v == "torch.float32" end
  return v == want
end

function M.HookedTransformerConfig(t)
  if type(t) ~= "table" then error("HookedTransformerConfig: expected a table of fields", 2) end
  if getmetatable(t) == CONFIG_MT then return t end
  local fin, core_names = mi._config_finish(t)   -- raises naming the field
  local is_core = {}
  for _, k in ipairs(core_names) do is_core[k] = true end
  local c = {}
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      error("HookedTransformerConfig: field names are strings, got " .. tostring(k), 2)
    elseif is_core[k] then -- the finished value below
    elseif ONLY[k] ~= nil then
      if not same(v, ONLY[k]) then
        error(("HookedTransformerConfig: %s = %s is not supported by miwb (only %s)"):format(
          k, tostring(v), ONLY[k] == false and "None/false" or tostring(ONLY[k])), 2)
      end
    elseif LUA_FIELDS[k] ~= nil then
      if is_none(v) and not BOOL_FIELDS[k] then v = nil end
      if BOOL_FIELDS[k] and v ~= nil then
        if v == "True" or v == "true" then v = true elseif v == "False" or v == "false" then v = false end
        if type(v) ~= "boolean" then
          error("HookedTransformerConfig: " .. k .. " must be a boolean, got " .. tostring(v), 2)
        end
      end
      c[k] = v
    else
      error("HookedTransformerConfig: unknown field '" .. k .. "' (TransformerLens's HookedTransformerConfig has no such field)", 2)
    end
  end
  for k, v in pairs(LUA_FIELDS) do
    if c[k] == nil and v ~= false then c[k] = v end
  end
  for k, v in pairs(ONLY) do if v ~= false or BOOL_ONLY[k] then c[k] = v end end
  for k, v in pairs(fin) do c[k] = v end
  -- TransformerLens: attention and MLP weight counts (no biases, no LayerNorm)
  c.n_params = c.n_layers * (c.d_model * c.d_head * c.n_heads * 4)
  if not c.attn_only then c.n_params = c.n_params + c.n_layers * c.d_model * c.d_mlp * 2 end
  return setmetatable(c, CONFIG_MT)
end

-- ---------------------------------------------------------------- hook points
local HookPoint = {}
HookPoint.__index = HookPoint
HookPoint.__name = "miwb.HookPoint"
function HookPoint:layer()
  local l = self.name:match("^blocks%.(%d+)%.")
  if not l then error("hook " .. self.name .. ": not inside a block, it has no layer", 2) end
  return tonumber(l)
end
HookPoint.__tostring = function(h) return "HookPoint(" .. h.name .. ")" end

-- ---------------------------------------------------------------- the model
local Model = {}
local MODEL_MT = {__name = "miwb.HookedTransformer"}

local WEIGHTS = {W_E = true, W_pos = true, W_Q = true, W_K = true, W_V = true, W_O = true, b_Q = true,
                 b_K = true, b_V = true, b_O = true, W_in = true, b_in = true, W_out = true, b_out = true,
                 W_U = true, b_U = true}

function MODEL_MT.__index(self, k)
  local m = Model[k]
  if m ~= nil then return m end
  if WEIGHTS[k] then
    local w = rawget(self, "_core"):weight(k)
    local c = rawget(self, "cfg")
    if w and c.n_key_value_heads and (k == "W_K" or k == "W_V" or k == "b_K" or k == "b_V") then
      -- TransformerLens's W_K / W_V of grouped-query attention: each key/value head repeated for the
      -- n_heads / n_key_value_heads query heads that read it (a copy; _W_K is the stored weight)
      local s = w:shape()
      local G, per = s[2], c.n_heads // s[2]
      local big = {s[1], G, per}
      for i = 3, #s do big[#big + 1] = s[i] end
      local flat = {s[1], c.n_heads}
      for i = 3, #s do flat[#flat + 1] = s[i] end
      return w:unsqueeze(2):expand(table.unpack(big)):reshape(table.unpack(flat))
    end
    return w
  end
  if k == "_W_K" or k == "_W_V" or k == "_b_K" or k == "_b_V" then return rawget(self, "_core"):weight(k:sub(2)) end
  if k == "QK" then
    return mi.FactoredMatrix(self.W_Q, self.W_K:transpose(-2, -1))
  elseif k == "OV" then
    return mi.FactoredMatrix(self.W_V, self.W_O)
  end
  return nil
end
function MODEL_MT.__call(self, input, opts) return self:forward(input, opts) end
function MODEL_MT.__tostring(self)
  local c = self.cfg
  return string.format("HookedTransformer(%s: %d layers, d_model %d, %d heads, d_vocab %d%s)", c.model_name,
                       c.n_layers, c.d_model, c.n_heads, c.d_vocab, c.attn_only and ", attention only" or "")
end

-- the table the C constructors read (lua/lconfig.c): the finished config, Python's None as false
function M.core_config(cfg)
  local t = {}
  for k, v in pairs(cfg) do t[k] = v end
  if cfg.normalization_type == nil then t.normalization_type = false end
  return t
end

-- tok: a tokenizer object, or a string: a path for mi.load_tokenizer, or a name (cfg.tokenizer_name:
-- "gpt2", "EleutherAI/gpt-neox-20b") looked up in the folders of models fetched with `miwb pull`
local function resolve_tokenizer(tok)
  if tok == nil then return nil end
  if type(tok) ~= "string" then
    local ok, enc = pcall(function() return tok.encode end)
    if ok and type(enc) == "function" then return tok end
    return nil, "expected a tokenizer (mi.load_tokenizer), a path or a model name, got " .. mi.utils.typename(tok)
  end
  if not mi.load_tokenizer then return nil, "mi.load_tokenizer is not available in this build" end
  local tries = {tok}
  local P = mi.pretrained
  if P and P.model_dir then
    tries[#tries + 1] = (P.model_dir(tok))
    for _, m in ipairs(P.MODELS or {}) do
      local uses = m.config and m.config.tokenizer_name == tok
      for _, f in ipairs(m.files or {}) do if f.repo == tok then uses = true end end
      if uses then tries[#tries + 1] = (P.model_dir(m.name)) end
    end
  end
  local first_err
  for _, path in ipairs(tries) do
    local ok, t, err = pcall(mi.load_tokenizer, path)
    if ok and t then return t end
    first_err = first_err or (ok and err or t)
  end
  return nil, "tokenizer '" .. tok .. "' not found (" .. tostring(first_err) .. ")"
end

-- the C model and the hook names it has (_names, in firing order, and _has as a set); _all_names:
-- every hook point some miwb model has, for the message when this one lacks it
-- lists a spliced component's hook points (subs) right after its point
local function list_splice(self, point, subs)
  local names = {}
  for _, n in ipairs(self._names) do
    names[#names + 1] = n
    if n == point then
      for _, sub in ipairs(subs) do names[#names + 1] = sub; self._all_names[sub] = true; self._has[sub] = true end
    end
  end
  self._names = names
end

local function set_core(self, core)
  self._core = core
  self._names = core:hook_names()
  self._has, self._all_names = {}, {}
  for _, n in ipairs(self._names) do self._has[n] = true end
  for _, n in ipairs(core:hook_names(true)) do self._all_names[n] = true end
  for point, sp in pairs(self._splices or {}) do list_splice(self, point, sp.subs) end
end

function M.HookedTransformer(cfg, opts)
  mi.utils.check_opts("HookedTransformer", opts, {"tokenizer"})
  opts = opts or {}
  cfg = M.HookedTransformerConfig(cfg)
  local tok, tok_err
  if opts.tokenizer ~= nil then
    tok, tok_err = resolve_tokenizer(opts.tokenizer)
    if not tok then error("HookedTransformer: tokenizer: " .. tostring(tok_err), 2) end
  elseif cfg.tokenizer_name ~= nil then
    -- a name that cannot be found locally leaves the model without a tokenizer: token tensors
    -- still work, and model.tokenizer_error says why
    tok, tok_err = resolve_tokenizer(cfg.tokenizer_name)
  end
  if cfg.d_vocab == -1 then
    if not tok then error("HookedTransformerConfig: d_vocab is required when there is no tokenizer", 2) end
    cfg.d_vocab = tok:vocab_size()
    if cfg.d_vocab_out == -1 then cfg.d_vocab_out = cfg.d_vocab end
  end
  local core = mi.model_new(M.core_config(cfg))
  local self = {cfg = cfg, tokenizer = tok, tokenizer_error = tok_err, _core = core, _persistent = {},
                context_level = 0}
  set_core(self, core)
  return setmetatable(self, MODEL_MT)
end

function Model:set_tokenizer(tok)
  local t, err = resolve_tokenizer(tok)
  if not t then error("set_tokenizer: " .. tostring(err), 2) end
  self.tokenizer = t
  self.tokenizer_error = nil
end

function Model:hook_names() local t = {} for i, n in ipairs(self._names) do t[i] = n end return t end

-- TransformerLens's set_use_attn_result: whether blocks.L.attn.hook_result (each head's output
-- [batch, pos, head, d_model]) is computed. The C model is rebuilt with the same parameters
-- (tensors taken earlier from model.W_* keep the old weights' values but no longer alias them).
function Model:set_use_attn_result(on)
  if type(on) ~= "boolean" then error("set_use_attn_result: expected true or false, got " .. tostring(on), 2) end
  if self.cfg.use_attn_result == on then return end
  local old = self._core
  local t = M.core_config(self.cfg)
  t.use_attn_result = on
  local core = mi.model_new(t)
  for _, n in ipairs(old:param_names()) do core:set_param(n, old:param(n)) end
  self.cfg.use_attn_result = on
  set_core(self, core)
end

-- TransformerLens's other switches; miwb's core has none of these inputs split out, so switching
-- one on raises (off is what the model does already)
for _, name in ipairs{"use_split_qkv_input", "use_hook_mlp_in", "use_attn_in", "ungroup_grouped_query_attention"} do
  local setter = "set_" .. name
  Model[setter] = function(self, on)
    if type(on) ~= "boolean" then error(setter .. ": expected true or false, got " .. tostring(on), 2) end
    if on then error(setter .. ": miwb's models do not support " .. name .. " (only set_use_attn_result)", 2) end
  end
end

-- ---------------------------------------------------------------- weights
function Model:state_dict()
  local sd = {}
  for _, n in ipairs(self._core:param_names()) do sd[n] = self._core:param(n) end
  return sd
end
function Model:state_dict_names() return self._core:param_names() end

local function shape_str(s) return "[" .. table.concat(s, ",") .. "]" end

-- copies every tensor of sd into the model. Unknown names, shapes that differ and (when strict,
-- the default) parameters the table lacks are errors naming them; nothing is copied then.
-- blocks.L.attn.mask / IGNORE buffers are ignored.
function Model:load_state_dict(sd, opts)
  if type(sd) ~= "table" then
    error("load_state_dict: expected a table {name = tensor}, got " .. mi.utils.typename(sd), 2)
  end
  mi.utils.check_opts("load_state_dict", opts, {"strict"})
  local strict = not (opts and opts.strict == false)
  local core = self._core
  local problems, seen = {}, {}
  local keys = {}
  for k in pairs(sd) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, name in ipairs(keys) do
    local t = sd[name]
    local ok, p = pcall(core.param, core, name)
    if not ok then
      if tostring(p):find("not a parameter", 1, true) or tostring(p):find("out of range", 1, true) then
        problems[#problems + 1] = "unexpected key '" .. name .. "'"
      else
        problems[#problems + 1] = tostring(p)
      end
    elseif p ~= nil then
      if not mi.is_tensor(t) then
        problems[#problems + 1] = "'" .. name .. "' is a " .. type(t) .. ", not a tensor"
      else
        local a, b = p:shape(), t:shape()
        if shape_str(a) ~= shape_str(b) then
          problems[#problems + 1] = string.format("'%s' has shape %s, the model expects %s", name, shape_str(b), shape_str(a))
        end
      end
      seen[name] = true
    end
  end
  if strict then
    local missing = {}
    for _, n in ipairs(core:param_names()) do if not seen[n] then missing[#missing + 1] = n end end
    if #missing > 0 then problems[#problems + 1] = "missing keys: " .. table.concat(missing, ", ") end
  end
  if #problems > 0 then error("load_state_dict: " .. table.concat(problems, "; "), 2) end
  for _, name in ipairs(keys) do if seen[name] then core:set_param(name, sd[name]) end end
  return self
end

function Model:accumulated_bias(layer, mlp_input, include_mlp_biases)
  if math.type(layer) ~= "integer" or layer < 0 or layer > self.cfg.n_layers then
    error(("accumulated_bias: layer must be an integer in [0, %d], got %s"):format(self.cfg.n_layers,
          math.type(layer) and tostring(layer) or mi.utils.typename(layer)), 2)
  end
  local b = mi.zeros(self.cfg.d_model)
  local bO = self.b_O
  for l = 0, layer - 1 do
    b = b + bO[l]
    if include_mlp_biases and not self.cfg.attn_only then b = b + self.b_out[l] end
  end
  if mlp_input then
    if layer >= self.cfg.n_layers then error("accumulated_bias: mlp_input needs layer < n_layers", 2) end
    b = b + bO[layer]
  end
  return b
end

-- W_U columns of tokens: a number or single-token string -> [d]; int64 [...] -> [..., d]
function Model:tokens_to_residual_directions(tokens)
  if type(tokens) == "string" then tokens = self:to_single_token(tokens) end
  local W_U = self.W_U
  if type(tokens) == "number" then return W_U:select(1, tokens) end
  if type(tokens) == "table" and not mi.is_tensor(tokens) then tokens = mi.tensor(tokens, "int64") end
  if not mi.is_tensor(tokens) then
    error("tokens_to_residual_directions: expected a token id, a single-token string, a list or an int64 tensor, got " ..
          mi.utils.typename(tokens), 2)
  end
  if tokens:dim() == 0 then return W_U:select(1, tokens:item()) end
  local shape = tokens:shape()
  local dirs = W_U:index_select(1, tokens:reshape(-1)):t()   -- [n, d]
  shape[#shape + 1] = self.cfg.d_model
  return dirs:contiguous():view(shape)
end

-- composition scores between every pair of heads, [L, H, L, H]: ||W_A W_B||_F / (||W_A||_F ||W_B||_F)
-- with W_A = OV of the first head and W_B = QK (mode "Q"), QK^T ("K") or OV ("V") of the second;
-- zero unless the second head's layer is later. Computed from the factors without forming any
-- d x d product: ||A_l (B_l A_r) B_r||_F^2 = tr((A_l^T A_l) W (B_r B_r^T) W^T), W = B_l A_r [dh,dh].
function Model:all_composition_scores(mode)
  local c = self.cfg
  local L, H = c.n_layers, c.n_heads
  local A_l, B_l = self.W_V, self.W_O                         -- OV = W_V @ W_O
  local A_r, B_r
  if mode == "Q" then A_r, B_r = self.W_Q, self.W_K:transpose(-2, -1)
  elseif mode == "K" then A_r, B_r = self.W_K, self.W_Q:transpose(-2, -1)
  elseif mode == "V" then A_r, B_r = self.W_V, self.W_O
  else error("all_composition_scores: mode must be 'Q', 'K' or 'V', got " .. tostring(mode), 2) end
  local GA = A_l:transpose(-2, -1):matmul(A_l)                -- [L,H,dh,dh]
  local GB = B_r:matmul(B_r:transpose(-2, -1))                -- [L,H,dh,dh]
  -- Frobenius norms of the full matrices: ||A B||_F^2 = tr(G_A (B B^T)) = sum(G_A * (B B^T))
  local GBl = B_l:matmul(B_l:transpose(-2, -1))
  local nl = (GA * GBl):sum({-2, -1}):sqrt()                  -- [L,H]
  local GAr = A_r:transpose(-2, -1):matmul(A_r)
  local nr = (GAr * GB):sum({-2, -1}):sqrt()                  -- [L,H]
  local scores = mi.zeros(L, H, L, H)
  for l1 = 0, L - 2 do
    local Bl = B_l[l1]:view(H, 1, 1, c.d_head, c.d_model)     -- [H,1,1,dh,d]
    local Ar = A_r:narrow(0, l1 + 1, L - l1 - 1)               -- [L',H,d,dh]
    local W = Bl:matmul(Ar:unsqueeze(0))                       -- [H,L',H,dh,dh]
    local T = GA[l1]:view(H, 1, 1, c.d_head, c.d_head):matmul(W):matmul(GB:narrow(0, l1 + 1, L - l1 - 1):unsqueeze(0))
    local num = (T * W):sum({-2, -1}):clamp(0, math.huge):sqrt()       -- [H,L',H]
    local den = nl[l1]:view(H, 1, 1) * nr:narrow(0, l1 + 1, L - l1 - 1):unsqueeze(0)
    scores[l1][{{}, {l1 + 1, L}, {}}] = num / den
  end
  return scores
end

-- ---------------------------------------------------------------- tokens
local function need_tok(self, what)
  local t = self.tokenizer
  if not t then
    error(what .. ": this model has no tokenizer" .. (self.tokenizer_error and (" (" .. tostring(self.tokenizer_error) .. ")") or "") ..
          "; give one with HookedTransformer(cfg, {tokenizer = ...}) or model:set_tokenizer(path)", 3)
  end
  return t
end

local function bos_id(self, tok)
  local id = tok:bos_token_id() or tok:eos_token_id()
  if not id then error("to_tokens: the tokenizer has no BOS token", 3) end
  return id
end

local TOKEN_OPTS = {"prepend_bos", "padding_side", "truncate", "move_to_device"}

-- string -> int64 [1, P]; list of strings -> int64 [B, P] padded, plus the attention mask [B, P].
-- A text longer than n_ctx tokens is cut to n_ctx (truncate = false keeps it), with a warning.
function Model:to_tokens(input, opts)
  mi.utils.check_opts("to_tokens", opts, TOKEN_OPTS)
  opts = opts or {}
  local tok = need_tok(self, "to_tokens")
  local prepend = opts.prepend_bos
  if prepend == nil then prepend = self.cfg.default_prepend_bos end
  local side = opts.padding_side or "right"
  local truncate = opts.truncate ~= false
  local list = type(input) == "table" and input or {input}
  local rows, maxlen = {}, 0
  for i, s in ipairs(list) do
    if type(s) ~= "string" then error("to_tokens: expected a string or a list of strings, item " .. i .. " is a " .. type(s), 2) end
    -- TransformerLens's prepend_bos decides, not the tokenizer's post-processor
    local ids = tok:encode_list(s, {add_special_tokens = false})
    if prepend then table.insert(ids, 1, bos_id(self, tok)) end
    if truncate and #ids > self.cfg.n_ctx then
      mi.utils.warn(("to_tokens: %s is %d tokens; cut to the model's n_ctx = %d (truncate = false keeps it whole)"):format(
        type(input) == "table" and ("text " .. i) or "the text", #ids, self.cfg.n_ctx))
      local cut = {}
      for j = 1, self.cfg.n_ctx do cut[j] = ids[j] end
      ids = cut
    end
    rows[i] = ids
    if #ids > maxlen then maxlen = #ids end
  end
  if #rows == 0 then error("to_tokens: empty list", 2) end
  local pad = tok:pad_token_id() or tok:eos_token_id() or 0
  local padded, mask, lengths, any_pad = {}, {}, {}, false
  for i, ids in ipairs(rows) do
    local r, m = {}, {}
    local n = #ids
    lengths[i] = n
    if n < maxlen then any_pad = true end
    for p = 1, maxlen do
      local j = side == "left" and p - (maxlen - n) or p
      if j >= 1 and j <= n then r[p], m[p] = ids[j], 1 else r[p], m[p] = pad, 0 end
    end
    padded[i], mask[i] = r, m
  end
  local tokens = mi.tensor(padded, "int64")
  if type(input) == "table" then return tokens, mi.tensor(mask, "int64"), any_pad end
  return tokens
end

local function id_list(t)
  if type(t) == "number" then return {math.tointeger(t) or t} end
  if type(t) == "table" then return t end
  return t:reshape(-1):totable()
end

function Model:to_str_tokens(input, opts)
  mi.utils.check_opts("to_str_tokens", opts, TOKEN_OPTS)
  local tok = need_tok(self, "to_str_tokens")
  if type(input) == "string" then return tok:tokens(self:to_tokens(input, opts)[0]) end
  if type(input) == "number" then return tok:tokens({input}) end
  if type(input) == "table" and type(input[1]) == "string" then
    local out = {}
    for i, s in ipairs(input) do out[i] = tok:tokens(self:to_tokens(s, opts)[0]) end
    return out
  end
  if type(input) == "table" then return tok:tokens(input) end
  if input:dim() == 2 then
    if input:size(0) == 1 then return tok:tokens(input[0]) end
    local out = {}
    for b = 0, input:size(0) - 1 do out[b + 1] = tok:tokens(input[b]) end
    return out
  end
  if input:dim() == 0 then return tok:tokens({input:item()}) end
  return tok:tokens(input)
end

function Model:to_string(tokens)
  local tok = need_tok(self, "to_string")
  if mi.is_tensor(tokens) and tokens:dim() == 2 then
    local out = {}
    for b = 0, tokens:size(0) - 1 do out[b + 1] = tok:decode(tokens[b]) end
    return out
  end
  return tok:decode(id_list(tokens))
end

function Model:to_single_token(s)
  local t = self:to_tokens(s, {prepend_bos = false})
  if t:size(1) ~= 1 then
    error(string.format("to_single_token: %q is %d tokens, not one", s, t:size(1)), 2)
  end
  return t[{0, 0}]:item()
end

-- ---------------------------------------------------------------- hooks
-- hps: the hook points of a persistent hook by name, so that hook.ctx lasts across calls
local function add_entry(hooks, name, fn, hps)
  local list = hooks[name]
  if not list then list = {}; hooks[name] = list end
  local hp = hps and hps[name]
  if not hp then
    hp = setmetatable({name = name, ctx = {}}, HookPoint)
    if hps then hps[name] = hp end
  end
  list[#list + 1] = {fn, hp}
end

-- {{name_or_filter, fn}, ...} lists -> {name = {{fn, hookpoint}, ...}} over this model's names
function Model:_hook_table(lists, hooks)
  hooks = hooks or {}
  for _, list in ipairs(lists) do
    for i, h in ipairs(list) do
      if type(h) ~= "table" then error("fwd_hooks: entry " .. i .. " must be {name_or_filter, fn}", 4) end
      local key, fn = h[1], h[2]
      if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
        error("fwd_hooks: entry " .. i .. ": the hook must be a function, got " .. type(fn), 4)
      end
      if type(key) == "string" then
        if not self._has[key] then
          local why = self._all_names[key] and
            " (this model's configuration has no such activation: attention-only, use_attn_result, ...)" or ""
          error("fwd_hooks: '" .. key .. "' is not a hook point of this model" .. why ..
                "; model:hook_names() lists them", 4)
        end
        add_entry(hooks, key, fn, h._hps)
      elseif type(key) == "function" then
        for _, n in ipairs(self._names) do if key(n) then add_entry(hooks, n, fn, h._hps) end end
      else
        error("fwd_hooks: entry " .. i .. ": name must be a string or a function, got " .. type(key), 4)
      end
    end
  end
  return hooks
end

-- model:add_hook(name_or_filter, fn, {is_permanent = false, prepend = false, level = nil, dir = "fwd"})
-- as TransformerLens's add_hook: a prepended hook runs before the hooks already on that hook
-- point; a permanent one survives reset_hooks() (not reset_hooks{including_permanent = true}).
function Model:add_hook(name, fn, opts)
  mi.utils.check_opts("add_hook", opts, {"is_permanent", "prepend", "level", "dir"})
  opts = opts or {}
  if opts.dir ~= nil and opts.dir ~= "fwd" then
    error("add_hook: dir '" .. tostring(opts.dir) .. "': miwb has forward hooks only", 2)
  end
  self:_hook_table({{{name, fn}}})   -- validates
  local e = {name, fn, _hps = {}, is_permanent = opts.is_permanent == true, level = opts.level}
  local list = self._persistent
  if opts.prepend then table.insert(list, 1, e) else list[#list + 1] = e end
  return self
end

function Model:add_perma_hook(name, fn)
  return self:add_hook(name, fn, {is_permanent = true})
end

-- removes the hooks added with add_hook / hooks(); permanent ones stay unless including_permanent;
-- with level, only the hooks of that context level go. clear_contexts empties each hook's ctx.
function Model:reset_hooks(opts)
  mi.utils.check_opts("reset_hooks", opts, {"including_permanent", "level", "clear_contexts", "direction"})
  opts = opts or {}
  if opts.direction ~= nil and opts.direction ~= "fwd" and opts.direction ~= "both" then
    error("reset_hooks: direction '" .. tostring(opts.direction) .. "': miwb has forward hooks only", 2)
  end
  local keep = {}
  for _, e in ipairs(self._persistent) do
    local stays = (e.is_permanent and not opts.including_permanent) or (opts.level ~= nil and e.level ~= opts.level)
    if stays then
      keep[#keep + 1] = e
    end
    if opts.clear_contexts ~= false and not stays then
      for _, hp in pairs(e._hps) do hp.ctx = {} end
    end
  end
  self._persistent = keep
  return self
end
Model.remove_all_hook_fns = Model.reset_hooks

-- ---------------------------------------------------------------- spliced components
-- A Lua component spliced in at a hook point (model:add_sae, lua/miwb/sae.lua) brings hook
-- points of its own, "<point>.<sub>", listed, cached and hooked like the model's. It runs as
-- fn(act, hook) at <point> before any other hook there (reset_hooks leaves it), and hands each
-- of its activations to model:_splice_fire(name, act), which caches it and runs the hooks on it.
function Model:_add_splice(point, subs, fn)
  if not self._has[point] then error("'" .. point .. "' is not a hook point of this model", 3) end
  if self._splices and self._splices[point] then error("a component is already spliced in at " .. point, 3) end
  self._splices = self._splices or {}
  self._splices[point] = {subs = subs, fn = fn}
  list_splice(self, point, subs)
end

function Model:_remove_splice(point)
  local sp = self._splices and self._splices[point]
  if not sp then return end
  local drop = {}
  for _, sub in ipairs(sp.subs) do drop[sub] = true; self._all_names[sub] = nil; self._has[sub] = nil end
  local names = {}
  for _, n in ipairs(self._names) do if not drop[n] then names[#names + 1] = n end end
  self._names = names
  self._splices[point] = nil
  if not next(self._splices) then self._splices = nil end
end

-- SAELens's HookedSAETransformer: model:add_sae(sae, {use_error_term = true}) (lua/miwb/sae.lua)
function Model:add_sae(sae, opts) return mi.sae._add(self, sae, opts) end
function Model:saes()
  local t = {}
  for i, e in ipairs(self._saes or {}) do t[i] = e.sae end
  return t
end
function Model:reset_saes()
  for _, e in ipairs(self._saes or {}) do self:_remove_splice(e.point) end
  self._saes = nil
  return self
end

function Model:_splice_fire(name, act)
  local run = self._splice_run
  if not run then return act end
  if run.cache_names[name] then run.cache[name] = act:clone() end
  for _, e in ipairs(run.hooks[name] or {}) do
    local r = e[1](act, e[2])
    if r ~= nil then
      if not mi.is_tensor(r) or table.concat(r:shape(), ",") ~= table.concat(act:shape(), ",") then
        error("hook on " .. name .. " returned " .. (mi.is_tensor(r) and ("[" .. table.concat(r:shape(), ",") .. "]")
              or ("a " .. type(r))) .. ", expected a tensor [" .. table.concat(act:shape(), ",") .. "]", 2)
      end
      act = r
    end
  end
  return act
end

-- model:hooks(list, fn): runs fn() with the hooks added, removes them after (also on error) and
-- returns fn's results. model:hooks(list): adds them and returns a handle; h:remove() or leaving
-- the scope of `local h <close> = model:hooks(list)` removes them. Each context is one level
-- deeper (TransformerLens's context_level); leaving it removes that level's hooks.
function Model:hooks(list, fn, opts)
  if type(fn) == "table" and opts == nil then fn, opts = nil, fn end
  mi.utils.check_opts("hooks", opts, {"reset_hooks_end", "clear_contexts"})
  if type(list) ~= "table" then error("hooks: expected a list of {name, fn} pairs, got " .. mi.utils.typename(list), 2) end
  if fn ~= nil and type(fn) ~= "function" then error("hooks: the body must be a function, got " .. mi.utils.typename(fn), 2) end
  opts = opts or {}
  self:_hook_table({list})
  self.context_level = self.context_level + 1
  local level = self.context_level
  for _, h in ipairs(list) do
    self._persistent[#self._persistent + 1] = {h[1], h[2], _hps = {}, level = level}
  end
  local removed = false
  local function remove()
    if removed then return end
    removed = true
    if opts.reset_hooks_end ~= false then
      self:reset_hooks({level = level, clear_contexts = opts.clear_contexts == true})
    end
    self.context_level = level - 1
  end
  if fn then
    local res = table.pack(xpcall(fn, debug.traceback))
    remove()
    if not res[1] then error(res[2], 0) end
    return table.unpack(res, 2, res.n)
  end
  return setmetatable({remove = remove}, {__close = function() remove() end, __name = "miwb.HookHandle"})
end

-- ---------------------------------------------------------------- forward
local function return_type(opts)
  local rt = opts.return_type
  if rt == nil then return "logits" end
  if rt == false or rt == "none" or rt == "None" then return "none" end
  if rt ~= "logits" and rt ~= "loss" and rt ~= "both" then
    error("forward: return_type must be 'logits', 'loss', 'both' or 'none', got " .. tostring(rt), 3)
  end
  return rt
end

-- input -> tokens [B,P] int64, attention mask or nil, was a string (or list of strings)
function Model:_input(input, opts)
  opts = {prepend_bos = opts.prepend_bos, padding_side = opts.padding_side}
  if type(input) == "string" then
    return self:to_tokens(input, opts), nil, true
  elseif type(input) == "table" and type(input[1]) == "string" then
    local t, mask, padded = self:to_tokens(input, opts)
    return t, padded and mask or nil, true
  elseif type(input) == "table" then
    return mi.tensor({input}, "int64"), nil, false
  elseif mi.is_tensor(input) then
    if input:dtype() ~= "int64" then
      error("forward: tokens must be int64 (got " .. input:dtype() .. "); a float input needs start_at_layer", 3)
    end
    if input:dim() == 1 then input = input:unsqueeze(0) end
    return input, nil, false
  end
  error("forward: input must be a string, a list of strings or a tensor of tokens, got " .. type(input), 3)
end

local FORWARD_OPTS = {"return_type", "loss_per_token", "prepend_bos", "padding_side", "attention_mask",
                      "start_at_layer", "stop_at_layer", "tokens", "fwd_hooks", "last_only"}
local function with(list, ...)
  local t = {table.unpack(list)}
  for _, k in ipairs{...} do t[#t + 1] = k end
  return t
end
local HOOK_OPTS = with(FORWARD_OPTS, "bwd_hooks", "grad_output", "reset_hooks_end", "clear_contexts")
local CACHE_OPTS = with(FORWARD_OPTS, "names_filter", "remove_batch_dim", "incl_bwd", "grad_output", "bwd_hooks",
                        "reset_hooks_end", "clear_contexts")

-- o.hooks for a core call (forward, generate): the splices' hooks, the permanent ones, then
-- fwd_hooks; the hooks and cache entries of spliced hook points go to the splices, not to the
-- core. Returns what must be closed when the call ends (nil without splices).
function Model:_core_hooks(o, fwd_hooks)
  local lists = {self._persistent}
  if self._splices then
    local sp = {}
    for point, s in pairs(self._splices) do sp[#sp + 1] = {point, s.fn} end
    table.insert(lists, 1, sp)
  end
  if fwd_hooks then lists[#lists + 1] = fwd_hooks end
  local hooks = self:_hook_table(lists)
  if next(hooks) then o.hooks = hooks end
  if not self._splices then return nil end
  local run = {hooks = {}, cache_names = {}, cache = o.cache}
  for _, s in pairs(self._splices) do
    for _, sub in ipairs(s.subs) do
      if o.hooks and o.hooks[sub] then run.hooks[sub], o.hooks[sub] = o.hooks[sub], nil end
      if o.cache_names and o.cache_names[sub] then run.cache_names[sub], o.cache_names[sub] = true, nil end
    end
  end
  self._splice_run = run
  return setmetatable({}, {__close = function() self._splice_run = nil end})
end

-- the whole call: extra = {cache_names=, cache=} for run_with_cache; extra.loss_slice = {from, to}:
-- only those predicted positions count in the loss (and are unembedded without logits)
function Model:_run(input, opts, extra)
  opts = opts or {}
  local rt = return_type(opts)
  local o = {}
  local mask
  if opts.start_at_layer ~= nil then
    if not mi.is_tensor(input) or input:dtype() ~= "float32" then
      error("forward: with start_at_layer the input is a float residual stream [batch, pos, d_model]", 3)
    end
    o.residual = input
    o.start_at_layer = opts.start_at_layer
    if opts.tokens ~= nil then o.tokens = self:_input(opts.tokens, opts) end
    if o.start_at_layer == 0 then o.start_at_layer = nil end
  else
    o.tokens, mask = self:_input(input, opts)
  end
  o.attention_mask = opts.attention_mask or mask
  if opts.stop_at_layer ~= nil then
    o.stop_at_layer = opts.stop_at_layer
    o.return_residual = true
  end
  o.logits = rt == "logits" or rt == "both"
  o.loss = rt == "loss" or rt == "both"
  if opts.last_only ~= nil and type(opts.last_only) ~= "boolean" then
    error("forward: last_only must be true or false, got " .. tostring(opts.last_only), 3)
  end
  if opts.last_only then
    if rt ~= "logits" then
      error("forward: last_only = true returns logits: it needs return_type = 'logits' (got '" .. rt .. "')", 3)
    end
    if opts.stop_at_layer ~= nil then error("forward: last_only = true returns logits: not with stop_at_layer", 3) end
    o.last_only = true
  end
  if extra then
    o.cache_names, o.cache = extra.cache_names, extra.cache
    if extra.keep then o.keep_activations, o.logits = true, o.logits or extra.logits end
    if extra.loss_slice then o.loss_from, o.loss_to = extra.loss_slice[1], extra.loss_slice[2] end
  end
  local _ <close> = self:_core_hooks(o, opts.fwd_hooks)
  if opts.start_at_layer ~= nil and (o.start_at_layer or 0) == 0 and o.residual then
    error("forward: start_at_layer 0 takes tokens, not a residual stream", 3)
  end
  local r = self._core:forward(o)
  if opts.stop_at_layer ~= nil then return r.residual end
  local loss
  if o.loss then loss = opts.loss_per_token and r.loss_per_token or mi.tensor(r.loss) end
  if rt == "logits" then return r.logits
  elseif rt == "loss" then return loss
  elseif rt == "both" then return r.logits, loss end
  return nil
end

function Model:forward(input, opts)
  mi.utils.check_opts("forward", opts, FORWARD_OPTS)
  return self:_run(input, opts)
end

-- ---------------------------------------------------------------- gradients
-- A forward that keeps its activations, then the backward pass of a scalar: the mean loss
-- (return_type "loss") or grad_output(logits) -> value, d value / d logits. grad_names: hook names
-- whose gradient goes into store as name .. "_grad"; bwd: {name = {{fn, hook}}} backward hooks.
-- Forward hooks that edit activations are not differentiated: the backward pass sees them as the
-- identity.
-- every hook point of the model has one; the SAE hook points spliced in by add_sae have none
function Model:_has_grad(name)
  return not (self._splices and name:find("hook_sae_", 1, true))
end

function Model:_run_bwd(input, opts, fname, store, fwd_names, grad_names, bwd)
  local rt = return_type(opts)
  local go = opts.grad_output
  if go == nil and rt ~= "loss" then
    error(fname .. ": a backward pass needs a scalar: return_type = 'loss' or grad_output = fn(logits) -> value, " ..
          "grad (the '" .. rt .. "' output is not a scalar)", 3)
  end
  if go ~= nil and type(go) ~= "function" and not (getmetatable(go) or {}).__call then
    error(fname .. ": grad_output must be a function of the logits returning the metric and its gradient, got " .. type(go), 3)
  end
  if opts.start_at_layer ~= nil or opts.stop_at_layer ~= nil then
    error(fname .. ": a backward pass runs the whole model (no start_at_layer / stop_at_layer)", 3)
  end
  local fo = {}
  for k, v in pairs(opts) do fo[k] = v end
  fo.grad_output, fo.incl_bwd, fo.bwd_hooks = nil, nil, nil
  if go then fo.return_type = "logits" end
  local a, b = self:_run(input, fo, {cache_names = fwd_names, cache = store, keep = true, logits = go ~= nil})
  local grad_logits, value
  if go then
    local g
    value, g = go(a)
    if type(value) ~= "number" and not (mi.is_tensor(value) and value:numel() == 1) then
      error(fname .. ": grad_output returned a " .. (mi.is_tensor(value) and ("tensor [" .. table.concat(value:shape(), ",") .. "]") or type(value)) ..
            " as the metric, expected a number", 3)
    end
    if not mi.is_tensor(g) or table.concat(g:shape(), ",") ~= table.concat(a:shape(), ",") then
      error(fname .. ": grad_output's gradient is " .. (mi.is_tensor(g) and ("[" .. table.concat(g:shape(), ",") .. "]") or ("a " .. type(g))) ..
            ", expected the logits' shape [" .. table.concat(a:shape(), ",") .. "]", 3)
    end
    grad_logits = g:float():contiguous()
  end
  local gstore = store or {}
  self._core:backward({grad_logits = grad_logits, cache_names = grad_names, cache = gstore, hooks = bwd})
  return a, b, value
end

-- opts.bwd_hooks as the core's {name = {{fn, hook}}}, or nil
function Model:_bwd_table(opts, fname)
  if not opts.bwd_hooks then return nil end
  local bwd = self:_hook_table({opts.bwd_hooks})
  for n in pairs(bwd) do
    if not self:_has_grad(n) then error(fname .. ": '" .. n .. "' has no gradient (bwd_hooks)", 3) end
  end
  return bwd
end

function Model:run_with_hooks(input, opts)
  mi.utils.check_opts("run_with_hooks", opts, HOOK_OPTS)
  opts = opts or {}
  if opts.bwd_hooks then
    local bwd = self:_bwd_table(opts, "run_with_hooks")
    local a, b = self:_run_bwd(input, opts, "run_with_hooks", nil, nil, nil, bwd)
    if return_type(opts) == "both" then return a, b end
    return a
  end
  if opts.reset_hooks_end == false and opts.fwd_hooks then
    for _, h in ipairs(opts.fwd_hooks) do self:add_hook(h[1], h[2]) end
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.fwd_hooks = nil
    return self:_run(input, o)
  end
  return self:_run(input, opts)
end

function Model:run_with_cache(input, opts)
  mi.utils.check_opts("run_with_cache", opts, CACHE_OPTS)
  opts = opts or {}
  local f = opts.names_filter
  local names = {}
  if f == nil then
    for _, n in ipairs(self._names) do names[n] = true end
  elseif type(f) == "string" then
    names[f] = true
  elseif type(f) == "table" then
    for _, n in ipairs(f) do names[n] = true end
  elseif type(f) == "function" then
    for _, n in ipairs(self._names) do if f(n) then names[n] = true end end
  else
    error("run_with_cache: names_filter must be a name, a list of names or a function, got " .. type(f), 2)
  end
  for n in pairs(names) do
    if not self._has[n] then
      error("run_with_cache: '" .. n .. "' is not a hook point of this model; model:hook_names() lists them", 2)
    end
  end
  local store = {}
  local a, b, order
  if opts.incl_bwd then
    -- TransformerLens's incl_bwd: beside each cached activation, its gradient as name .. "_grad"
    local gnames = {}
    order = {}
    for _, n in ipairs(self._names) do order[#order + 1] = n end
    for i = #self._names, 1, -1 do
      local n = self._names[i]
      if names[n] and self:_has_grad(n) then gnames[n] = true; order[#order + 1] = n .. "_grad" end
    end
    a, b = self:_run_bwd(input, opts, "run_with_cache", store, names, gnames, self:_bwd_table(opts, "run_with_cache"))
  else
    if opts.grad_output ~= nil then error("run_with_cache: grad_output needs incl_bwd = true", 2) end
    if opts.bwd_hooks ~= nil then error("run_with_cache: bwd_hooks need incl_bwd = true", 2) end
    a, b = self:_run(input, opts, {cache_names = names, cache = store})
  end
  local cache = mi.cache.new(store, order or self._names, self, true)
  if opts.remove_batch_dim then cache:remove_batch_dim() end
  if return_type(opts) == "both" then return {logits = a, loss = b}, cache end
  return a, cache
end

-- ---------------------------------------------------------------- generation
local GENERATE_OPTS = {"max_new_tokens", "stop_at_eos", "eos_token_id", "do_sample", "top_k", "top_p",
                       "temperature", "freq_penalty", "use_past_kv_cache", "prepend_bos", "padding_side",
                       "return_type", "verbose", "seed", "fwd_hooks"}

-- an integer, or a float with an integer value (1e9)
local function is_int(v) return type(v) == "number" and math.tointeger(v) ~= nil end

-- the sampling options shared by generate and utils.sample_logits, checked; fname names the caller
local function sample_opts(opts, fname, o)
  o = o or {}
  local function num(k, ok, what)
    local v = opts[k]
    if v ~= nil and not ok(v) then error(fname .. ": " .. k .. " must be " .. what .. ", got " .. tostring(v), 3) end
    o[k] = ok == is_int and v and math.tointeger(v) or v
  end
  num("temperature", function(v) return type(v) == "number" and v >= 0 and v < math.huge end, "a number >= 0")
  num("top_k", function(v) return is_int(v) and v >= 1 end, "a positive integer")
  o.top_k = o.top_k and math.tointeger(o.top_k)
  num("top_p", function(v) return type(v) == "number" and v > 0 and v <= 1 end, "in (0, 1]")
  num("freq_penalty", function(v) return type(v) == "number" and v >= 0 and v < math.huge end, "a number >= 0")
  num("seed", is_int, "an integer")
  return o
end

-- TransformerLens's get_attention_mask for left padding: the leading pad tokens of each row are
-- padding (when BOS is the pad token and is prepended, the last of them is the BOS, a real token)
local function leading_pad_mask(self, tokens, prepend)
  local tok = self.tokenizer
  local pad = tok and (tok:pad_token_id() or tok:eos_token_id())
  if pad == nil then return nil end
  local rows, mask, any = tokens:totable(), {}, false
  for b, row in ipairs(rows) do
    local m, lead = {}, 0
    while lead < #row and row[lead + 1] == pad do lead = lead + 1 end
    if prepend and lead > 0 and tok:bos_token_id() == pad then lead = lead - 1 end
    for p = 1, #row do m[p] = p > lead and 1 or 0 end
    any = any or lead > 0
    mask[b] = m
  end
  return any and mi.tensor(mask, "int64") or nil
end

-- model:generate(input, opts): TransformerLens's HookedTransformer.generate, run by the C loop of
-- core/generate.c with a key/value cache (use_past_kv_cache = false reruns the whole sequence per
-- token). input: a string, a list of strings (padded on the left), or tokens [B,P] / [P]. Returns
-- (return_type "input") a string for a string, a list of strings for a list, tokens for tokens;
-- "str" strings, "tokens" (or TransformerLens's "tensor") int64 [B, P + new].
function Model:generate(input, opts)
  mi.utils.check_opts("generate", opts, GENERATE_OPTS)
  opts = opts or {}
  local o = sample_opts(opts, "generate")
  local max_new = opts.max_new_tokens or 10
  if not is_int(max_new) or max_new < 0 then
    error("generate: max_new_tokens must be an integer >= 0, got " .. tostring(max_new), 2)
  end
  max_new = math.tointeger(max_new)
  for _, k in ipairs{"do_sample", "stop_at_eos", "use_past_kv_cache", "verbose"} do
    if opts[k] ~= nil and type(opts[k]) ~= "boolean" then
      error("generate: " .. k .. " must be true or false, got " .. tostring(opts[k]), 2)
    end
  end
  local rt = opts.return_type or "input"
  if rt ~= "input" and rt ~= "str" and rt ~= "tokens" and rt ~= "tensor" then
    error("generate: return_type must be 'input', 'str' or 'tokens' (or 'tensor'), got " .. tostring(rt), 2)
  end
  local side = opts.padding_side
  if side ~= nil and side ~= "left" and side ~= "right" then
    error("generate: padding_side must be 'left' or 'right', got " .. tostring(side), 2)
  end
  local prepend = opts.prepend_bos
  if prepend == nil then prepend = self.cfg.default_prepend_bos end

  -- the prompts: new tokens follow each prompt's last token, so shorter prompts are padded on the left
  local text = type(input) == "string" or (type(input) == "table" and type(input[1]) == "string")
  local tokens, mask
  if text then
    local padded
    tokens, mask, padded = self:to_tokens(input, {prepend_bos = opts.prepend_bos, padding_side = "left"})
    if padded and side == "right" then
      error("generate: prompts of different lengths are padded on the left (each continues from its last token); " ..
            "padding_side 'right' cannot generate", 2)
    end
    if not padded then mask = nil end
  elseif mi.is_tensor(input) or type(input) == "table" then
    tokens = mi.is_tensor(input) and input or mi.tensor(input, "int64")
    if tokens:dtype() ~= "int64" then error("generate: tokens must be int64, got " .. tokens:dtype(), 2) end
    if tokens:dim() == 1 then tokens = tokens:unsqueeze(0) end
    if tokens:dim() ~= 2 then error("generate: tokens must be [batch, pos] or [pos], got " .. tokens:dim() .. " dims", 2) end
    if side == "left" then mask = leading_pad_mask(self, tokens, prepend) end
  else
    error("generate: input must be a string, a list of strings or a tensor of tokens, got " .. type(input), 2)
  end

  -- stop tokens: eos_token_id (an id or a list of ids), else the tokenizer's; finished rows get
  -- the first of them (the tokenizer's EOS when given a list), as TransformerLens
  local eos = opts.eos_token_id
  if is_int(eos) then eos = math.tointeger(eos) end
  local tok_eos = self.tokenizer and self.tokenizer:eos_token_id()
  if eos ~= nil and not is_int(eos) and (type(eos) ~= "table" or #eos == 0) then
    error("generate: eos_token_id must be a token id or a list of ids, got " .. tostring(eos), 2)
  end
  if type(eos) == "table" then
    for i, id in ipairs(eos) do
      if not is_int(id) then error("generate: eos_token_id[" .. i .. "] must be a token id, got " .. tostring(id), 2) end
    end
  end
  local stop = opts.stop_at_eos
  if eos == nil then eos = tok_eos end
  if stop == true and eos == nil then
    error("generate: stop_at_eos needs eos_token_id (the model has no tokenizer with an EOS token)", 2)
  end
  if stop == nil then stop = eos ~= nil end
  local eos_list = type(eos) == "table" and eos or {eos}
  local eos_pad = type(eos) == "table" and (tok_eos or eos[1]) or eos

  local P = tokens:size(1)
  if P + max_new > self.cfg.n_ctx then
    local n = math.max(self.cfg.n_ctx - P, 0)
    mi.utils.warn(("generate: stopped at n_ctx = %d tokens after %d of the %d new tokens asked for"):format(
      self.cfg.n_ctx, n, max_new))
    max_new = n
  end
  local c = {tokens = tokens, attention_mask = mask, max_new_tokens = max_new, do_sample = opts.do_sample,
             temperature = o.temperature, top_k = o.top_k, top_p = o.top_p, freq_penalty = o.freq_penalty,
             seed = o.seed, use_past_kv_cache = opts.use_past_kv_cache, stop_at_eos = stop and eos ~= nil,
             eos = stop and eos_list or nil, eos_pad = stop and eos_pad or nil}
  -- verbose: a progress bar (on a terminal only), ended also when every row stopped early or on error
  local bar = opts.verbose ~= false and max_new > 0 and mi.progress.bar("generate", max_new) or nil
  if bar and not bar.enabled then bar = nil end
  if bar then c.progress = function(i) bar:update(i) end end
  local _ <close> = bar and setmetatable({}, {__close = function() bar:done() end}) or nil
  local _ <close> = self:_core_hooks(c, opts.fwd_hooks)
  local out = self._core:generate(c)

  if rt == "str" or (rt == "input" and text) then
    local tok = need_tok(self, "generate")
    local m = mask and mask:totable()
    local strs = {}
    for b = 0, out:size(0) - 1 do
      -- the prompt's (leading) padding, and the BOS generate put in front of a text, are not text
      local ids, first = out[b]:totable(), 1
      if m then for p = 1, P do if m[b + 1][p] == 0 then first = first + 1 end end end
      if text and prepend then first = first + 1 end
      strs[b + 1] = tok:decode(table.move(ids, first, #ids, 1, {}))
    end
    if type(input) == "string" or (rt == "str" and #strs == 1 and not text) then return strs[1] end
    return strs
  end
  return out
end

-- TransformerLens's utils.sample_logits(final_logits [B, V], {top_k, top_p, temperature,
-- freq_penalty, tokens}) -> int64 [B], by the sampler of generate (core/generate.c); seed draws
-- from a generator of that seed, else from the default one (mi.manual_seed)
function M.sample_logits(final_logits, opts)
  mi.utils.check_opts("sample_logits", opts, {"top_k", "top_p", "temperature", "freq_penalty", "tokens", "seed"})
  opts = opts or {}
  local o = sample_opts(opts, "sample_logits")
  if not mi.is_tensor(final_logits) then
    error("sample_logits: final_logits must be a tensor [batch, d_vocab], got " .. type(final_logits), 2)
  end
  if opts.tokens ~= nil and not mi.is_tensor(opts.tokens) then
    error("sample_logits: tokens must be an int64 tensor [batch, pos], got " .. type(opts.tokens), 2)
  end
  o.tokens = opts.tokens
  return mi._sample_logits(final_logits:float(), o)
end

-- ---------------------------------------------------------------- memory
function Model:buffer_bytes() return self._core:buffer_bytes() end
function Model:trim_buffers() self._core:trim() end

function M._install(m)
  mi = m
  mi.utils.colon_methods(Model, function(x) return getmetatable(x) == MODEL_MT end, "model")
  MODEL_MT.__methods = Model
  mi.utils.colon_methods(HookPoint, function(x) return getmetatable(x) == HookPoint end, "hook")
  -- errors at the user's line, naming the call (the config's C checker raised them at this file's)
  mi.HookedTransformerConfig = mi.utils.name_errors(M.HookedTransformerConfig, "HookedTransformerConfig")
  mi.HookedTransformer = mi.utils.name_errors(M.HookedTransformer, "HookedTransformer")
  mi.utils.sample_logits = mi.utils.name_errors(M.sample_logits, "sample_logits")
  mi.HookPoint = HookPoint
end

return M
