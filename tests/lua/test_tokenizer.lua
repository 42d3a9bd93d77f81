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
  T.raises(function() mi.load_tokenizer() end, "load_tokenizer: path must be a string, got no value")
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

-- Tokenizers of other families (README of ../shared/assets: known values from Hugging Face
-- tokenizers 0.23.2 and SentencePiece 0.1.97); the full comparison is tests/c/test_tokenizer_families.c
local have_families = exists(A .. "llama2/tokenizer.json") and exists(A .. "llama2/tokenizer.model")
  and exists(A .. "mistral-v0.3/tokenizer.json") and exists(A .. "phi3/tokenizer.json")
  and exists(A .. "falcon/tokenizer.json") and exists(A .. "olmo2/tokenizer.json")
local function test_families(name, fn)
  if have_families then T.test(name, fn)
  else print("SKIP - " .. name .. ": tokenizer files not found in " .. A .. " (set MIWB_SHARED)") end
end

test_families("Llama 2: add_special_tokens as Hugging Face's, and the SentencePiece model", function()
  local t = assert(mi.load_tokenizer(A .. "llama2/tokenizer.json"))
  list_eq(t:encode_list("Hello world"), {1, 15043, 3186}, "default adds BOS")
  list_eq(t:encode_list("Hello world", {add_special_tokens = true}), {1, 15043, 3186})
  list_eq(t:encode("Hello world", {add_special_tokens = false}):totable(), {15043, 3186})
  list_eq(t:encode_list("\u{1F600}", {add_special_tokens = false}), {29871, 243, 162, 155, 131}, "byte fallback")
  list_eq(t:encode_list("<s>Hello</s>", {add_special_tokens = false}), {1, 15043, 2})
  T.eq(t:bos_token_id(), 1)
  T.eq(t:eos_token_id(), 2)
  T.eq(t:unk_token_id(), 0)
  T.eq(t:decode({1, 15043, 3186}), "<s> Hello world")
  T.eq(t:decode({243, 162, 155, 131}), "\u{1F600}")
  list_eq(t:tokens("Hello world", {add_special_tokens = false}), {"Hello", "world"})
  T.raises(function() t:encode("x", {add_special = false}) end, "tokenizer:encode: unknown option 'add_special'")
  T.raises(function() t:encode_list("x", {add_special_tokens = 0}) end, "tokenizer:encode_list: add_special_tokens must be true or false")
  T.raises(function() t:encode("x", false) end, "tokenizer:encode: options must be a table")
  T.raises(function() t:tokens({1, 2}, {add_special_tokens = false}) end, "options apply to text only")
  local sp = assert(mi.load_tokenizer(A .. "llama2/tokenizer.model"))
  T.eq(sp:vocab_size(), 32000)
  list_eq(sp:encode_list("Hello world", {add_special_tokens = false}), {15043, 3186})
  list_eq(sp:encode_list("Hello world"), {1, 15043, 3186}, "BOS first, as LlamaTokenizer")
  -- the .model names control tokens nowhere in text: SentencePiece spells them out
  list_eq(sp:encode_list("<s>Hello</s>", {add_special_tokens = false}), {529, 29879, 29958, 10994, 829, 29879, 29958})
  T.eq(sp:decode({1, 15043, 3186}), "Hello world")
  T.eq(sp:id_to_token(15043), "\u{2581}Hello")
  T.eq(sp:token_to_id("\u{2581}world"), 3186)
  T.eq(sp:is_special(1), true)
  T.eq(sp:is_special(15043), false)
end)

