-- mi.utils: TransformerLens's utils that scripts reach for (transformer_lens/utils.py).
--
--   utils.get_act_name(name, layer, layer_type)   full hook names from shorthands
--       ("pattern", 0) -> "blocks.0.attn.hook_pattern"; ("embed") -> "hook_embed";
--       ("scale", 4, "ln1") -> "blocks.4.ln1.hook_scale"; ("scale") -> "ln_final.hook_scale";
--       aliases attn -> pattern, attn_logits -> attn_scores, key/query/value -> k/q/v,
--       mlp_pre/mlp_post -> pre/post; compact forms "k6", "pre5", "scale4ln1", "resid_pre3".
--       A name that already holds a "." or starts with "hook_" is returned as it is.
--   utils.lm_cross_entropy_loss(logits, tokens, attention_mask, per_token)
--   utils.get_attention_mask(lengths, P, padding_side)   [B, P] int64 from token counts
--   utils.is_square(x), utils.is_lower_triangular(x)   2-D square (and equal to its tril)
--   utils.calc_fan_in_and_fan_out(t)   TransformerLens's convention: [n] -> 1, n; [in, out];
--       [n_heads, d_model, d_head] -> d_model, n_heads * d_head
--   utils.init_xavier_uniform_(p, gain), init_xavier_normal_(p, gain),
--   utils.init_kaiming_uniform_(p, a, nonlinearity, gain, mode), init_kaiming_normal_(...)
--       fill p in place (and return it) as TransformerLens does; every argument also by name,
--       with {generator = G} or {seed = S} for the random numbers
--   utils.check_opts(fname, opts, allowed)   the one options-table check of the API: raises
--       "fname: unknown option 'sed' (options: dtype, seed)" for a key not in allowed (a list
--       of names or a set {name = true}); nil passes; returns opts
local U = {}

local mi

local layer_type_alias = {a = "attn", m = "mlp", b = "", block = "", blocks = "", attention = "attn"}
local act_name_alias = {attn = "pattern", attn_logits = "attn_scores", key = "k", query = "q", value = "v",
                        mlp_pre = "pre", mlp_mid = "mid", mlp_post = "post"}
local attn_names = {k = true, v = true, q = true, z = true, rot_k = true, rot_q = true, result = true,
                    pattern = true, attn_scores = true}
local mlp_names = {pre = true, post = true, mid = true, pre_linear = true}

function U.get_act_name(name, layer, layer_type)
  if type(name) ~= "string" then error("get_act_name: name must be a string, got " .. type(name), 2) end
  if (name:find(".", 1, true) or name:sub(1, 5) == "hook_") and layer == nil and layer_type == nil then
    return name
  end
  -- compact forms: letters, digits, optional letters ("k6", "scale4ln1")
  local base, num, rest = name:match("^([a-z_]-)(%d+)([a-z]?.*)$")
  if base and base ~= "" and layer == nil then
    name, layer = base, tonumber(num)
    if rest ~= "" then layer_type = rest end
  end
  name = act_name_alias[name] or name
  local full = ""
  if layer ~= nil then
    if math.type(layer) ~= "integer" then
      if type(layer) == "number" and layer == math.floor(layer) then layer = math.tointeger(layer)
      else error("get_act_name: layer must be an integer, got " .. tostring(layer), 2) end
    end
    full = "blocks." .. layer .. "."
  end
  if attn_names[name] then layer_type = "attn"
  elseif mlp_names[name] then layer_type = "mlp"
  elseif layer_type ~= nil and layer_type_alias[layer_type] then layer_type = layer_type_alias[layer_type] end
  if layer_type and layer_type ~= "" then full = full .. layer_type .. "." end
  full = full .. "hook_" .. name
  if (name == "scale" or name == "normalized") and layer == nil then full = "ln_final." .. full end
  return full
end

