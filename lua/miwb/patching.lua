-- mi.patching: activation patching as TransformerLens's transformer_lens.patching (same names,
-- argument order and output shapes), path patching, and attribution patching.
--
--   mi.patching.generic_activation_patch(model, corrupted_tokens, clean_cache, patching_metric,
--       patch_setter, activation_name, index_axis_names [, opts])
--     For every index (layer, ...) the corrupted run gets the clean activation patched in by
--     patch_setter(corrupted_activation, index, clean_activation) at get_act_name(activation_name,
--     layer), and patching_metric(patched_logits [B,P,Vo]) gives one number. Returns a float32
--     tensor shaped by the axes: "layer" n_layers, "pos"/"src_pos"/"dest_pos" the token positions,
--     "head"/"head_index" n_heads (n_key_value_heads for k, v and rot_k under grouped-query
--     attention: their hook points carry the key/value heads). opts (or TransformerLens's keyword names as the 7th argument):
--       index_axis_names  the axes, as the 7th argument
--       index_df          a list of index lists instead ({{0, 3}, {1, 2}}): the result is flat [n]
--       return_index_df   also return the list of indices (each a Lua list, 0-based values)
--       batch_size        at most this many patched runs per forward (default: by memory)
--       memory_mb         memory for one batched forward (default 256)
--   The ready-made ones take (model, corrupted_tokens, clean_cache, patching_metric [, opts]):
--     get_act_patch_resid_pre, _resid_mid, _attn_out, _mlp_out                  [layer, pos]
--     get_act_patch_attn_head_out_by_pos, _q_by_pos, _k_by_pos, _v_by_pos       [layer, pos, head]
--     get_act_patch_attn_head_pattern_by_pos                                    [layer, head, dest]
--     get_act_patch_attn_head_pattern_dest_src_pos                              [layer, head, dest, src]
--     get_act_patch_attn_head_out_all_pos, _q_all_pos, _k_all_pos, _v_all_pos,
--       _pattern_all_pos                                                        [layer, head]
--     get_act_patch_attn_head_all_pos_every  [5, layer, head]   (out, q, k, v, pattern)
--     get_act_patch_attn_head_by_pos_every   [5, layer, pos, head]
--     get_act_patch_block_every              [3, layer, pos]    (resid_pre, attn_out, mlp_out)
--   and the patch setters: layer_pos_patch_setter, layer_pos_head_vector_patch_setter,
--   layer_head_vector_patch_setter, layer_head_pattern_patch_setter,
--   layer_head_pos_pattern_patch_setter, layer_head_dest_src_pos_pattern_patch_setter.
--
--   mi.patching.path_patch(model, clean_tokens, corrupted_tokens, sender, receivers, metric): see below.
--   mi.patching.attribution_patch(model, clean_tokens, corrupted_tokens, metric, {acts = ...}): the
--     gradient estimate of the same grids from two forwards and one backward (see below).
--
-- How it is fast (the results are those of one full patched run per index): the corrupted run
-- is made once, keeping the residual stream entering every block; a patch at layer l only changes
-- what comes after it, so its run starts at block l from that cached residual (start_at_layer)
-- and several patches run side by side as one batch of k * batch rows, each row block getting its
-- own patch inside one hook call.
local M = {}

local mi

local function shape_str(t)
  if not mi.is_tensor(t) then return type(t) end
  return "[" .. table.concat(t:shape(), ",") .. "]"
end
M._shape_str = shape_str

-- ---------------------------------------------------------------- checks shared by every entry

-- int64 tokens [B,P] (a [P] tensor gets a batch dim); fname names the caller in errors
local function check_tokens(tokens, fname, what)
  what = what or "corrupted_tokens"
  if not mi.is_tensor(tokens) then
    error(fname .. ": " .. what .. " must be an int64 tensor [batch, pos], got a " .. type(tokens), 3)
  end
  if tokens:dtype() ~= "int64" then
    error(fname .. ": " .. what .. " must be int64, got " .. tokens:dtype() .. " " .. shape_str(tokens), 3)
  end
  if tokens:dim() == 1 then tokens = tokens:unsqueeze(0) end
  if tokens:dim() ~= 2 then
    error(fname .. ": " .. what .. " must be [batch, pos], got " .. shape_str(tokens), 3)
  end
  return tokens
end
M._check_tokens = check_tokens

-- a metric's value as a number: numbers and one-element tensors pass
local function metric_value(v, fname, argname)
  if type(v) == "number" then return v end
  if mi.is_tensor(v) then
    if v:numel() == 1 then return v:reshape(1)[0]:item() end
    error(fname .. ": " .. argname .. " returned a tensor of shape " .. shape_str(v) .. ", expected a number", 3)
  end
  error(fname .. ": " .. argname .. " returned a " .. type(v) .. ", expected a number", 3)
end
M._metric_value = metric_value

-- clean and corrupted tokens: each [batch, pos] int64, the same shape
local function check_pair(clean_tokens, corrupted_tokens, fname)
  local clean = check_tokens(clean_tokens, fname, "clean_tokens")
  local corrupted = check_tokens(corrupted_tokens, fname, "corrupted_tokens")
  if shape_str(clean) ~= shape_str(corrupted) then
    error(fname .. ": clean_tokens " .. shape_str(clean) .. " and corrupted_tokens " .. shape_str(corrupted) ..
          " must have the same shape", 3)
  end
  return clean, corrupted
end

local function check_fn(f, fname, argname)
  if type(f) ~= "function" and not (getmetatable(f) or {}).__call then
    error(fname .. ": " .. argname .. " must be a function, got " .. type(f), 3)
  end
end
M._check_fn = check_fn

local function check_model(model, fname)
  -- by type first: a cache's fields are hook names, so model.cfg on one would raise from the cache
  if mi.utils.typename(model) ~= "miwb.HookedTransformer" then
    error(fname .. ": the first argument must be a HookedTransformer (call mi.patching." .. fname ..
          "(model, ...), not model:" .. fname .. "), got " .. mi.utils.typename(model), 3)
  end
end
M._check_model = check_model

-- ---------------------------------------------------------------- patch setters
-- Each edits corrupted_activation in place (a [B, ...] view) and returns it. index is a Lua list
-- of 0-based values whose first element is the layer.

-- the setters' arguments: two tensors and a list of n integers (raised at the setter's caller)
local function setter_args(fname, act, index, clean, n)
  for _, a in ipairs({{"corrupted_activation", act}, {"clean_activation", clean}}) do
    if not mi.is_tensor(a[2]) then
      error(("%s: expected a tensor as %s, got %s"):format(fname, a[1], mi.utils.typename(a[2])), 3)
    end
  end
  local ok = type(index) == "table" and not mi.is_tensor(index) and #index >= n
  for i = 1, ok and n or 0 do ok = ok and math.type(index[i]) == "integer" end
  if not ok then
    error(("%s: index must be a list of %d integers (layer first), got %s"):format(fname, n, mi.utils.typename(index)), 3)
  end
