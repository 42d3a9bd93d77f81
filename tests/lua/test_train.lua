-- test_train.lua: training from Lua (lua/ltrain.c, lua/miwb/train.lua). The numbers of the
-- training core itself are checked against PyTorch in tests/c/test_train.c; here: tokenizer
-- training read back by the independent tokenizer (core/tokenizer.c), datasets, the training loop
-- (a model that must learn a task), logs, checkpoints, callbacks, export, errors.
local T = require("testlib")
local mi = require("miwb")

local tmp = os.tmpname()
os.remove(tmp)
os.execute("mkdir -p " .. tmp)
local function path(n) return tmp .. "/" .. n end

local function write(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

local function lines(p)
  local n = 0
  for _ in io.lines(p) do n = n + 1 end
  return n
end

local text = ("the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat.\n"):rep(40)
  .. "<|endoftext|>" .. ("In the beginning God created the heaven and the earth.\n"):rep(20)
write(path("corpus.txt"), text)

T.test("train_tokenizer writes a tokenizer.json that core/tokenizer.c encodes the same way", function()
  local info = mi.train_tokenizer({path("corpus.txt")}, {vocab_size = 300, out = path("tok.json")})
  T.eq(info.vocab_size, 257 + info.merges)
  T.truthy(info.merges > 10 and info.merges <= 43, "merges learnt")
  local tok = assert(mi.load_tokenizer(path("tok.json")))
  T.eq(tok:vocab_size(), info.vocab_size)
  T.eq(tok:bos_token_id(), 0)
  -- frequent words became single tokens
  T.truthy(tok:token_to_id("Ġcat"), "Ġcat is a token")
  local n = mi.tokenize_dataset(path("tok.json"), {path("corpus.txt")}, path("corpus.tok"))
  local ids = tok:encode_list(text)
  T.eq(n, #ids)
  local ds = mi.Dataset(path("corpus.tok"))
  T.eq(#ds, #ids)
  T.eq(ds.vocab, info.vocab_size)
  T.eq(ds.eot, 0)
  -- rows: BOS, then consecutive ids of the stream
  ds:seed(3)
  local b = ds:batch(4, 6)
  T.eq(b:dtype(), "int64")
  local rows = b:totable()
  local stream = table.concat(ids, ",", 1, #ids)
  for _, r in ipairs(rows) do
    T.eq(r[1], 0)
    T.truthy(stream:find(table.concat(r, ",", 2, 6), 1, true), "row is a window of the stream")
  end
end)

local cfg = {d_model = 32, d_head = 8, n_heads = 4, n_layers = 2, n_ctx = 24, d_vocab = 300, attn_only = true,
             normalization_type = "None", positional_embedding_type = "shortformer", seed = 5}

T.test("mi.train learns, logs, calls back, checkpoints and resumes", function()
  local calls = {}
  local tr, hist = mi.train(cfg, path("corpus.tok"), {
    steps = 60, batch = 8, lr = 1e-2, warmup = 5, log = path("log.csv"), checkpoint = path("ckpt.safetensors"),
    checkpoint_every = 30, every = 20, progress = false,
    callback = function(step, trainer, info) calls[#calls + 1] = step; T.eq(trainer:steps(), step) end})
  T.eq(#hist, 60)
  T.eq(tr:steps(), 60)
  T.eq(table.concat(calls, ","), "20,40,60")
  T.eq(lines(path("log.csv")), 61)
  -- the text is a few sentences repeated: the loss must fall far below ln(300) = 5.7
  local first, last = hist[1].loss, hist[60].loss
  T.truthy(first > 5.0, "initial loss near ln(V), got " .. first)
  T.truthy(last < 2.0, "loss after 60 steps below 2, got " .. last)
  -- resume: a new trainer continues from step 60 to 70, appending to the log
  local tr2 = mi.train(cfg, path("corpus.tok"), {steps = 70, batch = 8, lr = 1e-2, warmup = 5,
    log = path("log.csv"), checkpoint = path("ckpt.safetensors"), resume = true, progress = false})
  T.eq(tr2:steps(), 70)
  T.eq(lines(path("log.csv")), 71)
end)

T.test("induction scores, prev-token scores and export", function()
  local tr = mi.Trainer(cfg)
  local r = mi.train.induction_scores(tr, {seq_len = 10, batch = 3})
  T.eq(table.concat(r.scores:shape(), ","), "2,4")
  -- at init attention is nearly uniform: each score is close to the mean of 1/(q+1) over the
  -- 12 query positions q = 9..20 of the offset-(-9) diagonal
  local u = 0
  for q = 9, 20 do u = u + 1 / (q + 1) end
  u = u / 12
  for _, row in ipairs(r.scores:totable()) do
    for _, v in ipairs(row) do T.near(v, u, 0.02) end
  end
  T.truthy(r.first_half < 0 and r.second_half < 0)
  local toks = mi.Dataset(path("corpus.tok")):batch(2, 12)
  local prev = tr:prev_token(toks)
  local pat = tr:pattern_of(toks, 0)
  T.eq(table.concat(pat:shape(), ","), "2,4,12,12")
  -- previous-token score of head 0.1 from the pattern, by hand
  local p = pat:totable()
  local s = 0
  for b = 1, 2 do for q = 2, 12 do s = s + p[b][2][q][q - 1] end end
  T.near(prev:totable()[1][2], s / 22, 1e-6)
  mi.train.save_model(tr, path("model"), {cfg = cfg, tokenizer = path("tok.json")})
  local f = assert(io.open(path("model/config.json")))
  local c = mi.json.decode(f:read("a"))
  f:close()
  T.eq(c.d_model, 32)
  T.eq(c.positional_embedding_type, "shortformer")
  T.eq(c.tokenizer_name, "tokenizer.json")
  T.eq(c.attn_only, true)
  local sd = mi.load(path("model/model.safetensors"))
  T.eq(table.concat(sd["blocks.1.attn.W_Q"]:shape(), ","), "4,32,8")
  T.eq(table.concat(sd["unembed.W_U"]:shape(), ","), "32,300")
end)

-- the Llama recipe at toy size: RMSNorm, rotary, a gated silu MLP, two key/value heads for four
local llama = {d_model = 32, d_head = 8, n_heads = 4, n_key_value_heads = 2, n_layers = 2, n_ctx = 24,
               d_vocab = 300, d_mlp = 64, act_fn = "silu", gated_mlp = true, normalization_type = "RMS",
               final_rms = true, positional_embedding_type = "rotary", rotary_base = 10000, seed = 5}

T.test("a Llama-style model (RMS, rotary, gated silu, grouped-query) learns; checkpoints and saved folders keep it", function()
  local tr, hist = mi.train(llama, path("corpus.tok"), {steps = 60, batch = 8, lr = 1e-2, warmup = 5,
    checkpoint = path("llama.safetensors"), progress = false})
  local first, last = hist[1].loss, hist[60].loss
  T.truthy(first > 5.0, "initial loss near ln(V), got " .. first)
  T.truthy(last < 2.0, "loss after 60 steps below 2, got " .. last)
  local toks = mi.Dataset(path("corpus.tok")):batch(3, 16)
  local l = tr:forward(toks, false)
  -- the checkpoint restores the same model (and its grouped K/V shapes)
  local tr2 = mi.Trainer(llama)
  tr2:load(path("llama.safetensors"))
  T.eq(tr2:forward(toks, false), l)
  -- the saved folder is a HookedTransformer with TransformerLens's names and the same loss
  mi.train.save_model(tr, path("llama_model"), {cfg = llama, tokenizer = path("tok.json")})
  local sd = mi.load(path("llama_model/model.safetensors"))
  T.eq(table.concat(sd["blocks.0.attn._W_K"]:shape(), ","), "2,32,8")
  T.eq(table.concat(sd["blocks.1.mlp.W_gate"]:shape(), ","), "32,64")
  local model = mi.from_pretrained_no_processing(path("llama_model"))
  T.eq(model.cfg.n_key_value_heads, 2)
  T.eq(model.cfg.positional_embedding_type, "rotary")
  local ml = model(toks, {return_type = "loss"}):item()
  T.truthy(math.abs(ml - l) <= 1e-5 * math.abs(l), ("trainer loss %.9g, model loss %.9g"):format(l, ml))
end)

T.test("bad configurations and arguments raise clear errors", function()
  local ok, err = pcall(mi.Trainer, {d_model = 8, d_head = 4, n_layers = 1, n_ctx = 8, d_vocab = 10,
                                     attn_only = true, n_key_value_heads = 3})
  T.truthy(not ok and err:find("n_key_value_heads must divide n_heads = 2"), err)
  ok, err = pcall(mi.Trainer, {d_model = 8, d_head = 4, n_layers = 1, n_ctx = 8, d_vocab = 10, attn_only = true,
                               positional_embedding_type = "rotary", rotary_dim = 3})
  T.truthy(not ok and err:find("rotary_dim must be even"), err)
  ok, err = pcall(mi.Trainer, {d_model = 0, d_head = 4, n_layers = 1, n_ctx = 8, d_vocab = 10})
  T.truthy(not ok and err:find("d_model"), err)
  local tr = mi.Trainer({d_model = 8, d_head = 4, n_layers = 1, n_ctx = 8, d_vocab = 10, attn_only = true})
  ok, err = pcall(tr.forward, tr, mi.tensor({{1, 2, 30}}, "int64"), true)
  T.truthy(not ok and err:find("outside the vocabulary"), err)
  ok, err = pcall(mi.Dataset, path("nope.tok"))
  T.truthy(not ok and err:find("cannot open"), err)
end)

T.test("a training step's loss is the model's loss of the same weights; hooks fire in training", function()
  local tr = mi.Trainer(cfg)
  local toks = mi.Dataset(path("corpus.tok")):batch(3, 16)
  local seen = {}
  local loss = tr:forward(toks, true, {hooks = {["blocks.1.attn.hook_pattern"] = function(act, hook)
    seen[#seen + 1] = hook.name
    T.eq(table.concat(act:shape(), ","), "3,4,16,16")
  end}})
  T.eq(table.concat(seen, ","), "blocks.1.attn.hook_pattern")
  T.eq(tr:forward(toks, true), loss) -- the same pass with and without hooks
  tr:step({lr = 1e-2})
  local after = tr:forward(toks, true)
  -- the exported weights in a HookedTransformer: model(tokens, {return_type = "loss"})
  mi.train.save_model(tr, path("lossmodel"), {cfg = cfg, tokenizer = path("tok.json")})
  local model = mi.from_pretrained_no_processing(path("lossmodel"))
  local ml = model(toks, {return_type = "loss"})
  if type(ml) ~= "number" then ml = ml:item() end
  T.truthy(math.abs(ml - after) <= 1e-6 * math.abs(ml), ("training loss %.9g, model loss %.9g"):format(after, ml))
  local fc = mi.json.decode(assert(io.open(path("lossmodel/config.json"))):read("a"))
  T.eq(fc.normalization_type, mi.json.null) -- "None" is written as JSON null, as TransformerLens does
end)

T.test("issue 20: tokens must be int64, bad arguments leak nothing, probe sizes are checked", function()
  local tr = mi.Trainer(cfg)
  T.raises(function() tr:forward(mi.tensor({{1.5, 2, 3}}), true) end, "tokens must be int64")
  T.raises(function() tr:induction(2 ^ 62 // 1, 1) end, "do not fit")
  T.raises(function() mi.Trainer(cfg, 10, 24) end, "takes only the config")
  T.raises(function() tr:forward(mi.tensor({{1, 2, 3}}, "int64"), true, {hook = {}}) end, "unknown option 'hook'")
  local toks = mi.tensor({{1, 2, 3}}, "int64")
  -- a bad layer raises after the tokens were read: memory in use must not grow call after call
  local function bad() return pcall(tr.pattern_of, tr, toks, "x") end
  local evil = setmetatable({}, {__len = function() error("no length") end})
  local function bad_tok() return pcall(mi.train_tokenizer, evil, {out = path("never.json")}) end
  for _ = 1, 50 do bad(); bad_tok() end
  collectgarbage(); collectgarbage()
  local before = collectgarbage("count")
  for _ = 1, 2000 do bad(); bad_tok() end
  collectgarbage(); collectgarbage()
  T.truthy(collectgarbage("count") - before < 64, "Lua memory grew by " .. (collectgarbage("count") - before) .. " KB")
  T.truthy(not bad() and not bad_tok())
end)

os.execute("rm -rf " .. tmp)
T.test("paths with a zero byte are refused, not cut short (save, load, export, Dataset, train_tokenizer)", function()
  local tr = mi.Trainer({d_model = 8, d_head = 4, n_layers = 1, n_ctx = 8, d_vocab = 10, attn_only = true})
  for _, m in ipairs{"save", "load", "export"} do
    T.raises(function() tr[m](tr, "/tmp/miwb\0x.st") end, "holds a zero byte", m)
  end
  T.raises(function() mi.Dataset("/tmp/miwb\0x.tok") end, "holds a zero byte")
  T.raises(function() mi.train_tokenizer({"x"}, {vocab_size = 300, out = "/tmp/t\0k.json"}) end, "holds a zero byte")
end)

T.test("a misspelt config field raises for the trainer as for the model (no silent default)", function()
  T.raises(function() mi.Trainer({d_model = 8, d_head = 4, n_layers = 1, n_ctx = 8, d_vocab = 10, attn_only = true,
                                   normalizaton_type = "None"}) end, "unknown field 'normalizaton_type'")
  local tr = mi.Trainer({d_model = 8, d_head = 4, n_layers = 1, n_ctx = 8, d_vocab = 10, attn_only = true,
                         normalization_type = false})
  T.eq(tr:config().normalization_type, nil, "false is None for the trainer too")
end)

T.done()
