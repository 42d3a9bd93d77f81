-- mi.metrics: metrics of a model's logits for patching and gradients, each knowing its gradient.
--
--   local m = mi.metrics.logit_diff(answer_tokens, wrong_tokens, pos)
--       mean over the batch of logits[b, pos, answer[b]] - logits[b, pos, wrong[b]]
--   local m = mi.metrics.logprob(token, pos)
--       mean over the batch of log_softmax(logits[b, pos])[token[b]]
--   tokens: a number (every row), a Lua list or an int64 tensor [B] (one per row); pos: a position
--   (default -1, the last; negative counts from the end).
--
--   m(logits)        -> value (a number), gradient with respect to logits [B,P,Vo]
--                       (the form model:run_with_cache's grad_output takes)
--   m:value(logits)  -> the value alone
--   m.positions      -> the positions the metric reads ({pos}): mi.patching then computes the
--                       patched logits only there (the other rows of the tensor it is given are NaN)
--   mi.metrics.custom(fn, positions [, grad_fn])   any fn(logits) declared to read only positions
local M = {}

local mi

local Metric = {}
Metric.__index = Metric
Metric.__name = "miwb.Metric"
local function value(self, logits, ...)
  if select("#", ...) > 0 then error(self.name .. ": takes the logits alone", 2) end
  return self._value(self:_check(logits))
end
local function grad(self, logits, ...)
  if select("#", ...) > 0 then error(self.name .. ": takes the logits alone", 2) end
  return self._grad(self:_check(logits))
end
Metric.value, Metric.grad = value, grad
-- m(logits): wrapped in _install, as m:value and m:grad, so that errors name the call
local function call(self, logits, ...) return value(self, logits, ...), grad(self, logits, ...) end
Metric.__tostring = function(m) return "Metric(" .. m.name .. ")" end

-- logits [B,P,V] -> B, the row index (0-based, resolved), the token lists
function Metric:_check(logits)
  if not mi.is_tensor(logits) or logits:dim() ~= 3 then
    error(self.name .. ": logits must be a tensor [batch, pos, d_vocab], got " ..
          (mi.is_tensor(logits) and ("[" .. table.concat(logits:shape(), ",") .. "]") or type(logits)), 3)
  end
  local B, P, V = logits:size(0), logits:size(1), logits:size(2)
  local p = self.pos < 0 and P + self.pos or self.pos
  if p < 0 or p >= P then error(string.format("%s: pos %d is outside the %d positions of the logits", self.name, self.pos, P), 3) end
  local lists = {}
  for i, toks in ipairs(self._tokens) do
    local l = {}
    if type(toks) == "number" then for b = 1, B do l[b] = toks end
    else
      if #toks ~= B then
        error(string.format("%s: %d tokens for a batch of %d (logits [%d,%d,%d])", self.name, #toks, B, B, P, V), 3)
      end
      l = toks
    end
    for b = 1, B do
      if l[b] < 0 or l[b] >= V then error(string.format("%s: token %d is outside the vocabulary of %d", self.name, l[b], V), 3) end
    end
    lists[i] = l
  end
  return {logits = logits, B = B, P = P, V = V, p = p, toks = lists}
end

-- a number, a list or an int64 tensor [B] -> a number or a Lua list of integers
local function tokens_arg(t, fname, what)
  if type(t) == "number" then
    return math.tointeger(t) or error(fname .. ": " .. what .. " must be an integer token id, got " .. t, 3)
  end
  if mi.is_tensor(t) then
    if t:dim() == 0 then return t:item() end
    if t:dim() ~= 1 then error(fname .. ": " .. what .. " must be [batch], got [" .. table.concat(t:shape(), ",") .. "]", 3) end
    return t:long():totable()
  end
  if type(t) == "table" and #t > 0 then return t end
  error(fname .. ": " .. what .. " must be a token id, a list or an int64 tensor [batch], got " .. type(t), 3)
end

local function new(name, pos, toks, value, grad)
  pos = pos or -1
  if math.type(pos) ~= "integer" then error(name .. ": pos must be an integer, got " .. tostring(pos), 3) end
  return setmetatable({name = name, pos = pos, positions = {pos}, _tokens = toks, _value = value, _grad = grad},
                      Metric)
end

function M.logit_diff(answer_tokens, wrong_tokens, pos)
  local a = tokens_arg(answer_tokens, "logit_diff", "answer_tokens")
  local w = tokens_arg(wrong_tokens, "logit_diff", "wrong_tokens")
  return new("logit_diff", pos, {a, w},
    function(x)
      local row = x.logits:select(1, x.p)                    -- [B, V]
      local s = 0
      for b = 1, x.B do
        s = s + row[{b - 1, x.toks[1][b]}]:item() - row[{b - 1, x.toks[2][b]}]:item()
      end
      return s / x.B
    end,
    function(x)
      local g = mi.zeros(x.B, x.P, x.V)
      for b = 1, x.B do
        g[{b - 1, x.p, x.toks[1][b]}] = g[{b - 1, x.p, x.toks[1][b]}]:item() + 1 / x.B
        g[{b - 1, x.p, x.toks[2][b]}] = g[{b - 1, x.p, x.toks[2][b]}]:item() - 1 / x.B
      end
      return g
    end)
end

function M.logprob(token, pos)
  local t = tokens_arg(token, "logprob", "token")
  return new("logprob", pos, {t},
    function(x)
      local lp = x.logits:select(1, x.p):log_softmax(-1)     -- [B, V]
      local s = 0
      for b = 1, x.B do s = s + lp[{b - 1, x.toks[1][b]}]:item() end
      return s / x.B
    end,
    function(x)
      -- d/dlogits log_softmax(l)[t] = onehot(t) - softmax(l), at row p, divided by B
      local g = mi.zeros(x.B, x.P, x.V)
      local sm = x.logits:select(1, x.p):softmax(-1)
      g[{{}, x.p}] = -sm / x.B
      for b = 1, x.B do
        g[{b - 1, x.p, x.toks[1][b]}] = g[{b - 1, x.p, x.toks[1][b]}]:item() + 1 / x.B
      end
      return g
    end)
end

-- any function of the logits, declared to read only `positions` (a list): mi.patching then
-- computes the patched logits there alone. grad_fn(logits) -> gradient is optional.
function M.custom(fn, positions, grad_fn)
  if type(fn) ~= "function" then error("metrics.custom: fn must be a function, got " .. type(fn), 2) end
  if type(positions) ~= "table" or #positions == 0 then
    error("metrics.custom: positions must be a non-empty list of positions, such as {-1}", 2)
  end
  for _, p in ipairs(positions) do
    if math.type(p) ~= "integer" then error("metrics.custom: positions must be integers, got " .. tostring(p), 2) end
  end
  local m = setmetatable({name = "custom", positions = positions, _tokens = {}, pos = positions[1]}, Metric)
  m._value = function(x) return fn(x.logits) end
  m._grad = function(x)
    if not grad_fn then error("metrics.custom: this metric was made without a grad_fn", 4) end
    return grad_fn(x.logits)
  end
  return m
end

function M.is_metric(m) return getmetatable(m) == Metric end

-- mi.metrics: the constructors above, each naming itself in its errors (mi.utils.name_errors)
function M._install(m)
  mi = m
  Metric.__call = m.utils.name_errors(call, "metric")
  m.utils.colon_methods(Metric, function(x) return getmetatable(x) == Metric end, "metric")
  m.metrics = m.utils.name_errors_table(M, "mi.metrics.")
  package.loaded["miwb.metrics"] = m.metrics
end

return M