end

function M.layer_pos_patch_setter(act, index, clean)
  setter_args("layer_pos_patch_setter", act, index, clean, 2)
  local pos = index[2]
  act[{{}, pos}] = clean[{{}, pos}]
  return act
end
function M.layer_pos_head_vector_patch_setter(act, index, clean)
  setter_args("layer_pos_head_vector_patch_setter", act, index, clean, 3)
  local pos, head = index[2], index[3]
  act[{{}, pos, head}] = clean[{{}, pos, head}]
  return act
end
function M.layer_head_vector_patch_setter(act, index, clean)
  setter_args("layer_head_vector_patch_setter", act, index, clean, 2)
  local head = index[2]
  act[{{}, {}, head}] = clean[{{}, {}, head}]
  return act
end
function M.layer_head_pattern_patch_setter(act, index, clean)
  setter_args("layer_head_pattern_patch_setter", act, index, clean, 2)
  local head = index[2]
  act[{{}, head}] = clean[{{}, head}]
  return act
end
function M.layer_head_pos_pattern_patch_setter(act, index, clean)
  setter_args("layer_head_pos_pattern_patch_setter", act, index, clean, 3)
  local head, dest = index[2], index[3]
  act[{{}, head, dest}] = clean[{{}, head, dest}]
  return act
end
function M.layer_head_dest_src_pos_pattern_patch_setter(act, index, clean)
  setter_args("layer_head_dest_src_pos_pattern_patch_setter", act, index, clean, 4)
  local head, dest, src = index[2], index[3], index[4]
  act[{{}, head, dest, src}] = clean[{{}, head, dest, src}]
  return act
end

-- ---------------------------------------------------------------- the batched runner

