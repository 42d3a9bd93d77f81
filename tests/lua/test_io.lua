-- test_io.lua: mi.load / mi.save (lua/lio.c over core/checkpoint.c). Expected values come from
-- tests/fixtures/gen_checkpoints.py (torch and numpy dumps); written files are checked by
-- tests/fixtures/check_safetensors.py (numpy, the Python library's validation rules).
local T = require("testlib")
local mi = require("miwb")

local FIX = "tests/fixtures/ckpt/"
local TMP = os.tmpname()
os.remove(TMP)
assert(os.execute("mkdir -p " .. TMP))

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function flat(t, out)
  out = out or {}
  if type(t) ~= "table" then out[#out + 1] = t return out end
  for _, v in ipairs(t) do flat(v, out) end
  return out
end

local function num(v)
  if v == "inf" then return math.huge elseif v == "-inf" then return -math.huge
  elseif v == "nan" then return 0 / 0 end
  return v
end

-- every tensor of the JSON expectation is in sd with its shape, miwb's dtype and the values
local function check_against(sd, json_path)
  local exp = mi.json.decode(read(json_path))
  local count = 0
  for name, e in pairs(exp) do
    count = count + 1
    local t = sd[name]
    T.truthy(t, "tensor " .. name .. " loaded")
    local dt = e.dtype:lower()
    local want = (dt:find("float") or dt:match("^f") or dt:match("^bf")) and "float32"
      or (dt == "bool") and "bool" or "int64"
    T.eq(t:dtype(), want, name .. " dtype")
    T.eq(#t:shape(), #e.shape, name .. " ndim")
    for i, s in ipairs(e.shape) do T.eq(t:shape()[i], s, name .. " shape") end
    local got = t:numel() > 0 and flat(t:dim() == 0 and {t:item()} or t:totable()) or {}
    T.eq(#got, #e.values, name .. " numel")
    for i, v in ipairs(e.values) do
      local w = num(v)
      if want == "float32" then w = string.unpack("f", string.pack("f", w)) end -- f32 rounding
      local g = got[i]
      if type(g) == "boolean" then g = g and 1 or 0 end
      if not (g == w or (g ~= g and w ~= w)) then
        error(("%s[%d] = %s, expected %s"):format(name, i - 1, tostring(g), tostring(w)))
      end
    end
  end
  local n = 0
  for _ in pairs(sd) do n = n + 1 end
  T.eq(n, count, json_path .. ": number of tensors")
end

T.test("load .safetensors: every dtype, 0-dim and empty tensors, metadata", function()
  local sd, meta = mi.load(FIX .. "st_basic.safetensors")
  check_against(sd, FIX .. "st_basic.json")
  T.eq(meta.format, "pt")
  T.eq(meta.note, "quote \" backslash \\ caf\u{e9}")
end)

T.test("load torch zip: views share storage with torch's strides and offsets", function()
  local sd, meta = mi.load(FIX .. "torch_basic.pt")
  check_against(sd, FIX .. "torch_basic.json")
  T.eq(next(meta), nil, "no metadata for torch files")
  T.truthy(sd.transposed:shares_storage(sd.narrowed))
  T.truthy(sd.column:shares_storage(sd.transposed))
  T.truthy(not sd.plain:shares_storage(sd.transposed))
  T.eq(sd.narrowed:storage_offset(), 8)
  T.eq(sd.column:storage_offset(), 3)
  T.eq(sd.transposed:stride()[1], 1)
  T.eq(sd.transposed:stride()[2], 6)
end)

T.test("load torch: state_dict OrderedDict (fp16), nested dicts flatten to dotted names", function()
  check_against(mi.load(FIX .. "torch_module.pth"), FIX .. "torch_module.json")
  check_against(mi.load(FIX .. "torch_nested.pt"), FIX .. "torch_nested.json")
end)

T.test("aliases: save_safetensors / load_safetensors do what save / load do, under their own name", function()
  local path = TMP .. "/alias.safetensors"
  local w = mi.arange(6):float():reshape(2, 3)
  T.eq(mi.save_safetensors(path, {w = w}, {k = "v"}), true)
  local a, meta = mi.load(path)
  local b, meta2 = mi.load_safetensors(path)
  T.truthy(a.w:equal(w) and b.w:equal(w), "the same tensor back")
  T.eq(meta.k, "v"); T.eq(meta2.k, "v")
  T.raises(function() mi.load_safetensors(5 == 5) end, "mi.load_safetensors: path must be a string")
end)

T.test("a missing file gives nil, message; bad files raise naming file and tensor", function()
  local sd, msg = mi.load(TMP .. "/nope.safetensors")
  T.eq(sd, nil)
  T.truthy(msg:find("nope.safetensors: cannot open", 1, true), msg)
  T.raises(function() mi.load(FIX .. "torch_evil.pt") end, "forbidden global 'posix.system'")
  T.raises(function() mi.load(FIX .. "torch_legacy.pt") end, "legacy torch format")
  T.raises(function() mi.load(FIX .. "torch_deflated.pt") end, "compressed")
  -- a header whose byte range does not match shape x dtype
  local h = '{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}'
  write(TMP .. "/bad.safetensors", string.pack("<I8", #h) .. h .. string.rep("\0", 12))
  T.raises(function() mi.load(TMP .. "/bad.safetensors") end,
           "bad.safetensors: tensor 'w': 12 bytes in data_offsets, but shape [2,2] x F32 needs 16")
  -- header length past the end
  write(TMP .. "/short.safetensors", string.pack("<I8", 1000) .. "{}")
  T.raises(function() mi.load(TMP .. "/short.safetensors") end, "short.safetensors: safetensors header length 1000 runs past")
  local none, why = mi.load(TMP)
  T.eq(none, nil)
  T.truthy(why:find("is a directory", 1, true), why)
end)

T.test("save: round trip of float32, int64, bool and a strided view, checked by numpy", function()
  local a = mi.arange(0, 12):reshape(3, 4) / 4
  local tensors = {
    ["a.t"] = a:t(),                          -- not contiguous: written in logical order
    ["ids"] = mi.tensor({{5, -7}, {2 ^ 40, 0}}):long(),
    ["mask"] = mi.tensor({true, false, true}),
    ["row"] = a:select(0, 1),                 -- a view with an offset
    ["scalar"] = mi.tensor(2.5),
  }
  local path = TMP .. "/out.safetensors"
  T.eq(mi.save(path, tensors, {format = "pt", step = 3}), true)
  local cmd = ("/usr/bin/python3 tests/fixtures/check_safetensors.py %s " ..
    "'a.t=0,1,2,0.25,1.25,2.25,0.5,1.5,2.5,0.75,1.75,2.75' 'ids=5,-7,1099511627776,0' 'mask=1,0,1' " ..
    "'row=1,1.25,1.5,1.75' 'scalar=2.5'"):format(path)
  T.truthy(os.execute(cmd), "check_safetensors.py accepts the file: " .. cmd)
  local back, meta = mi.load(path)
  T.eq(meta.format, "pt")
  T.eq(meta.step, "3", "numbers in metadata are written as text")
  T.near_table(back["a.t"]:totable(), a:t():totable(), 0)
  T.eq(back.ids:dtype(), "int64")
  T.eq(back.ids:totable()[2][1], 2 ^ 40 // 1)
  T.eq(back.mask:dtype(), "bool")
  T.eq(back.scalar:dim(), 0)
  T.eq(back.scalar:item(), 2.5)
end)

T.test("save: misuse raises with the path and the key", function()
  local p = TMP .. "/x.safetensors"
  T.raises(function() mi.save(p, {w = 3}) end, "value of 'w' is a number, not a tensor")
  T.raises(function() mi.save(p, {mi.zeros(2)}) end, "keys must be tensor names")
  T.raises(function() mi.save(p, {w = mi.zeros(2)}, {k = {}}) end, "metadata must map strings to strings")
  T.raises(function() mi.save(TMP .. "/no/such/dir/x.safetensors", {w = mi.zeros(2)}) end, "cannot write")
  T.raises(function() mi.save(p) end, "mi.save: state_dict must be a table {name = tensor}, got no value")
end)

T.test("loaded tensors can be changed in place; the file stays as it was", function()
  local path = TMP .. "/inplace.safetensors"
  mi.save(path, {w = mi.arange(0, 6):reshape(2, 3)})
  local before = read(path)
  local sd = mi.load(path)
  sd.w:add_(10)                       -- a view of the mapped file: copy-on-write, no fault
  sd.w[{0, 0}] = -1
  T.near_table(sd.w:totable(), {{-1, 11, 12}, {13, 14, 15}}, 0)
  T.truthy(read(path) == before, "file unchanged")
  T.near_table(mi.load(path).w:totable(), {{0, 1, 2}, {3, 4, 5}}, 0)
end)

T.test("loaded tensors outlive their table and the file mapping", function()
  local keep
  do
    local sd = mi.load(FIX .. "torch_basic.pt")
    keep = sd.narrowed
  end
  collectgarbage()
  collectgarbage()
  -- narrowed = shared[1:3, 2:5] with shared = arange(24).reshape(4,6) / 7
  T.near_table(keep:totable(), {{8 / 7, 9 / 7, 10 / 7}, {14 / 7, 15 / 7, 16 / 7}}, 1e-6)
end)

os.execute("rm -rf " .. TMP)
T.done()
