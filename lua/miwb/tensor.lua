-- miwb.tensor: Lua-side sugar over the C tensor binding (lua/ltensor.c).
-- Adds methods to mi.Tensor (the methods table every tensor looks up) and torch-style
-- module functions: mi.exp(x) == x:exp(), mi.zeros_like(x), mi.allclose(a, b), ...
local M = {}

function M._install(mi)
  local T = mi.Tensor
  if not T then return end -- built without the tensor binding
  -- Lua's argument errors name a C method it cannot see called by name (pcall(mi.Tensor.relu_, 5))
  -- by looking for it in package.loaded: "bad argument #1 to 'miwb.Tensor.relu_'"
  package.loaded["miwb.Tensor"] = T
  -- keyword arguments as the C methods take them (ltensor.c's kwargs): f(x, 1, {b = 2}) and
  -- f(x, {a = 1, b = 2}) give a, b = 1, 2 for the parameter names {"a", "b"}
  local kwargs = mi._kwargs

  -- x:flatten(start_dim = 0, end_dim = -1): dims start..end merged into one (a view if possible)
  function T.flatten(x, ...)
    local s, e = kwargs("flatten", {"start_dim", "end_dim"}, ...)
    local nd = x:dim()
    if nd == 0 then return x:reshape(1) end
    s, e = s or 0, e or -1
    for _, d in ipairs({{"start_dim", s}, {"end_dim", e}}) do
      if math.type(d[2]) ~= "integer" then
        error(("flatten: %s must be an integer, got %s"):format(d[1], mi.utils.typename(d[2])), 2)
      end
    end
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
  function T.chunk(x, ...)
    local n, dim = kwargs("chunk", {"chunks", "dim"}, ...)
    if math.type(n) ~= "integer" or n < 1 then
      error(("chunk: chunks must be a positive integer, got %s"):format(tostring(n)), 2)
    end
    dim = dim or 0
    local size = x:size(dim)
    return x:split(math.max(1, (size + n - 1) // n), dim)
  end

  local function other_tensor(fname, other)
    if not mi.is_tensor(other) then
      error(("%s: other must be a tensor, got %s"):format(fname, type(other)), 3)
    end
    return other
  end
  function T.expand_as(x, other) return x:expand(other_tensor("expand_as", other):shape()) end
  function T.view_as(x, other) return x:view(other_tensor("view_as", other):shape()) end
  function T.reshape_as(x, other) return x:reshape(other_tensor("reshape_as", other):shape()) end
  function T.type_as(x, other) return x:to(other_tensor("type_as", other):dtype()) end
  function T.tolist(x) return x:totable() end
  function T.square(x) return x * x end
  function T.argsort(x, ...)
    local _, i = x:sort(kwargs("argsort", {"dim", "descending"}, ...))
    return i
  end
  function T.mm(x, y) return x:matmul(other_tensor("mm", y)) end
  function T.bmm(x, y) return x:matmul(other_tensor("bmm", y)) end
  function T.isnan(x) return x:ne(x) end
  -- no autograd here: these keep TransformerLens-style code working unchanged
  function T.detach(x) return x end
  function T.cpu(x) return x end

  -- x:tile(reps...) (torch.tile / Tensor.repeat): copies of x laid side by side along each dim
  function T.tile(x, ...)
    local reps = select("#", ...) == 1 and type(...) == "table" and ... or {...}
    for i = 1, #reps do
      if math.type(reps[i]) ~= "integer" then
        error(("tile: each repetition must be an integer, got %s"):format(mi.utils.typename(reps[i])), 2)
      end
    end
    local nd = math.max(x:dim(), #reps)
    local r, sz = {}, {}
    for d = 1, nd do
      r[d] = reps[#reps - nd + d] or 1
      sz[d] = x:dim() - nd + d >= 1 and x:size(x:dim() - nd + d - 1) or 1
    end
    local view, big, out = {}, {}, {}
    for d = 1, nd do
      view[#view + 1] = 1; view[#view + 1] = sz[d]
      big[#big + 1] = r[d]; big[#big + 1] = sz[d]
      out[d] = r[d] * sz[d]
    end
    return x:reshape(view):expand(big):reshape(out)
  end

  -- x:isclose(y, rtol = 1e-5, atol = 1e-8): element-wise |x - y| <= atol + rtol * |y|
  -- torch's closeness rule, the one place for isclose, allclose and assert_close: equal
  -- elements (infinities too) or |x - y| <= atol + rtol * |y|; NaNs only with equal_nan
  -- (fname names isclose / allclose / assert_close in messages, raised at its caller)
  local function close_mask(fname, x, y, rtol, atol, equal_nan)
    for _, t in ipairs({{"rtol", rtol}, {"atol", atol}}) do
      if type(t[2]) ~= "number" then
        error(("%s: %s must be a number, got %s"):format(fname, t[1], mi.utils.typename(t[2])), 3)
      end
    end
    local m = (x - y):abs():le(y:abs() * rtol + atol):logical_or(x:eq(y))
    if equal_nan then m = m:logical_or(x:isnan():logical_and(y:isnan())) end
    return m
  end

  -- other of isclose / allclose: a tensor, or a number compared with every element
  local function close_other(fname, x, y)
    if mi.is_tensor(y) then return y end
    if type(y) ~= "number" then
      error(("%s: other must be a tensor or a number, got %s"):format(fname, mi.utils.typename(y)), 3)
    end
    return mi.full_like(x, y)
  end
  function T.isclose(x, ...)
    local y, rtol, atol, equal_nan = kwargs("isclose", {"other", "rtol", "atol", "equal_nan"}, ...)
    y = close_other("isclose", x, y)
    return close_mask("isclose", x, y, rtol or 1e-5, atol or 1e-8, equal_nan)
  end

  -- x:equal(y): same shape and exactly equal elements
  function T.equal(x, y)
    if not mi.is_tensor(y) then error("equal: expected a tensor as other, got " .. mi.utils.typename(y), 2) end
    local sx, sy = x:shape(), y:shape()
    if #sx ~= #sy then return false end
    for i = 1, #sx do if sx[i] ~= sy[i] then return false end end
    return x:eq(y):all()
  end

  -- x:allclose(y, rtol = 1e-5, atol = 1e-8): |x - y| <= atol + rtol * |y| everywhere (torch's rule)
  function T.allclose(x, ...)
    local y, rtol, atol, equal_nan = kwargs("allclose", {"other", "rtol", "atol", "equal_nan"}, ...)
    y = close_other("allclose", x, y)
    return close_mask("allclose", x, y, rtol or 1e-5, atol or 1e-8, equal_nan):all()
  end

  -- x:diag(diagonal = 0), as torch.diag: a 2-D tensor gives a copy of its diagonal `diagonal`
  -- (> 0 above the main one, < 0 below); a 1-D tensor becomes the square matrix of size
  -- n + |diagonal| holding it on that diagonal, zeros elsewhere
  function T.diag(x, ...)
    local k = kwargs("diag", {"diagonal"}, ...) or 0
    if math.type(k) ~= "integer" then error("diag: diagonal must be an integer, got " .. tostring(k), 2) end
    if x:dim() == 2 then return x:diagonal(k):clone() end
    if x:dim() ~= 1 then error("diag: expects 1 or 2 dims, got shape [" .. table.concat(x:shape(), ",") .. "]", 2) end
    local n = x:size(0) + math.abs(k)
    local m = mi.zeros(n, n, x:dtype())
    m:diagonal(k):copy_(x)
    return m
  end

  mi.empty = mi.zeros -- no uninitialized memory here: empty is zeros

  -- mi.assert_close(actual, expected, rtol, atol, msg, equal_nan) or (actual, expected, {rtol =,
  -- atol =, msg =, equal_nan =}): raises with the largest difference and where it is unless |a - b| <= atol + rtol * |b|
  -- everywhere, as torch.testing.assert_close, with its defaults: rtol 1.3e-6, atol 1e-5 for
  -- float32, exact (0, 0) when both are int64 or bool
  function mi.assert_close(a, b, ...)
    local rtol, atol, msg, equal_nan = kwargs("assert_close", {"rtol", "atol", "msg", "equal_nan"}, ...)
    for i, name in ipairs({"actual", "expected"}) do
      local v
      if i == 1 then v = a else v = b end
      if not mi.is_tensor(v) then
        local ok, t = pcall(mi.tensor, v)
        if not ok then
          error(("assert_close: %s must be a tensor, a number or nested lists of numbers, got %s"):format(
            name, mi.utils.typename(v)), 2)
        end
        if i == 1 then a = t else b = t end
      end
    end
    local exact = a:dtype() ~= "float32" and b:dtype() ~= "float32"
    rtol, atol = rtol or (exact and 0 or 1.3e-6), atol or (exact and 0 or 1e-5)
    local sa, sb = table.concat(a:shape(), ","), table.concat(b:shape(), ",")
    if sa ~= sb then error(("%sassert_close: shapes differ: [%s] vs [%s]"):format(msg and msg .. ": " or "", sa, sb), 2) end
    a, b = a:float(), b:float()
    local diff = (a - b):abs()
    local bad = close_mask("assert_close", a, b, rtol, atol, equal_nan):logical_not() -- NaN is bad unless equal_nan
    if bad:any() then
      local flat = diff:reshape(-1)
      local i = flat:argmax():item()
      error(("%sassert_close: %d of %d elements differ; largest difference %g at flat index %d (%g vs %g)")
        :format(msg and msg .. ": " or "", bad:long():sum():item(), a:numel(), flat[i]:item(), i,
                a:reshape(-1)[i]:item(), b:reshape(-1)[i]:item()), 2)
    end
  end

  -- ---------------------------------------------------------- einops-style rearrange / reduce / repeat
  -- Patterns as in einops: "b h q k -> (b h) q k", "(n p) d -> n p d" with sizes {p = 2},
  -- "1" for a unit axis, "()" for an empty group. Names are letters, digits and _. Another
  -- number is an anonymous axis of that size, as in einops: on the left of reduce (it is
  -- reduced: "b (2 s) -> b s") or on the right of repeat_axes (a new axis: "b s -> b (2 s)").
  local anon_count = 0
  local function parse_side(side, what)
    local groups, names, cur = {}, {}, nil
    local i, n = 1, #side
    while i <= n do
      local c = side:sub(i, i)
      if c:match("%s") then i = i + 1
      elseif c == "(" then
        if cur then error(what .. ": nested parentheses in '" .. side .. "'", 3) end
        cur = {}; i = i + 1
      elseif c == ")" then
        if not cur then error(what .. ": unbalanced ')' in '" .. side .. "'", 3) end
        groups[#groups + 1] = cur; cur = nil; i = i + 1
      else
        local name = side:match("^[%w_]+", i)
        if not name then error(what .. ": unexpected '" .. c .. "' in '" .. side .. "'", 3) end
        i = i + #name
        local axis
        if name == "1" then axis = {unit = true}
        elseif name:match("^%d+$") then
          anon_count = anon_count + 1 -- a name no pattern can spell, so each literal is its own axis
          axis = {name = "#" .. anon_count, size = math.tointeger(tonumber(name)), literal = name}
          if axis.size == 0 then error(what .. ": an axis of size 0 in '" .. side .. "'", 3) end
        elseif name:match("^%d") then error(what .. ": axis names cannot start with a digit: '" .. name .. "'", 3)
        else
          if names[name] then error(what .. ": axis '" .. name .. "' appears twice in '" .. side .. "'", 3) end
          names[name] = true
          axis = {name = name}
        end
        if cur then cur[#cur + 1] = axis else groups[#groups + 1] = {axis} end
      end
    end
    if cur then error(what .. ": unbalanced '(' in '" .. side .. "'", 3) end
    return groups, names
  end

  local function shape_s(x) return "[" .. table.concat(x:shape(), ",") .. "]" end

  -- splits x along its lhs groups into one dim per named axis (unit axes dropped);
  -- returns the view, the list of axis names in order, and the size of every axis
  local function decompose(x, lhs, sizes, what, pattern)
    if #lhs ~= x:dim() then
      error(("%s: '%s' names %d dims, the tensor has shape %s"):format(what, pattern, #lhs, shape_s(x)), 3)
    end
    local size = {}
    for k, v in pairs(sizes or {}) do size[k] = v end
    for _, g in ipairs(lhs) do
      for _, a in ipairs(g) do if a.literal then size[a.name] = a.size end end
    end
    local order, shape = {}, {}
    for d, g in ipairs(lhs) do
      local known, unknown = 1, nil
      for _, a in ipairs(g) do
        if a.name then
          if size[a.name] then known = known * size[a.name]
          elseif unknown then error(("%s: cannot infer both '%s' and '%s' in '%s'"):format(what, unknown, a.name, pattern), 3)
          else unknown = a.name end
        end
      end
      local dimsize = x:size(d - 1)
      if unknown then
        if known == 0 or dimsize % known ~= 0 then
          error(("%s: dim %d of size %d cannot be split by %d ('%s')"):format(what, d - 1, dimsize, known, pattern), 3)
        end
        size[unknown] = dimsize // known
      elseif known ~= dimsize then
        error(("%s: dim %d has size %d, the pattern '%s' says %d"):format(what, d - 1, dimsize, pattern, known), 3)
      end
      for _, a in ipairs(g) do
        if a.name then order[#order + 1] = a.name; shape[#shape + 1] = size[a.name] end
      end
    end
    return x:reshape(shape), order, size
  end

  -- the named axes at positions `order` of x, permuted and regrouped as rhs says; new axes
  -- (repeat) are inserted with their sizes and expanded
  local function compose(x, order, size, rhs, what, pattern)
    local pos = {}
    for i, name in ipairs(order) do pos[name] = i - 1 end
    local perm, final, flat = {}, {}, {}
    for _, g in ipairs(rhs) do
      local n = 1
      for _, a in ipairs(g) do
        if a.name then
          if a.literal then size[a.name] = a.size end
          if pos[a.name] then perm[#perm + 1] = pos[a.name]
          elseif not size[a.name] then error(("%s: the size of new axis '%s' is not given ('%s')"):format(what, a.name, pattern), 3)
          else perm[#perm + 1] = a.name end
          flat[#flat + 1] = size[a.name]
          n = n * size[a.name]
        end
      end
      final[#final + 1] = n
    end
    -- permute the existing axes into their rhs order, then unsqueeze + expand the new ones
    local existing = {}
    for _, p in ipairs(perm) do if type(p) == "number" then existing[#existing + 1] = p end end
    if #existing > 0 then x = x:permute(existing) end
    for i, p in ipairs(perm) do
      if type(p) == "string" then x = x:unsqueeze(i - 1) end
    end
    if #flat > 0 then x = x:expand(flat) end
    return x:reshape(final)
  end

  -- the first numeric axis of a side, if any
  local function literal_of(side)
    for _, g in ipairs(side) do
      for _, a in ipairs(g) do if a.literal then return a.literal end end
    end
  end

  -- left_ok / right_ok: whether numeric axes may stand on that side
  -- sizes: the axis lengths given, each of an axis of the pattern (as einops checks)
  local function split_pattern(pattern, sizes, what, left_ok, right_ok)
    if type(pattern) ~= "string" then
      error(("%s: pattern must be a string such as 'b s d -> (b s) d', got %s"):format(what, mi.utils.typename(pattern)), 3)
    end
    local l, r = pattern:match("^(.-)%->(.*)$")
    if not l then error(what .. ": pattern needs '->': '" .. pattern .. "'", 3) end
    local lhs, lnames = parse_side(l, what)
    local rhs, rnames = parse_side(r, what)
    if sizes ~= nil and type(sizes) ~= "table" then
      error(("%s: axis sizes must be a table {name = size}, got %s"):format(what, type(sizes)), 3)
    end
    for name, v in pairs(sizes or {}) do
      if type(name) ~= "string" or not (lnames[name] or rnames[name]) then
        error(("%s: a size is given for '%s', which is not an axis of '%s'"):format(what, tostring(name), pattern), 3)
      end
      if math.type(v) ~= "integer" or v < 1 then
        error(("%s: the size of '%s' must be a positive integer, got %s"):format(what, name, tostring(v)), 3)
      end
    end
    for _, side in ipairs({{lhs, left_ok, "left"}, {rhs, right_ok, "right"}}) do
      local lit = literal_of(side[1])
      if lit and not side[2] then
        error(("%s: the number %s on the %s of '%s' is an anonymous axis, which only reduce (on the left) " ..
               "and repeat_axes (on the right) take, as in einops; name the axis and give its size"):format(
               what, lit, side[3], pattern), 3)
      end
    end
    return lhs, lnames, rhs, rnames
  end

  -- mi.rearrange(x, "b h q k -> (b h) q k" [, sizes]): a permute plus reshapes (a view when
  -- the strides allow, else a copy)
  function mi.rearrange(x, pattern, sizes)
    if not mi.is_tensor(x) then error("rearrange: expected a tensor as x, got " .. mi.utils.typename(x), 2) end
    local lhs, lnames, rhs, rnames = split_pattern(pattern, sizes, "rearrange", false, false)
    for name in pairs(rnames) do
      if not lnames[name] then error(("rearrange: axis '%s' is only on the right of '%s' (use repeat_axes)"):format(name, pattern), 2) end
    end
    for name in pairs(lnames) do
      if not rnames[name] then error(("rearrange: axis '%s' is only on the left of '%s' (use reduce)"):format(name, pattern), 2) end
    end
    local y, order, size = decompose(x, lhs, sizes, "rearrange", pattern)
    return compose(y, order, size, rhs, "rearrange", pattern)
  end

  -- mi.repeat_axes(x, "seq d -> batch seq d", {batch = 4}): einops.repeat (repeat is a Lua keyword)
  function mi.repeat_axes(x, pattern, sizes)
    if not mi.is_tensor(x) then error("repeat_axes: expected a tensor as x, got " .. mi.utils.typename(x), 2) end
    local lhs, lnames, rhs, rnames = split_pattern(pattern, sizes, "repeat_axes", false, true)
    for name in pairs(lnames) do
      if not rnames[name] then error(("repeat_axes: axis '%s' is only on the left of '%s'"):format(name, pattern), 2) end
    end
    local y, order, size = decompose(x, lhs, sizes, "repeat_axes", pattern)
    return compose(y, order, size, rhs, "repeat_axes", pattern)
  end

  -- mi.reduce(x, "b h q k -> h", "mean" [, sizes]): axes missing on the right are reduced with
  -- "sum", "mean", "max", "min", "prod", "std", "var" (torch's, with correction 1), "any", "all",
  -- or a function f(x, dims) given the 0-based list of dims to reduce (einops's callable)
  local REDUCERS = {sum = "sum", mean = "mean", max = "amax", min = "amin", prod = "prod", std = "std",
                    var = "var", any = "any", all = "all"}
  function mi.reduce(x, pattern, op, sizes)
    if not mi.is_tensor(x) then error("reduce: expected a tensor as x, got " .. mi.utils.typename(x), 2) end
    local method = type(op) == "function" and op or REDUCERS[op]
    if not method then
      error("reduce: the reduction must be sum, mean, max, min, prod, std, var, any, all or a function f(x, dims), got "
            .. tostring(op), 2)
    end
    local lhs, lnames, rhs, rnames = split_pattern(pattern, sizes, "reduce", true, false)
    for name in pairs(rnames) do
      if not lnames[name] then error(("reduce: axis '%s' is only on the right of '%s'"):format(name, pattern), 2) end
    end
    local y, order, size = decompose(x, lhs, sizes, "reduce", pattern)
    local dims, kept = {}, {}
    for i, name in ipairs(order) do
      if rnames[name] then kept[#kept + 1] = name else dims[#dims + 1] = i - 1 end
    end
    if #dims > 0 then
      if type(method) == "function" then y = method(y, dims) else y = y[method](y, dims) end
      if not mi.is_tensor(y) or y:dim() ~= #kept then
        error(("reduce: the reduction gave %s, expected a tensor of %d dims"):format(
          mi.is_tensor(y) and shape_s(y) or type(y), #kept), 2)
      end
    end
    return compose(y, kept, size, rhs, "reduce", pattern)
  end

  function T.rearrange(x, pattern, sizes) return mi.rearrange(x, pattern, sizes) end

  -- mi.einsum(spec, x, y, ...) or (spec, {x, y, ...}) over the C contraction (ltensor.c), which
  -- takes distinct names per operand; this adds what torch.einsum also reads: "..." for the
  -- dims a term does not name (right-aligned and broadcast across operands, as torch), and a
  -- name repeated within one operand for its diagonal ("i i ->" is the trace)
  local c_einsum = mi.einsum
  function mi.einsum(spec, ...)
    if type(spec) ~= "string" or not spec:find("->", 1, true) then return c_einsum(spec, ...) end
    local ops = {...}
    if #ops == 1 and type(ops[1]) == "table" and not mi.is_tensor(ops[1]) then ops = ops[1] end
    local lhs, rhs = spec:match("^(.-)%->(.*)$")
    local function words(term)
      local w = {}
      for tok in term:gsub("%.%.%.", " ... "):gmatch("%S+") do w[#w + 1] = tok end
      return w
    end
    local terms, plain = {}, not spec:find("...", 1, true)
    for term in (lhs .. ","):gmatch("([^,]*),") do
      local w = words(term)
      local op = ops[#terms + 1]
      if #w == 1 and #w[1] > 1 and w[1] ~= "..." and mi.is_tensor(op) and op:dim() == #w[1] and op:dim() > 1 then
        -- torch's one-letter form: say how to write it here rather than miscount the axes
        local function spaced(t) return (t:gsub("%s", ""):gsub("%w", "%0 "):gsub("%s+$", "")) end
        local l = {}
        for t in (lhs .. ","):gmatch("([^,]*),") do l[#l + 1] = spaced(t) end
        error(("einsum: \"%s\": axis names are separated by spaces here, as in einops: \"%s -> %s\""):format(
          spec, table.concat(l, ", "), spaced(rhs)), 2)
      end
      local seen = {}
      for _, name in ipairs(w) do
        if seen[name] then plain = false end
        seen[name] = true
      end
      terms[#terms + 1] = w
    end
    if plain then return c_einsum(spec, ...) end
    if #terms ~= #ops then
      error(("einsum: \"%s\": %d terms for %d operands"):format(spec, #terms, #ops), 2)
    end
    -- "...": the dims a term leaves unnamed get the names ...1..K, right-aligned
    local K, ell = 0, {}
    for t, w in ipairs(terms) do
      local named = 0
      for _, name in ipairs(w) do if name ~= "..." then named = named + 1 end end
      if not mi.is_tensor(ops[t]) then error(("einsum: operand %d is a %s, expected a tensor"):format(t - 1, type(ops[t])), 2) end
      local n = ops[t]:dim() - named
      local has = false
      for _, name in ipairs(w) do if name == "..." then has = true end end
      if has and n < 0 or not has and n ~= 0 then
        error(("einsum: \"%s\": operand %d has shape %s but its term names %d dims"):format(
          spec, t - 1, shape_s(ops[t]), named), 2)
      end
      ell[t] = has and n or 0
      K = math.max(K, ell[t])
    end
    local ell_size = {}
    for t, w in ipairs(terms) do
      local out, d = {}, 0
      for _, name in ipairs(w) do
        if name == "..." then
          for e = K - ell[t] + 1, K do
            local sz = ops[t]:size(d)
            if sz ~= 1 then
              if ell_size[e] and ell_size[e] ~= sz then
                error(("einsum: \"%s\": the dims under ... do not broadcast (operand %d has shape %s)"):format(
                  spec, t - 1, shape_s(ops[t])), 2)
              end
              ell_size[e] = sz
            end
            out[#out + 1] = "_ellipsis" .. e
            d = d + 1
          end
        else
          out[#out + 1] = name
          d = d + 1
        end
      end
      terms[t] = out
    end
    local ell_names = {}
    for e = 1, K do ell_names[e] = "_ellipsis" .. e end
    local out_words = {}
    for _, name in ipairs(words(rhs)) do
      if name == "..." then
        for _, en in ipairs(ell_names) do out_words[#out_words + 1] = en end
      else
        out_words[#out_words + 1] = name
      end
    end
    -- broadcast size-1 dims under "...", then take the diagonal of each repeated name
    local xs = {}
    for t, w in ipairs(terms) do
      local x, shape, grow = ops[t], ops[t]:shape(), false
      for d, name in ipairs(w) do
        local e = tonumber(name:match("^_ellipsis(%d+)$"))
        if e and ell_size[e] and shape[d] == 1 then shape[d] = ell_size[e]; grow = true end
      end
      if grow then x = x:expand(shape) end
      local again = true
      while again do
        again = false
        for p = 1, #w do
          for q = p + 1, #w do
            if w[p] == w[q] then
              if x:size(p - 1) ~= x:size(q - 1) then
                error(("einsum: \"%s\": axis '%s' is repeated in operand %d with sizes %d and %d"):format(
                  spec, w[p], t - 1, x:size(p - 1), x:size(q - 1)), 2)
              end
              x = x:diagonal(0, p - 1, q - 1) -- the diagonal becomes the last dim
              local name = w[p]
              table.remove(w, q); table.remove(w, p)
              w[#w + 1] = name
              again = true
              break
            end
          end
          if again then break end
        end
      end
      xs[t] = x
      terms[t] = table.concat(w, " ")
    end
    return c_einsum(table.concat(terms, ", ") .. " -> " .. table.concat(out_words, " "), xs)
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
    "clone", "allclose", "equal", "square", "isnan", "all", "any", "diag", "tile", "isclose",
  }
  -- Errors name the function the user called (mi.utils.name_errors). The methods written in Lua
  -- above call other methods (argsort calls sort, allclose calls sub): an error inside one is
  -- re-raised at the user's call with the method's name in front, so x:argsort("q") says
  -- "argsort: sort: dim must be an integer". x:name() / mi.name(x): x must be a tensor.
  local U = require("miwb.utils")   -- mi.utils is installed after this part
  local function named(name, f)
    return U.name_errors(f, name, function(x)
      if not mi.is_tensor(x) then
        return ("%s: expected a tensor as the first argument, got %s"):format(name, U.typename(x))
      end
    end)
  end
  for name, f in pairs(T) do
    if type(f) == "function" and type(name) == "string" and name:sub(1, 1) ~= "_"
       and debug.getinfo(f, "S").what == "Lua" then
      T[name] = named(name, f)
    end
  end
  -- the functional forms are the methods themselves (a wrapper would show up in argument
  -- errors as "bad argument #1 to 'method'")
  for _, name in ipairs(FUNCTIONAL) do
    if mi[name] == nil then mi[name] = T[name] end
  end

  -- mi.zeros_like(x [, dtype | {dtype = ...}]): x's shape, and x's dtype unless one is given
  local function like(fn, fname)
    return function(x, ...)
      if not mi.is_tensor(x) then error(fname .. ": expected a tensor, got " .. mi.utils.typename(x), 2) end
      local args = table.pack(...)
      local last, dtype = args[args.n], x:dtype()
      if type(last) == "table" and not mi.is_tensor(last) then
        mi._check_opts(fname, last, {"dtype"})
        dtype, args.n = last.dtype or dtype, args.n - 1
      elseif type(last) == "string" then
        dtype, args.n = last, args.n - 1
      end
      return fn(x:shape(), table.unpack(args, 1, args.n), {dtype = dtype})
    end
  end
  -- (the constructor's own errors, "full: expected a shape and a fill value", at the user's line)
  mi.zeros_like = U.name_errors(like(mi.zeros, "zeros_like"), "zeros_like")
  mi.ones_like = U.name_errors(like(mi.ones, "ones_like"), "ones_like")
  mi.full_like = U.name_errors(like(mi.full, "full_like"), "full_like")
  mi.rand_like = U.name_errors(function(x, g)
    if not mi.is_tensor(x) then error("rand_like: expected a tensor, got " .. mi.utils.typename(x), 2) end
    return mi.rand(x:shape(), g)
  end, "rand_like")
  mi.randn_like = U.name_errors(function(x, g)
    if not mi.is_tensor(x) then error("randn_like: expected a tensor, got " .. mi.utils.typename(x), 2) end
    return mi.randn(x:shape(), g)
  end, "randn_like")
end

return M