-- floats one patched row of the batch holds at once in a forward (logits, the block's buffers)
local function row_floats(model, P, act_name, n_logit_pos)
  local c = model.cfg
  local per_pos = 8 * c.d_model + 4 * c.n_heads * c.d_head + c.n_heads * c.d_model
  if not c.attn_only then per_pos = per_pos + 2 * (c.d_mlp or 0) end
  local n = P * per_pos + n_logit_pos * c.d_vocab_out
  if act_name == "pattern" or act_name == "attn_scores" then n = n + c.n_heads * P * P end
  return n
end

-- runs every index of `indices` (lists {layer, ...}) and returns a Lua list of metric values.
-- The hook at `name_of(layer)` gets patch_setter(view, index, clean) for each row block.
local function run_patches(model, tokens, clean_cache, metric, setter, act_name, indices, opts, fname)
  local B, P = tokens:size(0), tokens:size(1)
  local L = model.cfg.n_layers
  -- group the indices by layer, keeping their order within a layer
  local by_layer, layers = {}, {}
  for i, idx in ipairs(indices) do
    local l = idx[1]
    if math.type(l) ~= "integer" or l < 0 or l >= L then
      error(string.format("%s: index %d has layer %s, expected 0..%d", fname, i, tostring(l), L - 1), 3)
    end
    if not by_layer[l] then by_layer[l] = {}; layers[#layers + 1] = l end
    local list = by_layer[l]
    list[#list + 1] = i
  end
  table.sort(layers)
  -- the clean activation of each layer: present, [B, ...] as the corrupted run's
  local clean = {}
  for _, l in ipairs(layers) do
    local name = mi.utils.get_act_name(act_name, l)
    if not model._has[name] then
      error(fname .. ": '" .. name .. "' is not a hook point of this model" ..
            (model.cfg.attn_only and " (it is attention-only)" or ""), 3)
    end
    local ok, t = pcall(function() return clean_cache[name] end)
    if not ok or t == nil then
      error(fname .. ": the clean cache has no '" .. name .. "' (cache it with run_with_cache)", 3)
    end
    if t:size(0) ~= B or (t:dim() >= 2 and act_name ~= "pattern" and act_name ~= "attn_scores" and t:size(1) ~= P)
       or ((act_name == "pattern" or act_name == "attn_scores") and (t:dim() ~= 4 or t:size(2) ~= P)) then
      error(string.format("%s: clean activation %s is %s but corrupted_tokens are [%d,%d] " ..
                          "(clean and corrupted inputs must have the same shape)", fname, name, shape_str(t), B, P), 3)
    end
    clean[l] = t
  end
  -- A patch of a head's output (z, result) or of attn_out in an attention-only model changes the
  -- residual stream only by what that layer writes: resid_post = corrupted resid_post + the
  -- difference through W_O. Those runs start at the next block (or go straight to the unembed).
  -- Not with hooks on the model: the skipped layer's hooks would not run.
  local direct = model.cfg.attn_only and #model._persistent == 0 and not model._splices and
                 (act_name == "z" or act_name == "result" or act_name == "attn_out")
  -- the corrupted run, once: the residual entering each block that has patches (block 0 runs from
  -- the tokens), or for the direct path the patched activation and the block's output
  local want, resid, corr_act, post = {}, {}, {}, {}
  for _, l in ipairs(layers) do
    if direct then
      want[#want + 1] = mi.utils.get_act_name(act_name, l)
      want[#want + 1] = mi.utils.get_act_name("resid_post", l)
    elseif l > 0 then
      want[#want + 1] = mi.utils.get_act_name("resid_pre", l)
    end
  end
  if #want > 0 then
    local _, cc = model:run_with_cache(tokens, {names_filter = want, return_type = "none"})
    for _, l in ipairs(layers) do
      if direct then
        corr_act[l] = cc[mi.utils.get_act_name(act_name, l)]
        post[l] = cc[mi.utils.get_act_name("resid_post", l)]
      elseif l > 0 then
        resid[l] = cc[mi.utils.get_act_name("resid_pre", l)]
      end
    end
  end
  -- a metric that says which positions it reads (mi.metrics) gets the patched logits only there:
  -- the patched runs stop at the residual stream, and ln_final + unembed run on those rows alone
  local positions, value_of = nil, metric
  if mi.metrics and mi.metrics.is_metric(metric) then
    value_of = function(lg) return metric:value(lg) end
    positions = {}
    for i, p in ipairs(metric.positions) do
      local q = p < 0 and P + p or p
      if q < 0 or q >= P then
        error(string.format("%s: the metric reads position %d, outside the %d positions of corrupted_tokens", fname, p, P), 3)
      end
      positions[i] = q
    end
  end
  local nanbuf, posidx
  if positions then
    nanbuf = mi.full({B, P, model.cfg.d_vocab_out}, 0 / 0)
    posidx = mi.tensor(positions, "int64")
  end
  local budget = (opts.memory_mb or 256) * 1024 * 1024 / 4
  local per = math.max(1, math.floor(budget / (B * row_floats(model, P, act_name, positions and #positions or P))))
  if opts.batch_size then per = math.min(per, opts.batch_size) end

  -- patch_setter on a [B, ...] view; a returned tensor other than the view is copied in
  local function apply(view, i, cl, name)
    local r = setter(view, indices[i], cl)
    if r ~= nil and r ~= view then
      if not mi.is_tensor(r) or shape_str(r) ~= shape_str(view) then
        error(fname .. ": patch_setter returned " .. shape_str(r) .. " at " .. name .. ", expected " .. shape_str(view))
      end
      view:copy_(r)
    end
  end

  -- runs blocks start.. on input ([k*B,P] tokens or [k*B,P,d] residual) and scores each row block
  local results = {}
  local function score(chunk, input, start, hooks)
    if positions then
      local res = input
      if start < L then
        res = model:run_with_hooks(input, {fwd_hooks = hooks, start_at_layer = start > 0 and start or nil,
                                           stop_at_layer = L})                  -- [k*B, P, d]
      end
      local sel <close> = res:index_select(1, posidx)                            -- [k*B, n, d]
      local lg <close> = model:forward(sel, {start_at_layer = L})                -- [k*B, n, Vo]
      for j, i in ipairs(chunk) do
        local rows = lg:narrow(0, (j - 1) * B, B)
        for pi, p in ipairs(positions) do nanbuf[{{}, p}] = rows[{{}, pi - 1}] end
        results[i] = metric_value(value_of(nanbuf), fname, "patching_metric")
      end
    else
      local logits <close> = model:run_with_hooks(input, {fwd_hooks = hooks, start_at_layer = start > 0 and start or nil})
      for j, i in ipairs(chunk) do
        results[i] = metric_value(metric(logits:narrow(0, (j - 1) * B, B)), fname, "patching_metric")
      end
    end
  end

  local W_O = direct and act_name == "z" and model.W_O or nil
  for _, l in ipairs(layers) do
    local list = by_layer[l]
    local name = mi.utils.get_act_name(act_name, l)
    local cl = clean[l]
    local first = 1
    while first <= #list do
      local k = math.min(per, #list - first + 1)
      local chunk = {}
      for j = 1, k do chunk[j] = list[first + j - 1] end
      if direct then
        -- resid_post_l of each patched run = corrupted resid_post_l + (patched - corrupted) written out
        local corr = corr_act[l]
        local parts = {}
        for j, i in ipairs(chunk) do
          local v = corr:clone()
          apply(v, i, cl, name)
          local d = v - corr
          if act_name == "z" then                                       -- [B,P,H,dh] @ W_O[l] [H*dh, d]
            local H, dh = d:size(2), d:size(3)
            d = d:reshape(B * P, H * dh):matmul(W_O[l]:reshape(H * dh, -1)):view(B, P, -1)
          elseif act_name == "result" then                              -- [B,P,H,d] summed over heads
            d = d:sum(2)
          end
          parts[j] = post[l] + d
        end
        score(chunk, k > 1 and mi.cat(parts, 0) or parts[1], l + 1, {})
      else
        local function hook(act)
          if act:size(0) ~= k * B then
            error(string.format("%s: hook %s got %s, expected batch %d", fname, name, shape_str(act), k * B))
          end
          for j, i in ipairs(chunk) do apply(act:narrow(0, (j - 1) * B, B), i, cl, name) end
        end
        local input = l == 0 and (k > 1 and tokens:tile(k, 1) or tokens) or (k > 1 and resid[l]:tile(k, 1, 1) or resid[l])
        score(chunk, input, l, {{name, hook}})
      end
      first = first + k
    end
  end
  return results
end
M._run_patches = run_patches

local AXES = {layer = true, pos = true, head_index = true, head = true, src_pos = true, dest_pos = true}
local OPT_KEYS = {index_axis_names = true, index_df = true, return_index_df = true, batch_size = true,
                  memory_mb = true}

-- every combination of the axes' ranges, the last axis fastest (TransformerLens's index_df)
local function product(ranges)
  local out = {}
  local cur = {}
  local function rec(d)
    if d > #ranges then
      local t = {}
      for i = 1, #cur do t[i] = cur[i] end
      out[#out + 1] = t
      return
    end
    for v = 0, ranges[d] - 1 do cur[d] = v; rec(d + 1) end
    cur[d] = nil
  end
  rec(1)
  return out
end

-- grouped-query attention: hook_k, hook_v and hook_rot_k carry n_key_value_heads heads, so a
-- per-head grid over them has that many (n_heads without grouping)
function M._kv_heads(model)
  local g = model.cfg.n_key_value_heads
  return (g and g ~= mi.json.null and g > 0) and g or model.cfg.n_heads
end

-- is activation_name ("k", "v", "rot_k", "blocks.0.attn.hook_k", ...) a key/value hook point
local function kv_hook(activation_name)
  local ok, n = pcall(mi.utils.get_act_name, activation_name, 0)
  if not ok then return false end
  return n:match("hook_k$") ~= nil or n:match("hook_v$") ~= nil or n:match("hook_rot_k$") ~= nil
end

function M.generic_activation_patch(model, corrupted_tokens, clean_cache, patching_metric, patch_setter,
                                    activation_name, index_axis_names, opts)
  local fname = "generic_activation_patch"
  check_model(model, fname)
  -- TransformerLens keyword arguments as one table in place of index_axis_names
  if type(index_axis_names) == "table" and index_axis_names[1] == nil and next(index_axis_names) ~= nil
     and opts == nil then
    opts, index_axis_names = index_axis_names, index_axis_names.index_axis_names
  end
  opts = opts or {}
  mi.utils.check_opts(fname, opts, OPT_KEYS)
  local tokens = check_tokens(corrupted_tokens, fname)
  if type(clean_cache) ~= "table" or getmetatable(clean_cache) == nil then
    error(fname .. ": clean_cache must be an ActivationCache (from run_with_cache), got " .. type(clean_cache), 2)
  end
  check_fn(patching_metric, fname, "patching_metric")
  check_fn(patch_setter, fname, "patch_setter")
  if type(activation_name) ~= "string" then
    error(fname .. ": activation_name must be a string such as 'z' or 'resid_pre', got " .. type(activation_name), 2)
  end
  local indices, shape
  if opts.index_df ~= nil then
    if index_axis_names ~= nil then error(fname .. ": give index_axis_names or index_df, not both", 2) end
    indices = {}
    for i, row in ipairs(opts.index_df) do
      if type(row) ~= "table" or #row == 0 then error(fname .. ": index_df row " .. i .. " must be a list of indices", 2) end
      local r = {}
      for j, v in ipairs(row) do
        r[j] = math.tointeger(v) or error(fname .. ": index_df row " .. i .. " holds " .. tostring(v) .. ", not an integer", 2)
      end
      indices[i] = r
    end
    shape = {#indices}
  else
    if type(index_axis_names) ~= "table" or #index_axis_names == 0 then
      error(fname .. ": index_axis_names must be a list such as {'layer', 'pos'}", 2)
    end
    local ranges = {}
    local heads = kv_hook(activation_name) and M._kv_heads(model) or model.cfg.n_heads
    for i, a in ipairs(index_axis_names) do
      if not AXES[a] then
        error(fname .. ": unknown axis '" .. tostring(a) .. "' (layer, pos, head_index, head, src_pos, dest_pos)", 2)
      end
      if a == "layer" then ranges[i] = model.cfg.n_layers
      elseif a == "head" or a == "head_index" then ranges[i] = heads
      else ranges[i] = tokens:size(1) end
    end
    if index_axis_names[1] ~= "layer" then error(fname .. ": the first axis must be 'layer'", 2) end
    indices = product(ranges)
    shape = ranges
  end
  local values = run_patches(model, tokens, clean_cache, patching_metric, patch_setter, activation_name,
                             indices, opts, fname)
  local out = #values > 0 and mi.tensor(values):view(shape) or mi.zeros(shape)
  if opts.return_index_df then return out, indices end
  return out
end

-- ---------------------------------------------------------------- the ready-made ones
local READY = {
  resid_pre = {"layer_pos_patch_setter", "resid_pre", {"layer", "pos"}},
  resid_mid = {"layer_pos_patch_setter", "resid_mid", {"layer", "pos"}},
  attn_out = {"layer_pos_patch_setter", "attn_out", {"layer", "pos"}},
  mlp_out = {"layer_pos_patch_setter", "mlp_out", {"layer", "pos"}},
  attn_head_out_by_pos = {"layer_pos_head_vector_patch_setter", "z", {"layer", "pos", "head"}},
  attn_head_q_by_pos = {"layer_pos_head_vector_patch_setter", "q", {"layer", "pos", "head"}},
  attn_head_k_by_pos = {"layer_pos_head_vector_patch_setter", "k", {"layer", "pos", "head"}},
  attn_head_v_by_pos = {"layer_pos_head_vector_patch_setter", "v", {"layer", "pos", "head"}},
  attn_head_pattern_by_pos = {"layer_head_pos_pattern_patch_setter", "pattern", {"layer", "head_index", "dest_pos"}},
  attn_head_pattern_dest_src_pos = {"layer_head_dest_src_pos_pattern_patch_setter", "pattern",
                                    {"layer", "head_index", "dest_pos", "src_pos"}},
  attn_head_out_all_pos = {"layer_head_vector_patch_setter", "z", {"layer", "head"}},
  attn_head_q_all_pos = {"layer_head_vector_patch_setter", "q", {"layer", "head"}},
  attn_head_k_all_pos = {"layer_head_vector_patch_setter", "k", {"layer", "head"}},
  attn_head_v_all_pos = {"layer_head_vector_patch_setter", "v", {"layer", "head"}},
  attn_head_pattern_all_pos = {"layer_head_pattern_patch_setter", "pattern", {"layer", "head_index"}},
}

for suffix, spec in pairs(READY) do
  local fname = "get_act_patch_" .. suffix
  M[fname] = function(model, corrupted_tokens, clean_cache, patching_metric, opts)
    check_model(model, fname)
    opts = opts or {}
    if type(opts) ~= "table" then error(fname .. ": the 5th argument is an options table, got " .. type(opts), 2) end
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if o.index_axis_names ~= nil then error(fname .. ": index_axis_names is fixed for this function", 2) end
    if spec[2] == "mlp_out" and model.cfg.attn_only then
      error(fname .. ": the model is attention-only: it has no hook_mlp_out", 2)
    end
    local ok, r1, r2 = pcall(M.generic_activation_patch, model, corrupted_tokens, clean_cache, patching_metric,
                             M[spec[1]], spec[2], spec[3], o)
    if not ok then
      error((tostring(r1):gsub("generic_activation_patch:", fname .. ":", 1)), 2)
    end
    return r1, r2
  end
end

local function every(fname, parts, model, corrupted_tokens, clean_cache, metric, opts)
  check_model(model, fname)
  local G, H = M._kv_heads(model), model.cfg.n_heads
  if G ~= H and fname ~= "get_act_patch_block_every" then
    error(("%s: the model has grouped-query attention (n_key_value_heads %d, n_heads %d): its k and v grids " ..
           "have %d heads and do not stack with the others' %d; call the get_act_patch_attn_head_* functions " ..
           "one by one"):format(fname, G, H, G, H), 3)
  end
  local out = {}
  for i, p in ipairs(parts) do
    local r = M["get_act_patch_" .. p[1]](model, corrupted_tokens, clean_cache, metric, opts)
    if p[2] then r = r:permute(p[2]) end
    out[i] = r:contiguous()
  end
  return mi.stack(out, 0)
end

function M.get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, clean_cache, metric, opts)
  return every("get_act_patch_attn_head_all_pos_every",
               {{"attn_head_out_all_pos"}, {"attn_head_q_all_pos"}, {"attn_head_k_all_pos"},
                {"attn_head_v_all_pos"}, {"attn_head_pattern_all_pos"}},
               model, corrupted_tokens, clean_cache, metric, opts)
end

function M.get_act_patch_attn_head_by_pos_every(model, corrupted_tokens, clean_cache, metric, opts)
  -- the pattern grid is [layer, head, dest]: moved to [layer, pos, head] as the others
  return every("get_act_patch_attn_head_by_pos_every",
               {{"attn_head_out_by_pos"}, {"attn_head_q_by_pos"}, {"attn_head_k_by_pos"},
                {"attn_head_v_by_pos"}, {"attn_head_pattern_by_pos", {0, 2, 1}}},
               model, corrupted_tokens, clean_cache, metric, opts)
end

function M.get_act_patch_block_every(model, corrupted_tokens, clean_cache, metric, opts)
  if type(model) == "table" and model.cfg and model.cfg.attn_only then
    error("get_act_patch_block_every: the model is attention-only: it has no hook_mlp_out " ..
          "(use get_act_patch_resid_pre and get_act_patch_attn_out)", 2)
  end
  return every("get_act_patch_block_every", {{"resid_pre"}, {"attn_out"}, {"mlp_out"}},
               model, corrupted_tokens, clean_cache, metric, opts)
end

-- ---------------------------------------------------------------- path patching
-- path_patch(model, clean_tokens, corrupted_tokens, sender, receivers, metric [, opts]) -> number
-- The effect of the sender head(s) on the metric through one path only, as in the IOI work
-- (Wang et al. 2022): the run is on the clean tokens; the sender's output (hook_z) comes from the
-- corrupted run and reaches only the receivers:
--   1. clean run, with every head of the sender's layer and later frozen to its clean output,
--      except the sender, which gets its corrupted output; MLPs run (they are part of the path);
--   2. receivers {layer, head, "q"|"k"|"v"}: their q/k/v from run 1 are patched into a free clean
--      run, whose logits the metric reads. receivers == "logits": the metric reads run 1's logits.
--      With grouped-query attention a receiver's k or v is that of its key/value head, which the
--      other query heads of its group read too.
-- sender: {layer, head}, "L.H", or a list of those (patched together).
-- {layer, head[, comp]} or "L.H[.comp]" -> layer, head, comp (the head part by analysis.parse_head)
local function parse_head(h, model, fname, what)
  local comp
  if type(h) == "string" then
    local base, c = h:match("^(%d+%.%d+)%.(%a+)$")
    if base then h, comp = base, c end
  elseif type(h) == "table" then
    comp = h[3]
    h = tostring(h[1]) .. "." .. tostring(h[2])
  else
    error(fname .. ": " .. what .. " must be {layer, head} or 'L.H', got " .. type(h), 4)
  end
  local l, hd = mi.analysis.parse_head(model, h, fname .. ": " .. what)
  return l, hd, comp
end

local function head_list(x, model, fname, what)
  if type(x) == "string" or (type(x) == "table" and type(x[1]) == "number") then x = {x} end
  if type(x) ~= "table" or #x == 0 then error(fname .. ": " .. what .. " must be a head or a list of heads", 3) end
  local out = {}
  for i, h in ipairs(x) do
    local l, hd, comp = parse_head(h, model, fname, what)
    out[i] = {l, hd, comp}
  end
  return out
end

function M.path_patch(model, clean_tokens, corrupted_tokens, sender, receivers, metric, opts)
  local fname = "path_patch"
  check_model(model, fname)
  if opts ~= nil and (type(opts) ~= "table" or next(opts) ~= nil) then
    error(fname .. ": takes no options (got " .. type(opts) .. ")", 2)
  end
  local clean, corrupted = check_pair(clean_tokens, corrupted_tokens, fname)
  check_fn(metric, fname, "metric")
  local senders = head_list(sender, model, fname, "sender")
  local to_logits = receivers == "logits" or receivers == "resid_final"
  local recv = {}
  if not to_logits then
    recv = head_list(receivers, model, fname, "receiver")
    for _, r in ipairs(recv) do
      if r[3] == nil then error(fname .. ": receiver " .. r[1] .. "." .. r[2] .. " needs a component: {layer, head, 'q'|'k'|'v'}", 2) end
      if r[3] ~= "q" and r[3] ~= "k" and r[3] ~= "v" then
        error(fname .. ": receiver component must be 'q', 'k' or 'v', got " .. tostring(r[3]), 2)
      end
    end
  end
  local L = model.cfg.n_layers
  local first = L
  for _, s in ipairs(senders) do first = math.min(first, s[1]) end
  local last = L - 1
  if not to_logits then
    last = -1
    for _, r in ipairs(recv) do last = math.max(last, r[1]) end
  end
  local value_of = mi.metrics and mi.metrics.is_metric(metric) and function(l) return metric:value(l) end or metric
  -- clean and corrupted outputs of every head from the sender's layer on
  local znames = {}
  for l = first, L - 1 do znames[#znames + 1] = mi.utils.get_act_name("z", l) end
  local _, clean_cache = model:run_with_cache(clean, {names_filter = znames, return_type = "none"})
  local _, corr_cache = model:run_with_cache(corrupted, {names_filter = znames, return_type = "none"})
  -- run 1: frozen heads, corrupted senders
  local hooks = {}
  for l = first, L - 1 do
    local zc, zx = clean_cache[znames[l - first + 1]], corr_cache[znames[l - first + 1]]
    local mine = {}
    for _, s in ipairs(senders) do if s[1] == l then mine[#mine + 1] = s[2] end end
    hooks[#hooks + 1] = {znames[l - first + 1], function(z)
      z:copy_(zc)
      for _, h in ipairs(mine) do z[{{}, {}, h}] = zx[{{}, {}, h}] end
    end}
  end
  if to_logits then
    local logits = model:run_with_hooks(clean, {fwd_hooks = hooks})
    return metric_value(value_of(logits), fname, "metric")
  end
  local keep = {}
  for _, r in ipairs(recv) do keep[#keep + 1] = mi.utils.get_act_name(r[3], r[1]) end
  local frozen = {}
  for _, h in ipairs(hooks) do frozen[#frozen + 1] = h end
  local store = {}
  for _, n in ipairs(keep) do
    frozen[#frozen + 1] = {n, function(act) store[n] = act:clone() end}
  end
  model:run_with_hooks(clean, {fwd_hooks = frozen, return_type = "none", stop_at_layer = last + 1})
  -- run 2: the receivers' inputs from run 1, everything else free
  local patch = {}
  local per = model.cfg.n_heads // M._kv_heads(model)
  for _, r in ipairs(recv) do
    -- grouped-query attention: a receiver's k or v is its key/value head's (shared by its group)
    local n, h = mi.utils.get_act_name(r[3], r[1]), r[3] == "q" and r[2] or r[2] // per
    patch[#patch + 1] = {n, function(act) act[{{}, {}, h}] = store[n][{{}, {}, h}] end}
  end
  local logits = model:run_with_hooks(clean, {fwd_hooks = patch})
  return metric_value(value_of(logits), fname, "metric")
end

-- ---------------------------------------------------------------- attribution patching
-- attribution_patch(model, clean_tokens, corrupted_tokens, metric [, {acts = {...}}]) -> grids
-- The first-order estimate of each activation patch, from one forward on each input and one
-- backward on the corrupted one: (clean - corrupted) . d metric / d activation (at the corrupted
-- run), summed over the batch and the dims a patch covers. metric(logits) must return the value
-- and its gradient with respect to the logits (mi.metrics.logit_diff, ...). The grids estimate
-- patched metric - corrupted metric and are keyed and shaped as the activation-patching
-- functions: resid_pre, resid_mid, attn_out, mlp_out [layer, pos]; attn_head_{out,q,k,v}_by_pos
-- [layer, pos, head]; attn_head_{out,q,k,v}_all_pos [layer, head]; attn_head_pattern_by_pos
-- [layer, head, dest]; attn_head_pattern_dest_src_pos [layer, head, dest, src];
-- attn_head_pattern_all_pos [layer, head]. Also clean_metric and corrupted_metric.
-- acts: which activations ("resid_pre", "resid_mid", "attn_out", "mlp_out", "z", "q", "k", "v",
-- "pattern"); default every one the model has.
local HEAD_KEY = {z = "out", q = "q", k = "k", v = "v"}

function M.attribution_patch(model, clean_tokens, corrupted_tokens, metric, opts)
  local fname = "attribution_patch"
  check_model(model, fname)
  mi.utils.check_opts(fname, opts, {"acts"})
  local clean, corrupted = check_pair(clean_tokens, corrupted_tokens, fname)
  check_fn(metric, fname, "metric")
  local c = model.cfg
  local acts = opts and opts.acts
  if acts == nil then
    acts = {"resid_pre", "attn_out", "z", "q", "k", "v", "pattern"}
    if not c.attn_only then table.insert(acts, 2, "resid_mid"); table.insert(acts, 4, "mlp_out") end
  end
  local names, kinds, fires = {}, {}, {}
  for _, n in ipairs(model._names) do fires[n] = true end
  for _, a in ipairs(acts) do
    if not ({resid_pre = 1, resid_mid = 1, attn_out = 1, mlp_out = 1, z = 1, q = 1, k = 1, v = 1, pattern = 1})[a] then
      error(fname .. ": unknown activation '" .. tostring(a) .. "' (resid_pre, resid_mid, attn_out, mlp_out, z, q, k, v, pattern)", 2)
    end
    for l = 0, c.n_layers - 1 do
      local n = mi.utils.get_act_name(a, l)
      if not fires[n] then error(fname .. ": the model has no " .. n, 2) end
      names[#names + 1] = n
    end
    kinds[#kinds + 1] = a
  end
  local wrapped = function(logits)
    local v, g = metric(logits)
    if not mi.is_tensor(g) then
      error(fname .. ": metric must return its value and its gradient with respect to the logits " ..
            "(as mi.metrics.logit_diff does), it returned a " .. type(g) .. " as the gradient", 0)
    end
    return v, g
  end
  local clean_logits, cc = model:run_with_cache(clean, {names_filter = names})
  local corr_logits, xc = model:run_with_cache(corrupted, {names_filter = names, incl_bwd = true, grad_output = wrapped})
  local out = {clean_metric = metric_value((metric(clean_logits)), fname, "metric"),
               corrupted_metric = metric_value((metric(corr_logits)), fname, "metric")}
  for _, a in ipairs(kinds) do
    local per = {}
    for l = 0, c.n_layers - 1 do
      local n = mi.utils.get_act_name(a, l)
      per[l + 1] = (cc[n] - xc[n]) * xc[n .. "_grad"]
    end
    if a == "pattern" then                                   -- [B, H, dest, src]
      local full = {}
      for l, t in ipairs(per) do full[l] = t:sum(0) end      -- [H, dest, src]
      out.attn_head_pattern_dest_src_pos = mi.stack(full, 0)
      out.attn_head_pattern_by_pos = out.attn_head_pattern_dest_src_pos:sum(-1)
      out.attn_head_pattern_all_pos = out.attn_head_pattern_by_pos:sum(-1)
    elseif HEAD_KEY[a] then                                  -- [B, P, H, dh]
      local by = {}
      for l, t in ipairs(per) do by[l] = t:sum({0, 3}) end   -- [P, H]
      local key = "attn_head_" .. HEAD_KEY[a]
      out[key .. "_by_pos"] = mi.stack(by, 0)
      out[key .. "_all_pos"] = out[key .. "_by_pos"]:sum(1)
    else                                                     -- [B, P, d]
      local by = {}
      for l, t in ipairs(per) do by[l] = t:sum({0, 2}) end   -- [P]
      out[a] = mi.stack(by, 0)
    end
  end
  return out
end

-- mi.patching: the functions above, each naming itself in its errors (mi.utils.name_errors; M
-- keeps the unwrapped ones for the calls between them)
function M._install(m)
  mi = m
  m.patching = m.utils.name_errors_table(M, "mi.patching.")
  package.loaded["miwb.patching"] = m.patching
end

return M
