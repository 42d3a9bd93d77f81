-- test_tokenizer.lua - mi.load_tokenizer and the tokenizer methods (lua/ltokenizer.c).
-- Expected ids: the known values of ../shared/assets/README.md and the fixture made by
-- tests/fixtures/gen_tokenizer.py (an independent Python reference); tiny tokenizers written here
-- with ids worked out by hand. Tests that need ../shared/assets print SKIP when it is absent.
local T = require("testlib")
local mi = require("miwb")

local shared = os.getenv("MIWB_SHARED")
if not shared or shared == "" then shared = "../shared" end
local A = shared .. "/assets/"
local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end
local have = exists(A .. "gpt2/tokenizer.json") and exists(A .. "gpt2/vocab.json")
  and exists(A .. "neox/20B_tokenizer.json")

local function test_assets(name, fn)
  if have then T.test(name, fn)
  else print("SKIP - " .. name .. ": tokenizer files not found in " .. A .. " (set MIWB_SHARED)") end
end

local function list_eq(a, b, msg)
  T.eq(#a, #b, (msg or "list") .. " length")
  for i = 1, #b do T.eq(a[i], b[i], (msg or "list") .. "[" .. i .. "]") end
end

local gpt2, neox
test_assets("load GPT-2 and NeoX", function()
  gpt2 = assert(mi.load_tokenizer(A .. "gpt2/tokenizer.json"))
  neox = assert(mi.load_tokenizer(A .. "neox/20B_tokenizer.json"))
  T.eq(gpt2:vocab_size(), 50257)
  T.eq(neox:vocab_size(), 50277)
  T.eq(gpt2:bos_token_id(), 50256)
  T.eq(gpt2:eos_token_id(), 50256)
  T.eq(gpt2:pad_token_id(), nil)
  T.eq(gpt2:unk_token_id(), nil)
  T.eq(neox:bos_token_id(), 0)
  T.eq(neox:eos_token_id(), 0)
  T.eq(neox:pad_token_id(), 1)
  T.truthy(gpt2:is_special(50256))
  T.truthy(not gpt2:is_special(262))
  T.truthy(tostring(gpt2):find("vocab_size=50257", 1, true))
end)

test_assets("known values (assets README)", function()
  local ids = gpt2:encode("gpt2")
  T.eq(ids:dtype(), "int64")
  list_eq(ids:shape(), {3})
  list_eq(ids:totable(), {70, 457, 17})
  list_eq(gpt2:encode_list("The the the the the the the the the"), {464, 262, 262, 262, 262, 262, 262, 262, 262})
  list_eq(neox:encode_list("a    b"), {66, 50274, 67})
  T.eq(gpt2:id_to_token(262), "\u{120}the")
  T.eq(gpt2:token_to_id("\u{120}the"), 262)
  T.eq(gpt2:token_to_id("<|endoftext|>"), 50256)
  T.eq(gpt2:token_to_id("not a token"), nil)
  T.eq(gpt2:id_to_token(50257), nil)
  T.eq(neox:id_to_token(50274), "    ")
  local e = gpt2:encode("")
  list_eq(e:shape(), {0})
end)

test_assets("a folder with vocab.json + merges.txt, and a folder with tokenizer.json", function()
  -- the gpt2 folder holds tokenizer.json: it is preferred
  local t = assert(mi.load_tokenizer(A .. "gpt2"))
  list_eq(t:encode_list("gpt2"), {70, 457, 17})
  -- a folder with only vocab.json and merges.txt (copies of the real files)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir .. " && cp " .. A .. "gpt2/vocab.json " .. A ..
                    "gpt2/merges.txt " .. dir .. "/"))
  local t2, err = mi.load_tokenizer(dir)
  if not t2 then
    os.execute("rm -rf " .. dir)
    error(err)
  end
  list_eq(t2:encode_list("gpt2"), {70, 457, 17})
  T.eq(t2:eos_token_id(), 50256)
  -- a tokenizer_config.json in the folder names the special tokens
  local f = assert(io.open(dir .. "/tokenizer_config.json", "w"))
  f:write('{"bos_token": "<|endoftext|>", "pad_token": {"content": "<|endoftext|>"}, "unk_token": null}')
  f:close()
  local t3 = assert(mi.load_tokenizer(dir))
  T.eq(t3:pad_token_id(), 50256)
  f = assert(io.open(dir .. "/tokenizer_config.json", "w"))
  f:write('{"pad_token": "<pad>"}')
  f:close()
  local t4, err4 = mi.load_tokenizer(dir)
  os.execute("rm -rf " .. dir)
  T.eq(t4, nil)
  T.truthy(err4:find("tokenizer_config.json", 1, true) and err4:find("pad_token", 1, true), err4)
end)

