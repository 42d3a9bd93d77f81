-- mi.ActivationCache: what model:run_with_cache returns (TransformerLens's ActivationCache).
--
--   cache["blocks.0.attn.hook_pattern"], cache[{"pattern", 0}], cache("pattern", 0),
--   cache[{"scale", 4, "ln1"}], cache["k6"]; negative layers count from the end.
--   A missing name is an error naming it (TransformerLens raises KeyError).
--   cache:keys()            names in firing order;  cache:values(), cache:items() (name, tensor pairs)
--   cache:has(name)         is it cached;  #cache  how many
--   cache:remove_batch_dim() drops dim 0 of every tensor (batch size 1 only)
--   cache:to_table()        plain {name = tensor};  cache:save(path)  safetensors keyed by full names
--   cache:accumulated_resid(layer, incl_mid, apply_ln, return_labels, mlp_input)
--   cache:decompose_resid(layer, mlp_input, mode, apply_ln, incl_embeds, return_labels)
--   cache:stack_head_results(layer, return_labels, incl_remainder, apply_ln)
--   cache:apply_ln_to_stack(stack, layer, mlp_input)
--   cache:logit_attrs(stack, tokens, incorrect_tokens)
--   cache:get_full_resid_decomposition(layer, mlp_input, apply_ln, return_labels)
-- Optional arguments may also come as one table of TransformerLens keyword names:
--   cache:accumulated_resid{layer = 1, incl_mid = true, return_labels = true}.
-- Positions are dim -2 of every residual-like tensor, so the helpers work with and without the
-- batch dim. (pos_slice / batch_slice arguments of TransformerLens are not offered: slice the
-- result with tensor indexing.)
local C = {}

local mi

local Cache = {}   -- methods
local MT = {__name = "miwb.ActivationCache"}

local function resolve(self, key, layer, layer_type)
  if type(key) == "table" then key, layer, layer_type = key[1], key[2], key[3] end
  if type(key) ~= "string" then error("ActivationCache: key must be a hook name or {name, layer}, got " .. type(key), 3) end
  if layer ~= nil and layer < 0 then layer = self.n_layers + layer end
  return mi.utils.get_act_name(key, layer, layer_type)
end

function MT.__index(self, key)
  local m = Cache[key]
  if m ~= nil then return m end
  local name = resolve(self, key)
  local t = rawget(self, "_store")[name]
  if t == nil then error("ActivationCache: '" .. name .. "' is not in the cache", 2) end
  return t
end

function MT.__call(self, key, layer, layer_type)
  local name = resolve(self, key, layer, layer_type)
  local t = self._store[name]
  if t == nil then error("ActivationCache: '" .. name .. "' is not in the cache", 2) end
  return t
end

function MT.__len(self) return #self._order end

function MT.__tostring(self)
  return string.format("ActivationCache with %d tensors: %s", #self._order,
                       table.concat(self._order, ", ", 1, math.min(#self._order, 6)) ..
                       (#self._order > 6 and ", ..." or ""))
end

function MT.__newindex(self, key, value)
  error("ActivationCache: entries are read-only (use cache:to_table() for a plain table)", 2)
end

-- store: name -> tensor; order: every name of the model in firing order (kept when present)
function C.new(store, order, model, has_batch_dim)
  local o = {}
  for _, n in ipairs(order) do if store[n] ~= nil then o[#o + 1] = n end end
  local self = {_store = store, _order = o, model = model, n_layers = model and model.cfg.n_layers or 0,
                has_batch_dim = has_batch_dim ~= false}
  return setmetatable(self, MT)
end

function Cache:keys()
  local t = {}
  for i, n in ipairs(self._order) do t[i] = n end
  return t
end
function Cache:values()
  local t = {}
  for i, n in ipairs(self._order) do t[i] = self._store[n] end
  return t
end
-- for name, tensor in cache:items() do ... end
function Cache:items()
  local i = 0
  return function()
    i = i + 1
    local n = self._order[i]
    if n then return n, self._store[n] end
  end
end
function Cache:has(key) return rawget(self, "_store")[resolve(self, key)] ~= nil end
function Cache:to_table()
  local t = {}
  for n, v in pairs(self._store) do t[n] = v end
  return t
end

function Cache:remove_batch_dim()
  if not self.has_batch_dim then return self end
  for _, n in ipairs(self._order) do
    local t = self._store[n]
    if t:size(0) ~= 1 then
      error(string.format("remove_batch_dim: '%s' has batch size %d, expected 1", n, t:size(0)), 2)
    end
  end
  for _, n in ipairs(self._order) do self._store[n] = self._store[n]:select(0, 0) end
  rawset(self, "has_batch_dim", false)
  return self
end

function Cache:save(path)
  if not mi.save then error("cache:save: mi.save is not available in this build", 2) end
  return mi.save(path, self._store)
end

-- TransformerLens keyword arguments as one table, or positional ones
local function kw(names, first, ...)
  if type(first) == "table" and not mi.is_tensor(first) then
    local out = {}
    for i, n in ipairs(names) do out[i] = first[n] end
    return table.unpack(out, 1, #names)
  end
  return first, ...
end

local function cfg(self)
  if not self.model then error("ActivationCache: this helper needs the model (cache made without one)", 3) end
  return self.model.cfg
end

local function final_layer(self, layer)
  local L = cfg(self).n_layers
  if layer == nil or layer == -1 then return L end
  if layer < 0 then layer = L + layer + 1 end
  return layer
end

-- residual stack [components, ..., d] -> centred and divided by the cached LayerNorm scale of
-- the layer the stack enters (ln_final for layer == n_layers). Only the centring and scaling:
-- LayerNorm's w and b are not applied (TransformerLens's apply_ln_to_stack).
function Cache:apply_ln_to_stack(stack, layer, mlp_input)
  local c = cfg(self)
  if c.normalization_type ~= "LN" and c.normalization_type ~= "LNPre" then return stack end
  layer = final_layer(self, layer)
  local centred = stack - stack:mean(-1, true)
  local scale
  if layer == c.n_layers then scale = self["ln_final.hook_scale"]
  else scale = self[string.format("blocks.%d.ln%d.hook_scale", layer, mlp_input and 2 or 1)] end
  return centred / scale
end

function Cache:accumulated_resid(...)
  local layer, incl_mid, apply_ln, return_labels, mlp_input =
    kw({"layer", "incl_mid", "apply_ln", "return_labels", "mlp_input"}, ...)
  local c = cfg(self)
  layer = final_layer(self, layer)
  incl_mid = incl_mid and not c.attn_only
  local comps, labels = {}, {}
  for l = 0, layer do
    if l == c.n_layers then
      comps[#comps + 1] = self[{"resid_post", c.n_layers - 1}]
      labels[#labels + 1] = "final_post"
    else
      comps[#comps + 1] = self[{"resid_pre", l}]
      labels[#labels + 1] = l .. "_pre"
      if (incl_mid and l < layer) or (mlp_input and l == layer) then
        comps[#comps + 1] = self[{"resid_mid", l}]
        labels[#labels + 1] = l .. "_mid"
      end
    end
  end
  local stack = mi.stack(comps, 0)
  if apply_ln then stack = self:apply_ln_to_stack(stack, layer, mlp_input) end
  if return_labels then return stack, labels end
  return stack
end

function Cache:decompose_resid(...)
  local layer, mlp_input, mode, apply_ln, incl_embeds, return_labels =
    kw({"layer", "mlp_input", "mode", "apply_ln", "incl_embeds", "return_labels"}, ...)
  local c = cfg(self)
  layer = final_layer(self, layer)
  mode = mode or "all"
  if incl_embeds == nil then incl_embeds = true end
  local incl_attn = mode ~= "mlp"
  local incl_mlp = mode ~= "attn" and not c.attn_only
  local comps, labels = {}, {}
  if incl_embeds then
    if self._store["hook_embed"] then comps[#comps + 1] = self._store["hook_embed"]; labels[#labels + 1] = "embed" end
    if self._store["hook_pos_embed"] then
      comps[#comps + 1] = self._store["hook_pos_embed"]; labels[#labels + 1] = "pos_embed"
    end
  end
  for l = 0, layer - 1 do
    if incl_attn then comps[#comps + 1] = self[{"attn_out", l}]; labels[#labels + 1] = l .. "_attn_out" end
    if incl_mlp then comps[#comps + 1] = self[{"mlp_out", l}]; labels[#labels + 1] = l .. "_mlp_out" end
  end
  if mlp_input and incl_attn then
    comps[#comps + 1] = self[{"attn_out", layer}]; labels[#labels + 1] = layer .. "_attn_out"
  end
  local stack = mi.stack(comps, 0)
  if apply_ln then stack = self:apply_ln_to_stack(stack, layer, mlp_input) end
  if return_labels then return stack, labels end
  return stack
end

-- [..., H, d] results of layer l: cached hook_result, or z @ W_O when results were not cached
local function head_results(self, l)
  local name = string.format("blocks.%d.attn.hook_result", l)
  local r = self._store[name]
  if r then return r end
  local z = self[{"z", l}]                      -- [..., H, dh]
  local W_O = self.model.W_O:select(0, l)      -- [H, dh, d]
  return z:unsqueeze(-2):matmul(W_O):squeeze(-2) -- [..., H, 1, dh] @ [H, dh, d]
end

function Cache:stack_head_results(...)
  local layer, return_labels, incl_remainder, apply_ln =
    kw({"layer", "return_labels", "incl_remainder", "apply_ln"}, ...)
  local c = cfg(self)
  layer = final_layer(self, layer)
  local comps, labels = {}, {}
  for l = 0, layer - 1 do
    local r = head_results(self, l)            -- [..., H, d]
    local nd = r:dim()
    local perm = {nd - 2}
    for i = 0, nd - 3 do perm[#perm + 1] = i end
    perm[#perm + 1] = nd - 1
    comps[#comps + 1] = r:permute(table.unpack(perm)) -- [H, ..., d]
    for h = 0, c.n_heads - 1 do labels[#labels + 1] = string.format("L%dH%d", l, h) end
  end
  local stack
  if #comps == 0 then
    local ref = self[{"resid_pre", 0}]
    local shape = ref:shape()
    table.insert(shape, 1, 0)
    stack = mi.zeros(shape)
  else
    stack = mi.cat(comps, 0)
  end
  if incl_remainder then
    local rem = self[{"resid_post", layer - 1}] - stack:sum(0)
    stack = mi.cat({stack, rem:unsqueeze(0)}, 0)
    labels[#labels + 1] = "remainder"
  end
  if apply_ln then stack = self:apply_ln_to_stack(stack, layer) end
  if return_labels then return stack, labels end
  return stack
end

-- stack [components, ..., d] . W_U[:, tokens] (minus W_U[:, incorrect_tokens]) -> [components, ...]
function Cache:logit_attrs(stack, tokens, incorrect_tokens)
  local model = self.model
  if not model then error("logit_attrs: this cache has no model", 2) end
  local dirs = model:tokens_to_residual_directions(tokens)
  if incorrect_tokens ~= nil then dirs = dirs - model:tokens_to_residual_directions(incorrect_tokens) end
  return (stack * dirs):sum(-1)
end

function Cache:get_full_resid_decomposition(...)
  local layer, mlp_input, apply_ln, return_labels =
    kw({"layer", "mlp_input", "apply_ln", "return_labels"}, ...)
  local c = cfg(self)
  layer = final_layer(self, layer)
  local heads, labels = self:stack_head_results(layer + (mlp_input and 1 or 0), true)
  local comps = {heads}
  if not c.attn_only and layer > 0 then
    local mlps, ml = self:decompose_resid(layer, false, "mlp", false, false, true)
    comps[#comps + 1] = mlps
    for _, s in ipairs(ml) do labels[#labels + 1] = s end
  end
  if self._store["hook_embed"] then
    comps[#comps + 1] = self._store["hook_embed"]:unsqueeze(0); labels[#labels + 1] = "embed"
  end
  if self._store["hook_pos_embed"] then
    comps[#comps + 1] = self._store["hook_pos_embed"]:unsqueeze(0); labels[#labels + 1] = "pos_embed"
  end
  local bias = self.model:accumulated_bias(layer, mlp_input)        -- [d]
  local shape = heads:shape()
  shape[1] = 1
  comps[#comps + 1] = bias:expand(shape):contiguous(); labels[#labels + 1] = "bias"
  local stack = mi.cat(comps, 0)
  if apply_ln then stack = self:apply_ln_to_stack(stack, layer, mlp_input) end
  if return_labels then return stack, labels end
  return stack
end

function C._install(m)
  mi = m
  mi.utils.colon_methods(Cache, function(x) return getmetatable(x) == MT end, "cache")
  MT.__methods = Cache
  mi.ActivationCache = C.new
end

return C