test_families("Mistral, Phi-3.5, Falcon, OLMo 2: the README's known values", function()
  local m3 = assert(mi.load_tokenizer(A .. "mistral-v0.3/tokenizer.json"))
  list_eq(m3:encode_list("Hello world", {add_special_tokens = false}), {23325, 2294})
  list_eq(m3:encode_list(" Hello world", {add_special_tokens = false}), {23325, 2294})
  local m3sp = assert(mi.load_tokenizer(A .. "mistral-v0.3/tokenizer.model"))
  list_eq(m3sp:encode_list(" Hello world", {add_special_tokens = false}), {29473, 23325, 2294})
  local m1 = assert(mi.load_tokenizer(A .. "mistral/tokenizer.model"))
  list_eq(m1:encode_list("\u{1F600}", {add_special_tokens = false}), {28705, 30575})
  local phi = assert(mi.load_tokenizer(A .. "phi3/tokenizer.json"))
  list_eq(phi:encode_list("Hello world"), {15043, 3186}, "Phi-3.5 adds no BOS")
  list_eq(phi:encode_list("Hello<|endoftext|>World"), {15043, 32000, 2787})
  list_eq(phi:encode_list("<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>"),
          {32010, 1724, 338, 29871, 29906, 29974, 29906, 29973, 32007, 32001})
  local fal = assert(mi.load_tokenizer(A .. "falcon/tokenizer.json"))
  list_eq(fal:encode_list("1234567890"), {10963, 27681, 43380, 27})
  list_eq(fal:encode_list("\x0b\x0c"), {194}, "bytes without a symbol are dropped")
  local olmo = assert(mi.load_tokenizer(A .. "olmo2/tokenizer.json"))
  list_eq(olmo:encode_list("Hello world"), {9906, 1917})
  list_eq(olmo:encode_list("1234567890"), {4513, 10961, 16474, 15})
  list_eq(olmo:encode_list("Hello<|endoftext|>World"), {9906, 100257, 10343})
  T.eq(olmo:eos_token_id(), 100257)
end)

test_families("invalid UTF-8: byte-level files keep the bytes, the others read U+FFFD", function()
  local gpt2t = assert(mi.load_tokenizer(A .. "gpt2/tokenizer.json"))
  T.eq(gpt2t:decode(gpt2t:encode("a\xffb")), "a\xffb")
  local llama = assert(mi.load_tokenizer(A .. "llama2/tokenizer.json"))
  -- "\xff" alone is not UTF-8: encoded as the text "a\u{FFFD}b" is
  list_eq(llama:encode_list("a\xffb", {add_special_tokens = false}),
          llama:encode_list("a\u{FFFD}b", {add_special_tokens = false}))
  local olmo = assert(mi.load_tokenizer(A .. "olmo2/tokenizer.json"))
  list_eq(olmo:encode_list("x\xc3"), olmo:encode_list("x\u{FFFD}"))
end)

test_families("model:to_tokens keeps TransformerLens's prepend_bos over a BOS-adding tokenizer", function()
  local llama = assert(mi.load_tokenizer(A .. "llama2/tokenizer.json"))
  local model = mi.HookedTransformer({d_model = 8, d_head = 4, n_heads = 2, n_layers = 1, n_ctx = 16,
                                      d_vocab = 32000, attn_only = true, seed = 1}, {tokenizer = llama})
  list_eq(model:to_tokens("Hello world"):reshape(-1):totable(), {1, 15043, 3186}, "one BOS")
  list_eq(model:to_tokens("Hello world", {prepend_bos = false}):reshape(-1):totable(), {15043, 3186})
end)

test_families("unsupported tokenizer files: the error names the file and the field", function()
  local dir = os.tmpname()
  os.remove(dir)
  local function try(text, want)
    local f = assert(io.open(dir, "wb"))
    f:write(text)
    f:close()
    local t, err = mi.load_tokenizer(dir)
    T.eq(t, nil)
    T.eq(err:find(dir, 1, true) ~= nil, true, "names the file: " .. err)
    T.eq(err:find(want, 1, true) ~= nil, true, "says " .. want .. ": " .. err)
  end
  local model = '"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}'
  try('{"model": {"type": "WordPiece", "vocab": {}}}', 'model.type: only "BPE" models are supported')
  try('{"pre_tokenizer": {"type": "BertPreTokenizer"}, ' .. model .. '}', 'pre_tokenizer.type: pre-tokenizer "BertPreTokenizer" is not supported')
  try('{"normalizer": {"type": "Sequence", "normalizers": [{"type": "Lowercase"}]}, ' .. model .. '}', 'normalizer.normalizers[0].type')
  try('{"decoder": {"type": "WordPiece"}, ' .. model .. '}', 'decoder.type: decoder "WordPiece"')
  try('{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<x>"}}], "special_tokens": {}}, ' .. model .. '}',
      'post_processor.single[0]')
  try('{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(("}, "behavior": "Isolated"}, ' .. model .. '}',
      'pre_tokenizer.pattern.Regex')
  try('\x0a\x05hello', 'not a SentencePiece model')
  os.remove(dir)
end)

T.done()
