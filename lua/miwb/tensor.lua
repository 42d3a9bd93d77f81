-- miwb.tensor: Lua-side sugar over the C tensor binding (lua/ltensor.c).
-- Adds methods to mi.Tensor (the methods table every tensor looks up) and torch-style
-- module functions: mi.exp(x) == x:exp(), mi.zeros_like(x), mi.allclose(a, b), ...
local M = {}

function M._install(mi)
  local T = mi.Tensor
  if not T then return end -- built without the tensor binding

  -- x:flatten(start_dim = 0, end_dim = -1): dims start..end merged into one (a view if possible)
  function T.flatten(x, s, e)
    local nd = x:dim()
    if nd == 0 then return x:reshape(1) end
    s, e = s or 0, e or -1
    if s < 0 then s = s + nd end
    if e < 0 then e = e + nd end
    if s < 0 or e >= nd or s > e then
      error(("flatten: dims %d..%d out of range for shape [%s]"):format(s, e, table.concat(x:shape(), ",")), 2)
    end
    local shape, n = {}, 1
    for d = 0, nd - 1 do
      local size = x:size(d)
      if d < s or d > e then shape[#shape + 1] = size
      else
        n = n * size
        if d == e then shape[#shape + 1] = n end
      end
    end
    return x:reshape(shape)
  end

  -- x:chunk(n, dim = 0): n pieces of ceil(size / n) along dim (the last may be shorter)
  function T.chunk(x, n, dim)
    dim = dim or 0
    local size = x:size(dim)
    return x:split(math.max(1, (size + n - 1) // n), dim)
  end

  function T.expand_as(x, other) return x:expand(other:shape()) end
  function T.view_as(x, other) return x:view(other:shape()) end
  function T.reshape_as(x, other) return x:reshape(other:shape()) end
  function T.type_as(x, other) return x:to(other:dtype()) end
  function T.tolist(x) return x:totable() end
  function T.square(x) return x * x end
  function T.argsort(x, dim, descending) local _, i = x:sort(dim, descending); return i end
  function T.mm(x, y) return x:matmul(y) end
  function T.bmm(x, y) return x:matmul(y) end
  function T.isnan(x) return x:ne(x) end
  -- no autograd here: these keep TransformerLens-style code working unchanged
  function T.detach(x) return x end
  function T.cpu(x) return x end

  -- x:equal(y): same shape and exactly equal elements
  function T.equal(x, y)
    local sx, sy = x:shape(), y:shape()
    if #sx ~= #sy then return false end
    for i = 1, #sx do if sx[i] ~= sy[i] then return false end end
    return x:eq(y):all()
  end

  -- x:allclose(y, rtol = 1e-5, atol = 1e-8): |x - y| <= atol + rtol * |y| everywhere (torch's rule)
  function T.allclose(x, y, rtol, atol)
    rtol, atol = rtol or 1e-5, atol or 1e-8
    local d = (x - y):abs()
    return d:le((y:abs() * rtol) + atol):all()
  end

  -- module functions mirroring methods, as torch.exp(x) mirrors x.exp()
  local FUNCTIONAL = {
    "exp", "log", "sqrt", "abs", "tanh", "relu", "gelu_new", "sigmoid", "neg", "sin", "cos",
    "floor", "ceil", "round", "sign", "pow", "clamp", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not",
    "sum", "mean", "prod", "amax", "amin", "logsumexp", "var", "std", "norm", "max", "min",
    "argmax", "argmin", "softmax", "log_softmax", "cumsum", "topk", "sort", "argsort", "nonzero",
    "index_select", "gather", "masked_select", "masked_fill", "narrow", "select", "transpose",
    "permute", "reshape", "unsqueeze", "squeeze", "diagonal", "split", "chunk", "flatten",
    "clone", "allclose", "equal", "square", "isnan", "all", "any",
  }
  for _, name in ipairs(FUNCTIONAL) do
    if mi[name] == nil then
      local method = T[name]
      mi[name] = function(x, ...) return method(x, ...) end
    end
  end

  local function like(fn)
    return function(x, ...)
      local args = table.pack(...)
      local opts = {dtype = x:dtype()}
      return fn(x:shape(), table.unpack(args, 1, args.n), opts)
    end
  end
  mi.zeros_like = like(mi.zeros)
  mi.ones_like = like(mi.ones)
  mi.full_like = like(mi.full)
  mi.rand_like = function(x, g) return mi.rand(x:shape(), g) end
  mi.randn_like = function(x, g) return mi.randn(x:shape(), g) end
end

return M
