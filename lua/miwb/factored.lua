-- mi.FactoredMatrix(A, B): the matrix M = A @ B kept as its two factors, as TransformerLens's
-- FactoredMatrix. A is [..., ldim, mdim], B is [..., mdim, rdim]; leading (batch) dims broadcast.
-- With mdim small (d_head) and ldim, rdim large (d_vocab), M is never formed unless asked for (fm.AB);
-- its norm, singular values and eigenvalues come from the small factors.
--
--   fm.A, fm.B          the factors (broadcast to the common leading dims)
--   fm.AB, fm.BA        A @ B, and B @ A (square M only)
--   fm.T                M transposed, factored: (B^T, A^T)
--   fm.shape            {..., ldim, rdim} (also callable: fm:shape() as for tensors)
--   fm.ldim, fm.mdim, fm.rdim, fm:ndim(), fm:dim(), fm:size(d)
--   fm.has_leading_dims whether there are dims before the matrix ones
--   fm * x, x * fm      Lua has no @, so * is @ here: the matrix product when x is a factored
--                       matrix or a tensor of more than one element (a vector gives a tensor,
--                       anything else stays factored, with the cheaper inner dim kept as
--                       TransformerLens does); a number or a one-element tensor scales, as
--                       TransformerLens's * (which raises for any other tensor).
--                       mi.matmul(a, b) and t:matmul(fm) accept factored matrices too.
--   fm[{...}]           indexing: leading dims first, then rows, then columns; each item a 0-based
--                       index, a range {lo, hi}, {} (all) or an int64 index tensor. As in
--                       TransformerLens, a number on the row/column dims keeps that dim (length 1).
--   fm:norm()           Frobenius norm, sqrt(sum S^2), per leading index
--   fm:svd()            U [..., ldim, k], S [..., k], Vh [..., rdim, k] with M = U diag(S) Vh^T
--                       (TransformerLens's convention: its "Vh" is V), from SVDs of A, B and the
--                       small k x k middle; cached. Also fm.U, fm.S, fm.Vh.
--   fm:eigenvalues()    real and imaginary parts of the eigenvalues of B @ A (the non-zero
--                       eigenvalues of A @ B), [..., mdim] each
--   fm:get_corner(k)    the top-left k x ... x k corner of M, from k rows of A and k columns of B
--   fm:collapse_l()     S[:, None] * Vh^T  [..., k, rdim];  fm:collapse_r(): U * S  [..., ldim, k]
--   fm:make_even()      (U sqrt(S), sqrt(S) Vh^T): the same M, singular values split evenly
--   fm:unsqueeze(d)     a new leading dim at d (0 <= d <= ndim - 2; negative counts from the end of
--                       the leading dims)
--   fm:pair()           A, B
local F = {}

local mi -- the miwb module, set by _install

local MT = {__name = "miwb.FactoredMatrix"}
local FM = {} -- methods

local function is_fm(x) return getmetatable(x) == MT end
F.is_factored = is_fm

local function is_tensor(x) return mi ~= nil and mi.is_tensor(x) end

local function sstr(shape) return "[" .. table.concat(shape, ",") .. "]" end

local function describe(x)
  if is_fm(x) then return "FactoredMatrix " .. sstr(x._shape) end
  if is_tensor(x) then return "tensor " .. sstr(x:shape()) end
  return type(x)
end

-- numpy broadcasting of two shapes (lists); nil when they do not broadcast
local function broadcast(s1, s2)
  local n = math.max(#s1, #s2)
  local out = {}
  for i = 1, n do
    local a = s1[#s1 - n + i] or 1
    local b = s2[#s2 - n + i] or 1
    if a ~= b and a ~= 1 and b ~= 1 then return nil end
    out[i] = a == 1 and b or a
  end
  return out
end

local function same(s1, s2)
  if #s1 ~= #s2 then return false end
  for i = 1, #s1 do if s1[i] ~= s2[i] then return false end end
  return true
end

-- t viewed with the given shape: missing leading dims added, size-1 dims expanded (no copy)
local function expand_to(t, shape)
  if same(t:shape(), shape) then return t end
  while t:dim() < #shape do t = t:unsqueeze(0) end
  return t:expand(shape)
end

local function check_factor(x, what)
  if not is_tensor(x) then
    error(string.format("FactoredMatrix: %s must be a tensor, got %s", what, describe(x)), 3)
  end
  if x:dim() < 2 then
    error(string.format("FactoredMatrix: %s must have at least 2 dims, got shape %s", what, sstr(x:shape())), 3)
  end
end

function F.new(A, B)
  check_factor(A, "A")
  check_factor(B, "B")
  local sa, sb = A:shape(), B:shape()
  local ldim, mdim, rdim = sa[#sa - 1], sa[#sa], sb[#sb]
  if sb[#sb - 1] ~= mdim then
    error(string.format("FactoredMatrix: inner dimensions differ: A %s, B %s", sstr(sa), sstr(sb)), 2)
  end
  local la, lb = {table.unpack(sa, 1, #sa - 2)}, {table.unpack(sb, 1, #sb - 2)}
  local lead = broadcast(la, lb)
  if not lead then
    error(string.format("FactoredMatrix: leading dims do not broadcast: A %s, B %s", sstr(sa), sstr(sb)), 2)
  end
  local shape = {table.unpack(lead)}
  local sA, sB = {table.unpack(lead)}, {table.unpack(lead)}
  shape[#shape + 1], shape[#shape + 2] = ldim, rdim
  sA[#sA + 1], sA[#sA + 2] = ldim, mdim
  sB[#sB + 1], sB[#sB + 2] = mdim, rdim
  return setmetatable({A = expand_to(A, sA), B = expand_to(B, sB), ldim = ldim, mdim = mdim,
                       rdim = rdim, _shape = shape}, MT)
end

---------------------------------------------------------------------------------------------------
-- products
---------------------------------------------------------------------------------------------------

local function mm(a, b) return mi.matmul(a, b) end -- tensor @ tensor

-- self @ other
function FM.matmul(self, other)
  if is_fm(other) then return FM.matmul(FM.matmul(self, other.A), other.B) end
  if not is_tensor(other) then
    error("FactoredMatrix matmul: expected a tensor or a FactoredMatrix, got " .. describe(other), 2)
  end
  if other:dim() == 0 then error("FactoredMatrix matmul: a 0-dim tensor is a scalar: use fm * x", 2) end
  if other:dim() == 1 then
    -- a vector: the product is a vector, computed right to left through the small dim
    if other:size(0) ~= self.rdim then
      error(string.format("FactoredMatrix matmul: %s @ vector [%d]: inner dimensions differ",
                          sstr(self._shape), other:size(0)), 2)
    end
    return mm(self.A, mm(self.B, other:unsqueeze(-1))):squeeze(-1)
  end
  if other:size(-2) ~= self.rdim then
    error(string.format("FactoredMatrix matmul: %s @ %s: inner dimensions differ", sstr(self._shape),
                        sstr(other:shape())), 2)
  end
  -- keep the smaller of mdim and rdim as the inner dim (as TransformerLens)
  if self.rdim > self.mdim then return F.new(self.A, mm(self.B, other)) end
  return F.new(self.AB, other)
end

-- other @ self
function FM.rmatmul(self, other)
  if is_fm(other) then return FM.rmatmul(FM.rmatmul(self, other.B), other.A) end
  if not is_tensor(other) then
    error("FactoredMatrix matmul: expected a tensor or a FactoredMatrix, got " .. describe(other), 2)
  end
  if other:dim() == 0 then error("FactoredMatrix matmul: a 0-dim tensor is a scalar: use x * fm", 2) end
  if other:size(-1) ~= self.ldim then
    error(string.format("FactoredMatrix matmul: %s @ %s: inner dimensions differ", sstr(other:shape()),
                        sstr(self._shape)), 2)
  end
  if other:dim() == 1 then return mm(mm(other:unsqueeze(-2), self.A), self.B):squeeze(-2) end
  if self.ldim > self.mdim then return F.new(mm(other, self.A), self.B) end
  return F.new(other, self.AB)
end

local function is_scalar(x)
  return type(x) == "number" or (is_tensor(x) and x:numel() == 1)
end

-- a one-element tensor scales as its number would (its shape adds no dims, as in TransformerLens)
function FM.scale(self, s)
  if is_tensor(s) then s = s:float():item() end
  return F.new(self.A * s, self.B)
end

MT.__mul = function(a, b)
  if is_fm(a) then
    if is_scalar(b) then return FM.scale(a, b) end
    return FM.matmul(a, b)
  end
  if is_scalar(a) then return FM.scale(b, a) end
  return FM.rmatmul(b, a)
end

-- matmul with a factored operand on either side (see defer_to_other in lua/ltensor.c)
MT.__matmul = function(a, b)
  if is_fm(a) then return FM.matmul(a, b) end
  return FM.rmatmul(b, a)
end

MT.__div = function(a, b)
  if is_fm(a) and is_scalar(b) then return FM.scale(a, 1 / b) end
  error("FactoredMatrix: only division by a number is defined, got " .. describe(a) .. " / " .. describe(b), 2)
end

MT.__unm = function(a) return FM.scale(a, -1) end

MT.__tostring = function(self)
  return string.format("FactoredMatrix: Shape(%s), Hidden Dim(%d)", sstr(self._shape), self.mdim)
end

---------------------------------------------------------------------------------------------------
-- properties and methods
---------------------------------------------------------------------------------------------------

local shape_mt = {__call = function(s) return {table.unpack(s)} end}

local PROPS = {}
function PROPS.AB(self) return mm(self.A, self.B) end
function PROPS.BA(self)
  if self.ldim ~= self.rdim then
    error(string.format("FactoredMatrix.BA: only for square matrices, shape is %s", sstr(self._shape)), 3)
  end
  return mm(self.B, self.A)
end
function PROPS.T(self) return F.new(self.B:transpose(-2, -1), self.A:transpose(-2, -1)) end
function PROPS.shape(self) return setmetatable({table.unpack(self._shape)}, shape_mt) end
function PROPS.has_leading_dims(self) return #self._shape > 2 end
function PROPS.U(self) return (FM.svd(self)) end
function PROPS.S(self) return select(2, FM.svd(self)) end
function PROPS.Vh(self) return select(3, FM.svd(self)) end

function FM.ndim(self) return #self._shape end
FM.dim = FM.ndim

function FM.size(self, d)
  if d == nil then return {table.unpack(self._shape)} end
  local n = #self._shape
  local i = d < 0 and d + n or d
  if math.type(i) ~= "integer" or i < 0 or i >= n then
    error(string.format("FactoredMatrix:size: dim %s out of range for %d dims", tostring(d), n), 2)
  end
  return self._shape[i + 1]
end

function FM.pair(self) return self.A, self.B end

-- SVD from the factors (TransformerLens's algorithm): A = Ua Sa Va^T, B = Ub Sb Vb^T, so
-- M = Ua (Sa Va^T Ub Sb) Vb^T; the middle is only [ka, kb] (<= mdim x mdim), and its SVD
-- Um Sm Vm^T gives M = (Ua Um) Sm (Vb Vm)^T with orthonormal columns on both sides.
function FM.svd(self)
  local c = rawget(self, "_svd")
  if c then return c[1], c[2], c[3] end
  local Ua, Sa, Vha = mi.svd(self.A) -- [.., ldim, ka], [.., ka], [.., ka, mdim]
  local Ub, Sb, Vhb = mi.svd(self.B) -- [.., mdim, kb], [.., kb], [.., kb, rdim]
  local middle = Sa:unsqueeze(-1) * mm(Vha, Ub) * Sb:unsqueeze(-2) -- [.., ka, kb]
  local Um, Sm, Vhm = mi.svd(middle)                                 -- [.., ka, k], [.., k], [.., k, kb]
  local U = mm(Ua, Um)                                               -- [.., ldim, k]
  local V = mm(Vhm, Vhb):transpose(-2, -1)                           -- [.., rdim, k]
  rawset(self, "_svd", {U, Sm, V})
  return U, Sm, V
end

function FM.norm(self)
  local _, S = FM.svd(self)
  return S:pow(2):sum(-1):sqrt()
end

function FM.eigenvalues(self)
  return mi.eigvals(PROPS.BA(self))
end

function FM.get_corner(self, k)
  k = k or 3
  local A = self.A:narrow(-2, 0, math.min(k, self.ldim))
  local B = self.B:narrow(-1, 0, math.min(k, self.rdim))
  local P = mm(A, B)
  for d = 0, P:dim() - 1 do P = P:narrow(d, 0, math.min(k, P:size(d))) end
  return P
end

function FM.collapse_l(self)
  local _, S, Vh = FM.svd(self)
  return S:unsqueeze(-1) * Vh:transpose(-2, -1)
end

function FM.collapse_r(self)
  local U, S = FM.svd(self)
  return U * S:unsqueeze(-2)
end

function FM.make_even(self)
  local U, S, Vh = FM.svd(self)
  local r = S:sqrt()
  return F.new(U * r:unsqueeze(-2), r:unsqueeze(-1) * Vh:transpose(-2, -1))
end

function FM.unsqueeze(self, d)
  local nlead = #self._shape - 2
  local i = d < 0 and d + nlead + 1 or d
  if math.type(i) ~= "integer" or i < 0 or i > nlead then
    error(string.format("FactoredMatrix:unsqueeze: dim %s out of range for %d leading dims", tostring(d), nlead), 2)
  end
  return F.new(self.A:unsqueeze(i), self.B:unsqueeze(i))
end

---------------------------------------------------------------------------------------------------
-- indexing
---------------------------------------------------------------------------------------------------

-- a row/column item that keeps its dim: a number i becomes the range {i, i+1}
local function keep_dim(item, size)
  if is_tensor(item) and item:dim() == 0 then item = item:item() end
  if type(item) == "number" then
    local i = item < 0 and item + size or item
    if math.type(i) ~= "integer" or i < 0 or i >= size then
      error(string.format("FactoredMatrix index: %s out of range for size %d", tostring(item), size), 4)
    end
    return {i, i + 1}
  end
  return item
end

local function concat(list, ...)
  local out = {table.unpack(list)}
  for _, v in ipairs{...} do out[#out + 1] = v end
  return out
end

local function index(self, key)
  local items = (type(key) == "table") and key or {key}
  local n, nd = #items, #self._shape
  local lead = {table.unpack(items, 1, math.min(n, nd - 2))}
  local function sub(t, its) if #its == 0 then return t end return t[its] end
  if n <= nd - 2 then return F.new(sub(self.A, items), sub(self.B, items)) end
  if n == nd - 1 then
    return F.new(sub(self.A, concat(lead, keep_dim(items[n], self.ldim))), sub(self.B, lead))
  end
  if n == nd then
    return F.new(sub(self.A, concat(lead, keep_dim(items[n - 1], self.ldim))),
                 sub(self.B, concat(lead, {}, keep_dim(items[n], self.rdim))))
  end
  error(string.format("FactoredMatrix index: %d items for shape %s", n, sstr(self._shape)), 3)
end

MT.__index = function(self, k)
  if type(k) == "string" then
    local p = PROPS[k]
    if p then return p(self) end
    return FM[k]
  end
  return index(self, k)
end

---------------------------------------------------------------------------------------------------

-- mi.FactoredMatrix. Tensor operations with a factored operand (mi.matmul, tensor:matmul,
-- tensor * fm) reach MT.__mul / MT.__matmul through the tensor binding, which defers to the
-- other operand's metamethod when that operand is not a tensor.
function F._install(m)
  mi = m
  mi.utils.colon_methods(FM, is_fm, "fm")
  MT.__methods = FM
  if not m.matmul then return end -- built without the tensor binding
  m.FactoredMatrix = F.new
end

return F
