-- mi.ActivationCache: what model:run_with_cache returns (TransformerLens's ActivationCache).
--
--   cache["blocks.0.attn.hook_pattern"], cache[{"pattern", 0}], cache("pattern", 0),
--   cache[{"scale", 4, "ln1"}], cache["k6"]; negative layers count from the end.
--   A missing name is an error naming it (TransformerLens raises KeyError).
--   cache:keys()            names in firing order;  cache:values(), cache:items() (name, tensor pairs)
--   cache:has(name)         is it cached;  #cache  how many
--   cache:remove_batch_dim() drops dim 0 of every tensor (batch size 1 only)
--   cache:to_table()        plain {name = tensor};  cache:save(path)  safetensors keyed by full names
--   mi.ActivationCache(cache_dict, model, has_batch_dim)   TransformerLens's constructor
--   mi.ActivationCache.load(path, model, {has_batch_dim})  a cache saved with cache:save(path)
-- The helpers take TransformerLens 2.12's arguments in its order, or the same names in one table
-- (cache:accumulated_resid{layer = 1, pos_slice = -1, return_labels = true}); an unknown name raises.
-- pos_slice / batch_slice are mi.utils.Slice inputs (an integer selects one position and drops
-- the dim, {start, stop, step} a range, {indices = {...}} a list):
--   cache:accumulated_resid(layer, incl_mid, apply_ln, pos_slice, mlp_input, return_labels)
--   cache:decompose_resid(layer, mlp_input, mode, apply_ln, pos_slice, incl_embeds, return_labels)
--   cache:stack_head_results(layer, return_labels, incl_remainder, pos_slice, apply_ln)
--   cache:stack_neuron_results(layer, pos_slice, neuron_slice, return_labels, incl_remainder, apply_ln)
--   cache:apply_ln_to_stack(residual_stack, layer, mlp_input, pos_slice, batch_slice, has_batch_dim)
--   cache:logit_attrs(residual_stack, tokens, incorrect_tokens, pos_slice, batch_slice, has_batch_dim)
--   cache:get_full_resid_decomposition(layer, mlp_input, expand_neurons, apply_ln, pos_slice, return_labels)
-- Positions are dim -2 of every residual-like tensor, so the helpers work with and without the
-- batch dim. A shortformer model's hook_pos_embed never enters its residual stream, so the
-- decompositions leave it out (their parts sum to the residual stream; TransformerLens adds it).
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

-- store: name -> tensor; order: every name of the model in firing order (kept when present);
-- names not in order follow, sorted
function C.new(store, order, model, has_batch_dim)
  local o, listed = {}, {}
  for _, n in ipairs(order or {}) do
    if store[n] ~= nil then o[#o + 1] = n; listed[n] = true end
  end
  local rest = {}
  for n, t in pairs(store) do
    if type(n) ~= "string" then error("ActivationCache: keys must be hook names, got a " .. type(n), 3) end
    if not mi.is_tensor(t) then error("ActivationCache: '" .. n .. "' is a " .. type(t) .. ", not a tensor", 3) end
    if not listed[n] then rest[#rest + 1] = n end
  end
  table.sort(rest)
  for _, n in ipairs(rest) do o[#o + 1] = n end
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
  if type(path) ~= "string" then error("cache:save: path must be a string, got " .. mi.utils.typename(path), 2) end
  return mi.save(path, self._store)
end

-- the kinds of the cache helpers' arguments (by TransformerLens's names), checked by kw
local ARG_KIND = {layer = "integer", mlp_input = "boolean", incl_mid = "boolean", apply_ln = "boolean",
                  return_labels = "boolean", incl_remainder = "boolean", has_batch_dim = "boolean",
                  expand_neurons = "boolean", incl_embeds = "boolean", mode = "string"}
local function check_kinds(fname, names, vals)
  for i, n in ipairs(names) do
    local v, kind = vals[i], ARG_KIND[n]
    if v ~= nil and kind and (kind == "integer" and math.type(v) ~= "integer" or kind ~= "integer" and type(v) ~= kind) then
      error(("%s: %s must be %s or nil, got %s"):format(fname, n, kind == "integer" and "an integer" or "a " .. kind,
            type(v) == "number" and tostring(v) or mi.utils.typename(v)), 4)
    end
  end
  return table.unpack(vals, 1, #names)
end

-- TransformerLens keyword arguments as one table (unknown names raise), or positional ones
local function kw(fname, names, first, ...)
  if type(first) == "table" and getmetatable(first) == nil and select("#", ...) == 0 then
    mi.utils.check_opts(fname, first, names)
    local out = {}
    for i, n in ipairs(names) do out[i] = first[n] end
    return check_kinds(fname, names, out)
  end
  if select("#", ...) + 1 <= #names then return check_kinds(fname, names, {first, ...}) end
  if select("#", ...) + 1 > #names then
    error(("%s: at most %d arguments (%s), got %d"):format(fname, #names, table.concat(names, ", "),
          select("#", ...) + 1), 3)
  end
  return first, ...
end

local function Slice(x) return mi.utils.Slice(x) end

local function cfg(self)
  if not self.model then error("ActivationCache: this helper needs the model (cache made without one)", 3) end
  return self.model.cfg
end

local function final_layer(self, layer)
  local L = cfg(self).n_layers
  if layer == nil or layer == -1 then return L end
  if layer < -L - 1 or layer > L then
    error(("layer %d is out of range for %d layers (0..%d, or negative from the end)"):format(layer, L, L), 3)
  end
  if layer < 0 then layer = L + layer + 1 end
  return layer
end

-- whether the model's residual stream holds hook_pos_embed (not for shortformer models)
local function pos_embed_in_resid(self)
  return self._store["hook_pos_embed"] ~= nil and cfg(self).positional_embedding_type ~= "shortformer"
end

-- residual stack [components, batch?, pos, d] -> centred and divided by the cached LayerNorm scale
-- of the layer the stack enters (ln_final for layer n_layers, -1 or nil). Only the centring and
-- scaling: LayerNorm's w and b are not applied (TransformerLens's apply_ln_to_stack). pos_slice
-- picks the scale's positions (the stack is taken as already sliced); batch_slice slices the
-- stack's dim 1 (when has_batch_dim) and the scale's batch dim.
function Cache:apply_ln_to_stack(residual_stack, ...)
  if not mi.is_tensor(residual_stack) then
    error("apply_ln_to_stack: residual_stack must be a tensor [components, batch, pos, d_model], got " ..
          mi.utils.typename(residual_stack), 2)
  end
  local layer, mlp_input, pos_slice, batch_slice, has_batch_dim =
    kw("apply_ln_to_stack", {"layer", "mlp_input", "pos_slice", "batch_slice", "has_batch_dim"}, ...)
  local c = cfg(self)
  if c.normalization_type ~= "LN" and c.normalization_type ~= "LNPre" then return residual_stack end
  pos_slice, batch_slice = Slice(pos_slice), Slice(batch_slice)
  layer = final_layer(self, layer)
  if has_batch_dim ~= false then residual_stack = batch_slice:apply(residual_stack, 1) end
  local centred = residual_stack - residual_stack:mean(-1, true)
  local scale
  if layer == c.n_layers then scale = self["ln_final.hook_scale"]
  else scale = self[string.format("blocks.%d.ln%d.hook_scale", layer, mlp_input and 2 or 1)] end
  scale = pos_slice:apply(scale, -2)
  if self.has_batch_dim then scale = batch_slice:apply(scale, 0) end
  return centred / scale
end

local function stack_of(comps, fallback)
  if #comps == 0 then
    local shape = fallback:shape()
    table.insert(shape, 1, 0)
    return mi.zeros(shape)
  end
  return mi.stack(comps, 0)
end

function Cache:accumulated_resid(...)
  local layer, incl_mid, apply_ln, pos_slice, mlp_input, return_labels =
    kw("accumulated_resid", {"layer", "incl_mid", "apply_ln", "pos_slice", "mlp_input", "return_labels"}, ...)
  local c = cfg(self)
  pos_slice = Slice(pos_slice)
  layer = final_layer(self, layer)
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
  for i, t in ipairs(comps) do comps[i] = pos_slice:apply(t, -2) end
  local stack = mi.stack(comps, 0)
  if apply_ln then stack = self:apply_ln_to_stack(stack, layer, mlp_input, pos_slice) end
  if return_labels then return stack, labels end
  return stack
end

function Cache:decompose_resid(...)
  local layer, mlp_input, mode, apply_ln, pos_slice, incl_embeds, return_labels =
    kw("decompose_resid", {"layer", "mlp_input", "mode", "apply_ln", "pos_slice", "incl_embeds", "return_labels"}, ...)
  local c = cfg(self)
  pos_slice = Slice(pos_slice)
  layer = final_layer(self, layer)
  mode = mode or "all"
  if mode ~= "all" and mode ~= "mlp" and mode ~= "attn" then
    error("decompose_resid: mode must be 'all', 'mlp' or 'attn', got " .. tostring(mode), 2)
  end
  if incl_embeds == nil then incl_embeds = true end
  local incl_attn = mode ~= "mlp"
  local incl_mlp = mode ~= "attn" and not c.attn_only
  local comps, labels = {}, {}
  if incl_embeds then
    if self._store["hook_embed"] then comps[#comps + 1] = self._store["hook_embed"]; labels[#labels + 1] = "embed" end
    if pos_embed_in_resid(self) then
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
  for i, t in ipairs(comps) do comps[i] = pos_slice:apply(t, -2) end
  local stack = stack_of(comps, pos_slice:apply(self[{"resid_pre", 0}], -2))
  if apply_ln then stack = self:apply_ln_to_stack(stack, layer, mlp_input, pos_slice) end
  if return_labels then return stack, labels end
  return stack
end

-- the end of stack_head_results / stack_neuron_results: comps [n, ..., d] joined (an empty stack
-- without any), the remainder up to resid_post of layer - 1, LN scaling, labels
local function finish_stack(self, comps, labels, layer, pos_slice, incl_remainder, apply_ln, return_labels)
  local stack
  if #comps == 0 then
    local shape = pos_slice:apply(self[{"resid_pre", 0}], -2):shape()
    table.insert(shape, 1, 0)
    stack = mi.zeros(shape)
  else
    stack = mi.cat(comps, 0)
  end
  if incl_remainder then
    local rem = pos_slice:apply(self[{"resid_post", layer - 1}], -2) - stack:sum(0)
    stack = mi.cat({stack, rem:unsqueeze(0)}, 0)
    labels[#labels + 1] = "remainder"
  end
  if apply_ln then stack = self:apply_ln_to_stack(stack, layer, false, pos_slice) end
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

-- [..., n, d] -> [n, ..., d]
local function component_first(r)
  local nd = r:dim()
  local perm = {nd - 2}
  for i = 0, nd - 3 do perm[#perm + 1] = i end
  perm[#perm + 1] = nd - 1
  return r:permute(table.unpack(perm))
end

function Cache:stack_head_results(...)
  local layer, return_labels, incl_remainder, pos_slice, apply_ln =
    kw("stack_head_results", {"layer", "return_labels", "incl_remainder", "pos_slice", "apply_ln"}, ...)
  local c = cfg(self)
  pos_slice = Slice(pos_slice)
  layer = final_layer(self, layer)
  local comps, labels = {}, {}
  for l = 0, layer - 1 do
    comps[#comps + 1] = component_first(pos_slice:apply(head_results(self, l), -3)) -- [H, ..., d]
    for h = 0, c.n_heads - 1 do labels[#labels + 1] = string.format("L%dH%d", l, h) end
  end
  return finish_stack(self, comps, labels, layer, pos_slice, incl_remainder, apply_ln, return_labels)
end

-- each neuron's output post[n] * W_out[n] for the layers below `layer`: [L*d_mlp, ..., d]
-- (TransformerLens's stack_neuron_results; labels "L{l}N{n}")
function Cache:stack_neuron_results(...)
  local layer, pos_slice, neuron_slice, return_labels, incl_remainder, apply_ln =
    kw("stack_neuron_results", {"layer", "pos_slice", "neuron_slice", "return_labels", "incl_remainder", "apply_ln"}, ...)
  local c = cfg(self)
  if c.attn_only then error("stack_neuron_results: an attention-only model has no neurons", 2) end
  pos_slice, neuron_slice = Slice(pos_slice), Slice(neuron_slice)
  layer = final_layer(self, layer)
  local comps, labels = {}, {}
  for l = 0, layer - 1 do
    local post = neuron_slice:apply(pos_slice:apply(self[{"post", l}], -2), -1)   -- [..., n]
    local W = neuron_slice:apply(self.model.W_out[l], 0)                           -- [n, d]
    comps[#comps + 1] = component_first(post:unsqueeze(-1) * W)                    -- [n, ..., d]
    local ids = neuron_slice:indices(c.d_mlp):totable()
    for _, n in ipairs(ids) do labels[#labels + 1] = string.format("L%dN%d", l, n) end
  end
  return finish_stack(self, comps, labels, layer, pos_slice, incl_remainder, apply_ln, return_labels)
end

-- the stack, scaled by ln_final (as TransformerLens: apply_ln_to_stack at the last layer), dotted
-- with W_U[:, tokens] (minus W_U[:, incorrect_tokens]) -> [components, ...]
function Cache:logit_attrs(residual_stack, ...)
  local tokens, incorrect_tokens, pos_slice, batch_slice, has_batch_dim =
    kw("logit_attrs", {"tokens", "incorrect_tokens", "pos_slice", "batch_slice", "has_batch_dim"}, ...)
  local model = self.model
  if not model then error("logit_attrs: this cache has no model", 2) end
  if tokens == nil then error("logit_attrs: tokens are needed", 2) end
  local dirs = model:tokens_to_residual_directions(tokens)
  if incorrect_tokens ~= nil then
    local a = mi.is_tensor(tokens) and tokens:shape() or {}
    local b = mi.is_tensor(incorrect_tokens) and incorrect_tokens:shape() or {}
    if table.concat(a, ",") ~= table.concat(b, ",") then
      error(("logit_attrs: tokens and incorrect_tokens must have the same shape ([%s] and [%s])"):format(
        table.concat(a, ","), table.concat(b, ",")), 2)
    end
    dirs = dirs - model:tokens_to_residual_directions(incorrect_tokens)
  end
  local scaled = self:apply_ln_to_stack(residual_stack, -1, false, pos_slice, batch_slice, has_batch_dim)
  return (scaled * dirs):sum(-1)
end

function Cache:get_full_resid_decomposition(...)
  local layer, mlp_input, expand_neurons, apply_ln, pos_slice, return_labels =
    kw("get_full_resid_decomposition", {"layer", "mlp_input", "expand_neurons", "apply_ln", "pos_slice", "return_labels"}, ...)
  local c = cfg(self)
  pos_slice = Slice(pos_slice)
  layer = final_layer(self, layer)
  if expand_neurons == nil then expand_neurons = true end
  local heads, labels = self:stack_head_results(layer + (mlp_input and 1 or 0), true, false, pos_slice)
  local comps = {heads}
  if not c.attn_only and layer > 0 then
    local part, pl
    if expand_neurons then part, pl = self:stack_neuron_results(layer, pos_slice, nil, true)
    else part, pl = self:decompose_resid(layer, mlp_input, "mlp", false, pos_slice, false, true) end
    comps[#comps + 1] = part
    for _, s in ipairs(pl) do labels[#labels + 1] = s end
  end
  if self._store["hook_embed"] then
    comps[#comps + 1] = pos_slice:apply(self._store["hook_embed"], -2):unsqueeze(0); labels[#labels + 1] = "embed"
  end
  if pos_embed_in_resid(self) then
    comps[#comps + 1] = pos_slice:apply(self._store["hook_pos_embed"], -2):unsqueeze(0); labels[#labels + 1] = "pos_embed"
  end
  local bias = self.model:accumulated_bias(layer, mlp_input, expand_neurons)        -- [d]
  local shape = heads:shape()
  shape[1] = 1
  comps[#comps + 1] = bias:expand(shape):contiguous(); labels[#labels + 1] = "bias"
  local stack = mi.cat(comps, 0)
  if apply_ln then stack = self:apply_ln_to_stack(stack, layer, mlp_input, pos_slice) end
  if return_labels then return stack, labels end
  return stack
end

-- TransformerLens's ActivationCache(cache_dict, model, has_batch_dim = true)
function C.ActivationCache(cache_dict, model, has_batch_dim)
  if type(cache_dict) ~= "table" then
    error("ActivationCache(cache_dict, model, has_batch_dim): cache_dict must be a table {hook name = tensor}", 2)
  end
  if model ~= nil and (type(model) ~= "table" or rawget(model, "_core") == nil) then
    error("ActivationCache: the second argument is the model", 2)
  end
  local store = {}
  for k, v in pairs(cache_dict) do store[k] = v end
  return C.new(store, model and model:hook_names() or nil, model, has_batch_dim)
end

-- a cache written by cache:save(path) (safetensors keyed by hook names)
function C.load(path, model, opts)
  mi.utils.check_opts("ActivationCache.load", opts, {"has_batch_dim"})
  local sd, err = mi.load(path)
  if not sd then error("ActivationCache.load: " .. tostring(err), 2) end
  local has_batch_dim = true
  if opts and opts.has_batch_dim ~= nil then has_batch_dim = opts.has_batch_dim end
  return C.ActivationCache(sd, model, has_batch_dim)
end

function C._install(m)
  mi = m
  mi.utils.colon_methods(Cache, function(x) return getmetatable(x) == MT end, "cache")
  MT.__methods = Cache
  mi.ActivationCache = setmetatable({load = C.load}, {__call = function(_, ...) return C.ActivationCache(...) end})
end

return C