-- mean (or per-token) next-token cross-entropy of logits [B, P, V] against tokens [B, P]; with
-- an attention mask, predictions whose position or next position is padding count 0 and are
-- left out of the mean (TransformerLens's lm_cross_entropy_loss)
function U.lm_cross_entropy_loss(logits, tokens, attention_mask, per_token)
  local P = logits:size(1)
  local lp = logits:narrow(1, 0, P - 1):log_softmax(-1)
  local tgt = tokens:narrow(1, 1, P - 1):unsqueeze(-1)
  local nll = -(lp:gather(-1, tgt):squeeze(-1))
  if attention_mask then
    local m = attention_mask:narrow(1, 0, P - 1):float() * attention_mask:narrow(1, 1, P - 1):float()
    nll = nll * m
    if per_token then return nll end
    return nll:sum() / m:sum()
  end
  if per_token then return nll end
  return nll:mean()
end

-- [B, P] int64 mask with lengths[b] ones on the right (padding_side "left") or the left
-- ("right", the default)
function U.get_attention_mask(lengths, P, padding_side)
  local rows = {}
  for b, n in ipairs(lengths) do
    local r = {}
    for p = 1, P do
      if padding_side == "left" then r[p] = (p > P - n) and 1 or 0 else r[p] = (p <= n) and 1 or 0 end
    end
    rows[b] = r
  end
  return mi.tensor(rows, "int64")
end

-- TransformerLens's logging.warning: utils.warn(msg) hands msg to utils.warn_handler, which
-- prints "miwb warning: msg" on stderr; set mi.utils.warn_handler to a function (or false, to
-- drop warnings) to change that.
function U.warn_handler(msg)
  io.stderr:write("miwb warning: ", msg, "\n")
end

function U.warn(msg)
  if U.warn_handler then U.warn_handler(msg) end
end

-- Methods called with a dot (model.to_str_tokens(t), hook.layer(), cache.remove_batch_dim())
-- get `self` wrong; Lua would fail later with a confusing message. colon_methods wraps every
-- function of the table `methods` (in place; names starting with "__" are left alone) so that a
-- call whose first argument is not an object of the class raises
--   "model.to_str_tokens: call it with a colon: model:to_str_tokens(...)"
-- (var is how the docs call such an object). is_instance(x) says whether x is one.
-- colon_target(f) returns the function a wrapper calls (help(f) reads its source).
local colon_target = setmetatable({}, {__mode = "k"})

function U.colon_methods(methods, is_instance, var)
  for name, f in pairs(methods) do
    if type(f) == "function" and type(name) == "string" and name:sub(1, 2) ~= "__" and not colon_target[f] then
      local function method(self, ...)
        if not is_instance(self) then
          error(string.format("%s.%s: call it with a colon: %s:%s(...)", var, name, var, name), 2)
        end
        return f(self, ...)
      end
      colon_target[method] = f
      methods[name] = method
    end
  end
  return methods
end

function U.colon_target(f) return colon_target[f] end

-- ------------------------------------------------------------------ tensor utils

function U.is_square(x)
  return x:dim() == 2 and x:size(0) == x:size(1)
end

function U.is_lower_triangular(x)
  return U.is_square(x) and x:equal(x:tril())
end

function U.calc_fan_in_and_fan_out(t)
  local s = t:shape()
  if #s == 1 then return 1, s[1] end
  if #s == 2 then return s[1], s[2] end
  if #s == 3 then return s[2], s[1] * s[3] end
  error(("calc_fan_in_and_fan_out: defined for 1, 2 or 3 dims, got shape [%s]"):format(table.concat(s, ",")), 2)
end

-- torch.nn.init.calculate_gain, which TransformerLens's kaiming inits use
local function calculate_gain(fname, nonlinearity, a)
  local unit = {linear = true, conv1d = true, conv2d = true, conv3d = true, conv_transpose1d = true,
                conv_transpose2d = true, conv_transpose3d = true, sigmoid = true}
  if unit[nonlinearity] then return 1 end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "leaky_relu" then return math.sqrt(2 / (1 + a * a)) end
  if nonlinearity == "selu" then return 3 / 4 end
  error(("%s: unsupported nonlinearity '%s' (linear, conv1d.., sigmoid, tanh, relu, leaky_relu, selu)")
        :format(fname, tostring(nonlinearity)), 3)
end

-- p filled in place with U(-bound, bound) or N(0, std^2) numbers from the generator or seed
local function fill_uniform(p, bound, generator, seed)
  return p:copy_(mi.rand(p:shape(), {generator = generator, seed = seed}) * (2 * bound) - bound)
end
local function fill_normal(p, std, generator, seed)
  return p:copy_(mi.randn(p:shape(), {generator = generator, seed = seed}) * std)
end

local function kaiming(fname, fill, scale, p, ...)
  local a, nonlinearity, gain, mode, generator, seed =
    mi._kwargs(fname, {"a", "nonlinearity", "gain", "mode", "generator", "seed"}, ...)
  a, nonlinearity, gain, mode = a or 0, nonlinearity or "relu", gain or 1, mode or "fan_in"
  if mode ~= "fan_in" and mode ~= "fan_out" then
    error(("%s: mode must be 'fan_in' or 'fan_out', got %s"):format(fname, tostring(mode)), 3)
  end
  local fan_in, fan_out = U.calc_fan_in_and_fan_out(p)
  gain = gain * calculate_gain(fname, nonlinearity, a)
  return fill(p, gain * math.sqrt(scale / (mode == "fan_in" and fan_in or fan_out)), generator, seed)
end

local function xavier(fname, fill, scale, p, ...)
  local gain, generator, seed = mi._kwargs(fname, {"gain", "generator", "seed"}, ...)
  local fan_in, fan_out = U.calc_fan_in_and_fan_out(p)
  return fill(p, (gain or 1) * math.sqrt(scale / (fan_in + fan_out)), generator, seed)
end

-- uniform bounds are sqrt(3) standard deviations
function U.init_xavier_uniform_(p, ...) return xavier("init_xavier_uniform_", fill_uniform, 6, p, ...) end
function U.init_xavier_normal_(p, ...) return xavier("init_xavier_normal_", fill_normal, 2, p, ...) end
function U.init_kaiming_uniform_(p, ...) return kaiming("init_kaiming_uniform_", fill_uniform, 3, p, ...) end
function U.init_kaiming_normal_(p, ...) return kaiming("init_kaiming_normal_", fill_normal, 1, p, ...) end

function U._install(m)
  mi = m
  U.check_opts = m._check_opts -- written in C (lua/ltensor.c), shared with the C bindings
  -- the tokenizer's methods are C functions in its metatable's __index table
  local mt = debug.getregistry()["miwb.Tokenizer"]
  if type(mt) == "table" and type(mt.__index) == "table" then
    U.colon_methods(mt.__index, function(x) return getmetatable(x) == mt end, "tok")
  end
end

return U