local function unhex(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

test_assets("fixture cases (gen_tokenizer.py)", function()
  local n, bad = 0, 0
  for line in io.lines("tests/fixtures/tokenizer_cases.tsv") do
    if line:sub(1, 1) ~= "#" then
      local name, hex, ids, dhex = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
      assert(name, "bad fixture line")
      local want = {}
      for id in ids:gmatch("%d+") do want[#want + 1] = tonumber(id) end
      local tok = name == "gpt2" and gpt2 or neox
      local got = tok:encode_list(unhex(hex))
      local same = #got == #want
      for i = 1, #want do same = same and got[i] == want[i] end
      if not same then
        bad = bad + 1
        if bad <= 5 then print("  differs: " .. name .. " " .. hex:sub(1, 60)) end
      end
      -- decode from a list and from the tensor
      if tok:decode(want) ~= unhex(dhex) then bad = bad + 1 end
      if #want > 0 and tok:decode(mi.tensor(want, "int64")) ~= unhex(dhex) then bad = bad + 1 end
      n = n + 1
    end
  end
  T.eq(n, 2 * 721, "cases read")
  T.eq(bad, 0, "cases that differ")
end)

test_assets("decode and tokens", function()
  T.eq(gpt2:decode({464, 262, 50256}), "The the<|endoftext|>")
  T.eq(gpt2:decode(464), "The")
  T.eq(gpt2:decode({}), "")
  -- a 2-D tensor is read in row-major order; float tensors with integral values are accepted
  T.eq(gpt2:decode(mi.tensor({{464, 262}, {262, 50256}}, "int64")), "The the the<|endoftext|>")
  T.eq(gpt2:decode(mi.tensor({464, 262})), "The the")
  list_eq(gpt2:tokens("The the"), {"The", " the"})
  list_eq(gpt2:tokens({464, 262}), {"The", " the"})
  list_eq(neox:tokens("a    b"), {"a", "    ", "b"}) -- the 4-space run is an added token
  -- invalid UTF-8 round-trips under GPT-2, byte for byte
  local s = "caf\xe9 \xff\xfe<|endoftext|>\x80"
  T.eq(gpt2:decode(gpt2:encode(s)), s)
end)

test_assets("errors name the method and the problem", function()
  T.raises(function() gpt2:decode({50257}) end, "decode: id 50257")
  T.raises(function() gpt2:decode({-1}) end, "id -1")
  T.raises(function() gpt2:decode({1.5}) end, "ids[1]")
  T.raises(function() gpt2:decode(mi.tensor({1.5})) end, "not an id")
  T.raises(function() gpt2:decode("x") end, "tensor, list of ids or integer expected")
  T.raises(function() gpt2:encode(12) end, "tokenizer:encode: bad argument #1 (string expected")
  T.raises(function() gpt2:encode_list({}) end, "string expected")
  T.raises(function() gpt2.encode(nil, "x") end, "call it with a colon: tok:encode(...)")
end)

T.test("load failures return nil and a message naming the file and field", function()
  local t, err = mi.load_tokenizer("/nonexistent/tok.json")
  T.eq(t, nil)
  T.truthy(err:find("/nonexistent/tok.json", 1, true), err)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}')
  f:close()
  t, err = mi.load_tokenizer(path)
  os.remove(path)
  T.eq(t, nil)
  T.truthy(err:find(path, 1, true) and err:find("model.merges[0]", 1, true), err)
  T.raises(function() mi.load_tokenizer() end, "bad argument #1")
end)

T.test("a tiny tokenizer worked by hand", function()
  -- vocab: a b c, U+0120 (the space byte), merges a+b -> ab, ab+c -> abc, Ġ+a -> Ġa
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write('{"added_tokens": [{"id": 7, "content": "<s>", "special": true, "normalized": false}],' ..
          ' "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},' ..
          ' "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "\\u0120": 3, "ab": 4,' ..
          ' "abc": 5, "\\u0120a": 6}, "merges": [["a", "b"], ["ab", "c"], ["\\u0120", "a"]]}}')
  f:close()
  local t = assert(mi.load_tokenizer(path))
  os.remove(path)
  -- "abc ab" -> "abc" = [5]; " ab": Ġ a b -> a+b first (rank 0) -> Ġ ab = [3, 4]
  list_eq(t:encode_list("abc ab"), {5, 3, 4})
  list_eq(t:encode_list("a<s>b"), {0, 7, 1})
  T.eq(t:vocab_size(), 8)
  T.eq(t:bos_token_id(), nil)
  T.eq(t:decode({5, 3, 4, 7}), "abc ab<s>")
  -- closing frees it; later use is an error
  getmetatable(t).__close(t)
  T.raises(function() t:encode("a") end, "closed")
end)

T.done()
