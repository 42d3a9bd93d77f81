-- mi.SAE: sparse autoencoders in SAELens's format, and spliced into a model as SAELens's
-- HookedSAETransformer does.
--
--   local sae = mi.SAE.load(folder [, {norm_scaling_factor = s}])
--       folder: cfg.json + sae_weights.safetensors (W_enc [d_in, d_sae], b_enc [d_sae],
--       W_dec [d_sae, d_in], b_dec [d_in], threshold [d_sae] for jumprelu). cfg.json as SAELens
--       6 writes it (hook_name in "metadata") or as older versions (hook_point, activation_fn_str,
--       normalize_activations as a boolean, topk's k in activation_fn_kwargs).
--   sae.cfg: architecture ("standard" | "jumprelu" | "topk"), d_in, d_sae, k, apply_b_dec_to_input,
--       normalize_activations ("none" | "expected_average_only_in" | "constant_norm_rescale" |
--       "layer_norm"), reshape_activations ("none" | "hook_z"), hook_name, metadata
--   sae.W_enc, b_enc, W_dec, b_dec, threshold
--   sae:encode(x) [..., d_in] (or [..., H, dh] for hook_z) -> feature activations [..., d_sae]
--   sae:decode(f) -> [..., d_in] (reshaped back for hook_z); sae:forward(x) == decode(encode(x))
--   sae:save(folder)   cfg.json (SAELens 6 layout) + sae_weights.safetensors
--   mi.SAE.new(cfg, weights)   from a table of fields and a table of tensors (checked as load checks)
--   mi.SAE.train(acts [n, d_in], {d_sae =, k = | l1_coeff =, steps, batch, lr, ...}) -> sae, history
--
--   model:add_sae(sae, {use_error_term = true})   splices it in at sae.cfg.hook_name; its hook
--       points "<hook>.hook_sae_input", hook_sae_acts_pre, hook_sae_acts_post, hook_sae_recons,
--       hook_sae_error (with the error term), hook_sae_output are cached and hooked like the
--       model's own. With the error term the point's output is recons + (x - recons of an
--       unhooked pass): the model computes what it did without the SAE, and edits of the features
--       reach it. model:reset_saes(), model:saes().
--
-- The formulas are SAELens's (sae_lens/saes/*.py): sae_in = norm_in(x) - b_dec * apply_b_dec_to_input;
-- hidden_pre = sae_in @ W_enc + b_enc; standard: relu(hidden_pre); jumprelu: relu(hidden_pre) *
-- (hidden_pre > threshold); topk: the k largest of hidden_pre, relu'd, others 0; recons = f @ W_dec +
-- b_dec, then norm_out. constant_norm_rescale scales x by sqrt(d_in) / ||x|| and divides the
-- reconstruction by it; layer_norm standardizes x (torch's unbiased std, eps 1e-5) and undoes it;
-- expected_average_only_in is the identity at run time, as in SAELens (its factor lives outside the
-- SAE): pass {norm_scaling_factor = s} to fold it into the weights as SAELens's from_pretrained does.
local M = {}

local mi

local SAE = {}
local MT = {__index = SAE, __name = "miwb.SAE"}
MT.__tostring = function(s)
  return string.format("SAE(%s, d_in %d, d_sae %d, hook %s)", s.cfg.architecture, s.cfg.d_in, s.cfg.d_sae,
                       tostring(s.cfg.hook_name))
end

local ARCH = {standard = true, jumprelu = true, topk = true}
local NORM = {none = true, expected_average_only_in = true, constant_norm_rescale = true, layer_norm = true}

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

local function is_int(v) return math.type(v) == "integer" or (type(v) == "number" and v == math.floor(v)) end

-- the SAELens config (any version) -> our cfg; errors name `where`
local function normalize_cfg(raw, where)
  if type(raw) ~= "table" then error(where .. ": the config must be a JSON object", 3) end
  local null = mi.json and mi.json.null
  local function get(k) local v = raw[k]; if v == null then return nil end return v end
  local meta = type(raw.metadata) == "table" and raw.metadata or {}
  local c = {}
  c.architecture = get("architecture") or "standard"
  if not ARCH[c.architecture] then
    error(where .. ": architecture '" .. tostring(c.architecture) .. "' is not supported (standard, jumprelu, topk)", 3)
  end
  for _, k in ipairs({"d_in", "d_sae"}) do
    local v = get(k)
    if not is_int(v) or v <= 0 then error(where .. ": " .. k .. " must be a positive integer, got " .. tostring(v), 3) end
    c[k] = math.tointeger(v)
  end
  local act = get("activation_fn") or get("activation_fn_str")
  if act == "topk" and c.architecture == "standard" then c.architecture = "topk" end
  if c.architecture == "topk" then
    local k = get("k")
    if k == nil and type(raw.activation_fn_kwargs) == "table" then k = raw.activation_fn_kwargs.k end
    if not is_int(k) or k <= 0 or k > c.d_sae then
      error(where .. ": topk needs k, an integer in 1..d_sae (" .. c.d_sae .. "), got " .. tostring(k), 3)
    end
    c.k = math.tointeger(k)
  elseif act ~= nil and act ~= "relu" and act ~= "topk" then
    error(where .. ": activation_fn '" .. tostring(act) .. "' is not supported (relu, topk)", 3)
  end
  local ab = get("apply_b_dec_to_input")
  if ab == nil then ab = true end
  if type(ab) ~= "boolean" then error(where .. ": apply_b_dec_to_input must be a boolean", 3) end
  c.apply_b_dec_to_input = ab
  local na = get("normalize_activations")
  if na == nil or na == false then na = "none" elseif na == true then na = "expected_average_only_in" end
  if not NORM[na] then
    error(where .. ": normalize_activations '" .. tostring(na) ..
          "' is not supported (none, expected_average_only_in, constant_norm_rescale, layer_norm)", 3)
  end
  c.normalize_activations = na
  c.hook_name = get("hook_name") or (meta.hook_name ~= null and meta.hook_name) or get("hook_point")
  if c.hook_name ~= nil and type(c.hook_name) ~= "string" then error(where .. ": hook_name must be a string", 3) end
  local head = get("hook_head_index") or get("hook_point_head_index") or (meta.hook_head_index ~= null and meta.hook_head_index or nil)
  if head ~= nil then error(where .. ": SAEs on one head (hook_head_index " .. tostring(head) .. ") are not supported", 3) end
  local rs = get("reshape_activations")
  if rs == nil then rs = (c.hook_name and c.hook_name:find("hook_z", 1, true)) and "hook_z" or "none" end
  if rs ~= "none" and rs ~= "hook_z" then error(where .. ": reshape_activations must be 'none' or 'hook_z', got " .. tostring(rs), 3) end
  c.reshape_activations = rs
  c.metadata = meta
  return c
end

local function check_weights(c, w, where)
  local want = {W_enc = {c.d_in, c.d_sae}, b_enc = {c.d_sae}, W_dec = {c.d_sae, c.d_in}, b_dec = {c.d_in}}
  if c.architecture == "jumprelu" then want.threshold = {c.d_sae} end
  local out = {}
  for name, shape in pairs(want) do
    local t = w[name]
    if t == nil then error(where .. ": " .. name .. " is missing (" .. c.architecture .. " SAEs have " ..
                           (c.architecture == "jumprelu" and "W_enc, b_enc, W_dec, b_dec, threshold" or "W_enc, b_enc, W_dec, b_dec") .. ")", 3) end
    if not mi.is_tensor(t) then error(where .. ": " .. name .. " is a " .. type(t) .. ", not a tensor", 3) end
    if table.concat(t:shape(), ",") ~= table.concat(shape, ",") then
      error(string.format("%s: %s is %s, but d_in %d and d_sae %d make it [%s]", where, name, shape_str(t),
                          c.d_in, c.d_sae, table.concat(shape, ",")), 3)
    end
    out[name] = t:float():contiguous()
  end
  for name in pairs(w) do
    if not want[name] and name ~= "scaling_factor" then
      error(where .. ": unexpected tensor '" .. tostring(name) .. "' for a " .. c.architecture .. " SAE", 3)
    end
  end
  if w.scaling_factor ~= nil then
    local sf = w.scaling_factor
    if not mi.is_tensor(sf) or not sf:allclose(mi.ones(sf:shape())) then
      error(where .. ": a scaling_factor other than ones (finetuning_scaling_factor) is not supported", 3)
    end
  end
  return out
end

function M.new(cfg, weights, where)
  if where ~= nil and type(where) ~= "string" then
    error("SAE.new: where (the name its messages start with) must be a string, got " .. mi.utils.typename(where), 2)
  end
  where = where or "SAE.new"
  local c = normalize_cfg(cfg, where)
  if type(weights) ~= "table" then error(where .. ": weights must be a table of tensors", 2) end
  local w = check_weights(c, weights, where)
  local self = setmetatable({cfg = c}, MT)
  for k, v in pairs(w) do self[k] = v end
  return self
end

function M.load(folder, opts)
  if type(folder) ~= "string" then error("SAE.load: folder must be a path, got " .. type(folder), 2) end
  mi.utils.check_opts("SAE.load", opts, {"norm_scaling_factor"})
  local cfg_path, w_path = folder .. "/cfg.json", folder .. "/sae_weights.safetensors"
  local ok, raw = pcall(mi.json.read, cfg_path)
  if not ok or raw == nil then error("SAE.load: " .. cfg_path .. ": " .. tostring(raw), 2) end
  local ok2, sd, err = pcall(mi.load, w_path)
  if not ok2 then error("SAE.load: " .. tostring(sd), 2) end
  if not sd then error("SAE.load: " .. tostring(err), 2) end
  local ok3, sae = pcall(M.new, raw, sd, "SAE.load: " .. folder)
  if not ok3 then error(sae, 2) end
  local s = opts and opts.norm_scaling_factor
  if s ~= nil then
    if type(s) ~= "number" or s <= 0 then error("SAE.load: norm_scaling_factor must be a positive number", 2) end
    sae:fold_activation_norm_scaling_factor(s)
  end
  return sae
end

local function check_self(self, fname)
  if getmetatable(self) ~= MT then error("SAE:" .. fname .. ": call it with a colon (sae:" .. fname .. "(...))", 3) end
end

-- SAELens's fold: the SAE then takes unscaled activations
function SAE:fold_activation_norm_scaling_factor(s)
  check_self(self, "fold_activation_norm_scaling_factor")
  if type(s) ~= "number" or not (s > 0 and s < math.huge) then
    error("SAE:fold_activation_norm_scaling_factor: the scaling factor must be a positive number, got " ..
          tostring(s), 2)
  end
  self.W_enc = self.W_enc * s
  self.W_dec = self.W_dec / s
  self.b_dec = self.b_dec / s
  self.cfg.normalize_activations = "none"
  return self
end

-- x [..., d_in] (hook_z: [..., H, dh]) -> flat input, the trailing shape to restore
function SAE:_reshape_in(x, fname)
  if not mi.is_tensor(x) then error("SAE:" .. fname .. ": x must be a tensor, got " .. type(x), 3) end
  local c = self.cfg
  local tail
  if c.reshape_activations == "hook_z" and x:dim() >= 2 and x:size(-1) ~= c.d_in then
    tail = {x:size(-2), x:size(-1)}
    local shape = x:shape()
    shape[#shape] = nil
    shape[#shape] = tail[1] * tail[2]
    x = x:reshape(shape)
  end
  if x:dim() == 0 or x:size(-1) ~= c.d_in then
    error(string.format("SAE:%s: x is %s, its last dim must be d_in %d%s", fname, shape_str(x), c.d_in,
                        c.reshape_activations == "hook_z" and " (or [..., n_heads, d_head] with n_heads * d_head = d_in)" or ""), 3)
  end
  return x:float(), tail
end

-- fire(name, act) -> act: the hook points of a splice (identity outside a model)
local function nofire(_, a) return a end

function SAE:_encode(x, fire)
  local c = self.cfg
  x = fire("hook_sae_input", x)
  local state = {}
  if c.normalize_activations == "constant_norm_rescale" then
    state.coeff = (1 / x:norm(2, -1, true)) * math.sqrt(c.d_in)
    x = x * state.coeff
  elseif c.normalize_activations == "layer_norm" then
    state.mu = x:mean(-1, true)
    local xc = x - state.mu
    state.std = xc:std(-1, {keepdim = true})
    x = xc / (state.std + 1e-5)
  end
  if c.apply_b_dec_to_input then x = x - self.b_dec end
  local pre = fire("hook_sae_acts_pre", x:matmul(self.W_enc) + self.b_enc)
  local f
  if c.architecture == "standard" then
    f = pre:relu()
  elseif c.architecture == "jumprelu" then
    f = pre:relu() * pre:gt(self.threshold):float()
  else
    local vals, idx = pre:topk(c.k)
    f = mi.zeros(pre:shape())
    f:scatter_add_(-1, idx, vals:relu())
  end
  return fire("hook_sae_acts_post", f), state
end

function SAE:_decode(f, state, fire, tail)
  local c = self.cfg
  local r = fire("hook_sae_recons", f:matmul(self.W_dec) + self.b_dec)
  if c.normalize_activations == "constant_norm_rescale" then
    if not state.coeff then error("SAE:decode: constant_norm_rescale needs the norms of the input: call sae:encode first", 3) end
    r = r / state.coeff
  elseif c.normalize_activations == "layer_norm" then
    if not state.mu then error("SAE:decode: layer_norm needs the input's statistics: call sae:encode first", 3) end
    r = r * state.std + state.mu
  end
  if tail then
    local shape = r:shape()
    shape[#shape] = tail[1]
    shape[#shape + 1] = tail[2]
    r = r:reshape(shape)
  end
  return r
end

function SAE:encode(x)
  check_self(self, "encode")
  local flat, tail = self:_reshape_in(x, "encode")
  local f, state = self:_encode(flat, nofire)
  self._last = {state = state, tail = tail}   -- for decode, as SAELens keeps its norm coefficient
  return f
end

function SAE:decode(f)
  check_self(self, "decode")
  if not mi.is_tensor(f) or f:dim() == 0 or f:size(-1) ~= self.cfg.d_sae then
    error("SAE:decode: f must be [..., d_sae " .. self.cfg.d_sae .. "], got " ..
          (mi.is_tensor(f) and shape_str(f) or type(f)), 2)
  end
  local last = self._last or {state = {}}
  return self:_decode(f:float(), last.state, nofire, last.tail)
end

function SAE:forward(x)
  check_self(self, "forward")
  local flat, tail = self:_reshape_in(x, "forward")
  local f, state = self:_encode(flat, nofire)
  return self:_decode(f, state, nofire, tail)
end

function SAE:save(folder)
  check_self(self, "save")
  if type(folder) ~= "string" then error("SAE:save: folder must be a path (a string), got " .. mi.utils.typename(folder), 2) end
  if folder:find("\0", 1, true) then error("SAE:save: folder must be a path without NUL bytes", 2) end
  local ok, err = mi.sys.mkdir(folder)
  if not ok then error("SAE:save: cannot create " .. folder .. ": " .. tostring(err), 2) end
  local c = self.cfg
  local meta = {}
  for k, v in pairs(c.metadata or {}) do meta[k] = v end
  meta.hook_name = c.hook_name
  meta.sae_lens_version = meta.sae_lens_version or "6.0.0"
  local cfg = {architecture = c.architecture, d_in = c.d_in, d_sae = c.d_sae, dtype = "float32", device = "cpu",
               apply_b_dec_to_input = c.apply_b_dec_to_input, normalize_activations = c.normalize_activations,
               reshape_activations = c.reshape_activations, k = c.k, metadata = meta}
  local w = {W_enc = self.W_enc, b_enc = self.b_enc, W_dec = self.W_dec, b_dec = self.b_dec, threshold = self.threshold}
  mi.save(folder .. "/sae_weights.safetensors", w)
  mi.json.write(folder .. "/cfg.json", cfg, {indent = true})
  return folder
end

-- ---------------------------------------------------------------- training
-- mi.SAE.train(acts, opts) -> sae, history: trains an SAE on activations acts [N, d_in] with Adam,
-- in Lua over tensors (the training core of core/train.c trains transformers, not SAEs); the
-- gradients are written out by hand below (checked against finite differences in test_sae.lua).
--   opts: d_sae (required); k (a top-k SAE, MSE loss) or l1_coeff (a standard ReLU SAE, MSE +
--   l1_coeff * sum_i f_i ||W_dec[i]||); steps (1000), batch (256), lr (1e-3), seed (0),
--   hook_name (written into the config), every (50) and callback(step, sae, info) with
--   info = {mse, l0, fvu}.
-- history: one {step, mse, l0, fvu} per `every` steps. b_dec starts at the mean of acts, W_dec
-- rows at norm 0.1 in random directions, W_enc = W_dec^T, b_enc = 0.
local TRAIN_OPTS = {"d_sae", "k", "l1_coeff", "steps", "batch", "lr", "seed", "hook_name", "every", "callback"}

-- loss and gradients of one batch x [N, d]: returns loss, grads {W_enc, b_enc, W_dec, b_dec}, f
function SAE:_loss_grad(x, l1)
  local c = self.cfg
  local N = x:size(0)
  local sae_in = c.apply_b_dec_to_input and (x - self.b_dec) or x
  local pre = sae_in:matmul(self.W_enc) + self.b_enc                 -- [N, S]
  local f
  if c.architecture == "topk" then
    local vals, idx = pre:topk(c.k)
    f = mi.zeros(pre:shape())
    f:scatter_add_(-1, idx, vals:relu())
  else
    f = pre:relu()
  end
  local e = f:matmul(self.W_dec) + self.b_dec - x                     -- [N, d]
  local mse = (e * e):sum():item() / N
  local loss = mse
  local dxh = e * (2 / N)
  local dW_dec = f:t():matmul(dxh)                                    -- [S, d]
  local df = dxh:matmul(self.W_dec:t())                               -- [N, S]
  if l1 then
    local norms = self.W_dec:norm(2, -1)                              -- [S]
    loss = loss + l1 * (f * norms):sum():item() / N
    df = df + norms * (l1 / N)
    dW_dec = dW_dec + (self.W_dec / norms:unsqueeze(-1)) * (f:sum(0) * (l1 / N)):unsqueeze(-1)
  end
  local dpre = df * f:gt(0):float()
  local dsae_in = dpre:matmul(self.W_enc:t())
  local db_dec = dxh:sum(0)
  if c.apply_b_dec_to_input then db_dec = db_dec - dsae_in:sum(0) end
  return loss, {W_enc = sae_in:t():matmul(dpre), b_enc = dpre:sum(0), W_dec = dW_dec, b_dec = db_dec}, f, mse
end

function M.train(acts, opts)
  mi.utils.check_opts("SAE.train", opts, TRAIN_OPTS)
  opts = opts or {}
  if not mi.is_tensor(acts) or acts:dim() ~= 2 then
    error("SAE.train: acts must be a tensor [n, d_in], got " .. (mi.is_tensor(acts) and shape_str(acts) or type(acts)), 2)
  end
  local N, d = acts:size(0), acts:size(1)
  local S = opts.d_sae
  if math.type(S) ~= "integer" or S <= 0 then error("SAE.train: opts.d_sae must be a positive integer", 2) end
  if (opts.k == nil) == (opts.l1_coeff == nil) then error("SAE.train: give opts.k (top-k) or opts.l1_coeff (ReLU + L1), one of them", 2) end
  local steps, batch, lr = opts.steps or 1000, math.min(opts.batch or 256, N), opts.lr or 1e-3
  local g = mi.Generator(opts.seed or 0)
  local W_dec = mi.randn({S, d}, g)
  W_dec = W_dec / W_dec:norm(2, -1, true) * 0.1
  acts = acts:float():contiguous()
  local sae = M.new({architecture = opts.k and "topk" or "standard", k = opts.k, d_in = d, d_sae = S,
                     hook_name = opts.hook_name},
                    {W_enc = W_dec:t():contiguous(), b_enc = mi.zeros(S), W_dec = W_dec, b_dec = acts:mean(0)}, "SAE.train")
  local names = {"W_enc", "b_enc", "W_dec", "b_dec"}
  local m, v = {}, {}
  for _, n in ipairs(names) do m[n] = mi.zeros(sae[n]:shape()); v[n] = mi.zeros(sae[n]:shape()) end
  local b1, b2, eps = 0.9, 0.999, 1e-8
  local var_total = ((acts - acts:mean(0)) ^ 2):sum(-1):mean():item()
  local history, every = {}, opts.every or 50
  for step = 1, steps do
    local idx = mi.randint(0, N, {batch}, g)
    local x = acts:index_select(0, idx)
    local _, grads, f, mse = sae:_loss_grad(x, opts.l1_coeff)
    for _, n in ipairs(names) do
      m[n] = m[n] * b1 + grads[n] * (1 - b1)
      v[n] = v[n] * b2 + grads[n] * grads[n] * (1 - b2)
      local mh = m[n] / (1 - b1 ^ step)
      local vh = v[n] / (1 - b2 ^ step)
      sae[n] = sae[n] - mh / (vh:sqrt() + eps) * lr
    end
    if step % every == 0 or step == steps then
      local info = {step = step, mse = mse, l0 = f:gt(0):float():sum(-1):mean():item(), fvu = mse / var_total}
      history[#history + 1] = info
      if opts.callback then opts.callback(step, sae, info) end
    end
  end
  return sae, history
end

-- ---------------------------------------------------------------- splicing into a model
local SUBS = {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error",
              "hook_sae_output"}

-- the width a hook point's last dim (or last two, for hook_z) has in this model
local function point_width(model, name)
  local c = model.cfg
  if name:match("attn%.hook_z$") then return c.n_heads * c.d_head, "[batch, pos, " .. c.n_heads .. ", " .. c.d_head .. "]" end
  if name:match("mlp%.hook_pre$") or name:match("mlp%.hook_post$") then return c.d_mlp, "[batch, pos, " .. tostring(c.d_mlp) .. "]" end
  if name:match("hook_q$") or name:match("hook_k$") or name:match("hook_v$") or name:match("hook_result$")
     or name:match("hook_pattern$") or name:match("hook_attn_scores$") or name:match("hook_scale$") then
    return nil
  end
  return c.d_model, "[batch, pos, " .. c.d_model .. "]"
end

function M._add(model, sae, opts)
  if getmetatable(sae) ~= MT then error("add_sae: expected an SAE (mi.SAE.load), got " .. type(sae), 3) end
  mi.utils.check_opts("add_sae", opts, {"use_error_term"})
  local use_error = opts and opts.use_error_term or false
  local point = sae.cfg.hook_name
  if type(point) ~= "string" then error("add_sae: the SAE's config names no hook (hook_name)", 3) end
  if not model._has[point] then error("add_sae: '" .. point .. "' is not a hook point of this model", 3) end
  local width, shape = point_width(model, point)
  if not width then error("add_sae: SAEs on " .. point .. " are not supported (residual, attn_out, mlp, hook_z)", 3) end
  if width ~= sae.cfg.d_in then
    error(string.format("add_sae: the SAE's d_in %d does not match %s %s", sae.cfg.d_in, point, shape), 3)
  end
  if point:match("attn%.hook_z$") and sae.cfg.reshape_activations ~= "hook_z" then
    error("add_sae: an SAE on " .. point .. " needs reshape_activations = 'hook_z'", 3)
  end
  local subs = {}
  for _, s in ipairs(SUBS) do
    if use_error or s ~= "hook_sae_error" then subs[#subs + 1] = point .. "." .. s end
  end
  local function fire(sub, act) return model:_splice_fire(point .. "." .. sub, act) end
  local function run(act)
    local r = model._splice_run
    local wanted = not use_error
    if r then
      for _, s in ipairs(subs) do if r.hooks[s] or r.cache_names[s] then wanted = true end end
    end
    -- with the error term and nothing reading or editing the SAE, the output is the input
    if not wanted then return nil end
    local x, tail = sae:_reshape_in(act, "add_sae")
    local f, state = sae:_encode(x, fire)
    local out = sae:_decode(f, state, fire, tail)
    if use_error then
      local f0, st0 = sae:_encode(x, nofire)
      local err = fire("hook_sae_error", act - sae:_decode(f0, st0, nofire, tail))
      out = out + err
    end
    return fire("hook_sae_output", out)
  end
  model:_add_splice(point, subs, run)
  model._saes = model._saes or {}
  model._saes[#model._saes + 1] = {sae = sae, point = point}
  return model
end

function M._install(m)
  mi = m
  mi.SAE = setmetatable({load = M.load, new = M.new, train = M.train}, {__name = "miwb.SAE class"})
end

return M
