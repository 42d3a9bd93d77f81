-- miwb.train: training small transformers from Lua (TransformerLens's `train` module, in miwb).
--
--   mi.train_tokenizer(files, {vocab_size = 4096, min_frequency = 2, out = "tokenizer.json"})
--   mi.tokenize_dataset(tokenizer_json, files, out)     -> n tokens (a memory-mapped token file)
--   mi.Dataset(path)                                     -> ds:batch(B, T), #ds, ds.vocab
--   mi.Trainer(cfg, batch, n_ctx)                        -> the C trainer (core/train.h)
--   mi.train(cfg_or_trainer, dataset, opts)              -> trainer, history
--   mi.train.induction_scores(trainer, {seq_len = 50, batch = 10, seed = 0})
--   mi.train.save_model(trainer, dir, {tokenizer = path, cfg = cfg})  -- TransformerLens names
--
-- opts of mi.train: steps, batch (16), n_ctx (cfg.n_ctx), lr (1e-3), min_lr (lr/10), warmup (0),
-- weight_decay (0.1), clip (1), beta1, beta2, seed (data order, 0), repeat_frac (0: fraction of
-- rows that repeat their opening), random_frac (0: fraction of rows opening with repeated random
-- ids; see mw_dataset_batch_repeat in core/train.h), log (CSV path: step, tokens,
-- loss, lr, grad_norm, seconds), checkpoint (path), checkpoint_every (steps), resume (load the
-- checkpoint when it exists), every + callback(step, trainer, info) (info: loss, lr, grad_norm,
-- tokens, seconds), progress (default: on a terminal; a bar with loss, tokens/s and ETA).
local M = {}

local function core() return require("miwb.core") end

function M.train_tokenizer(files, opts)
  opts = opts or {}
  if type(files) == "string" then files = {files} end
  local out = opts.out or "tokenizer.json"
  local v, merges = core().train_tokenizer(files, opts.vocab_size or 4096, opts.min_frequency or 2, out)
  return {path = out, vocab_size = v, merges = merges}
end

function M.tokenize_dataset(tokenizer, files, out)
  if type(files) == "string" then files = {files} end
  return core().encode_dataset(tokenizer, files, out)
end

-- induction scores [L,H] on [BOS, R, R] (R: seq_len random ids), the mean log-probs of both
-- copies of R, and the heads at or above a threshold (as "L.H" strings)
function M.induction_scores(trainer, opts)
  opts = opts or {}
  local ind, first, second = trainer:induction(opts.seq_len or 50, opts.batch or 10, opts.seed or 0)
  return {scores = ind, first_half = first, second_half = second, gap = second - first}
end

-- wall-clock seconds (tokens/s and ETA are about elapsed time, not CPU time)
local function now() return core().monotonic() end

local function fmt_time(s)
  if s ~= s or s == math.huge or s < 0 then return "?" end
  if s >= 3600 then return ("%dh%02dm"):format(s // 3600, (s % 3600) // 60) end
  if s >= 60 then return ("%dm%02ds"):format(s // 60, s % 60) end
  return ("%.0fs"):format(s)
end

local function file_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

function M.train(model, dataset, opts)
  local mi = require("miwb")
  opts = opts or {}
  local B = opts.batch or 16
  local trainer = model
  local cfg
  if type(model) == "table" then
    cfg = model.cfg or model
    local T = opts.n_ctx or cfg.n_ctx
    -- room for the induction probe ([10, 101]) when the context allows it
    local maxB = math.max(B, 10)
    local maxT = math.min(cfg.n_ctx, math.max(T, 101))
    trainer = core().Trainer(cfg, maxB, maxT)
  end
  local T = opts.n_ctx or (cfg and cfg.n_ctx)
  assert(T, "mi.train: opts.n_ctx is needed with a Trainer")
  if type(dataset) == "string" then dataset = core().Dataset(dataset) end
  local steps = assert(opts.steps, "mi.train: opts.steps is needed")
  local adam = {lr = opts.lr or 1e-3, min_lr = opts.min_lr, warmup = opts.warmup or 0, steps = steps,
                weight_decay = opts.weight_decay or 0.1, clip = opts.clip or 1.0,
                beta1 = opts.beta1, beta2 = opts.beta2}
  if opts.resume and opts.checkpoint and file_exists(opts.checkpoint) then
    trainer:load(opts.checkpoint)
  end
  local start = trainer:steps()
  -- the data order depends on the seed and the step, so a resumed run draws new batches
  dataset:seed((opts.seed or 0) * 7919 + start)
  local log
  if opts.log then
    log = assert(io.open(opts.log, start == 0 and "w" or "a"))
    if start == 0 then log:write("step,tokens,loss,lr,grad_norm,seconds\n") end
  end
  local show = opts.progress
  if show == nil then show = mi.isatty and mi.isatty(2) end
  local history = {}
  local t0 = now()
  for s = start, steps - 1 do
    local tokens = dataset:batch(B, T, nil, opts.repeat_frac or 0, opts.random_frac or 0)
    local ts = now()
    local loss = trainer:forward(tokens, true)
    local gn, lr = trainer:step(adam)
    local dt = now() - ts
    local info = {step = s + 1, loss = loss, lr = lr, grad_norm = gn, tokens = (s + 1) * B * T,
                  seconds = now() - t0}
    history[#history + 1] = info
    if log then
      log:write(("%d,%d,%.5f,%.4g,%.4f,%.2f\n"):format(info.step, info.tokens, loss, lr, gn, info.seconds))
      log:flush()
    end
    if show then
      local frac = (s + 1 - start) / (steps - start)
      local el = now() - t0
      local fill = math.floor(frac * 30)
      io.stderr:write(("\rtrain [%s%s] %d/%d loss %.3f | %.0f tok/s | eta %s   "):format(
        ("#"):rep(fill), ("."):rep(30 - fill), s + 1, steps, loss, B * T / math.max(dt, 1e-9),
        fmt_time(el / frac - el)))
      io.stderr:flush()
    end
    if opts.checkpoint and opts.checkpoint_every and (s + 1) % opts.checkpoint_every == 0 then
      trainer:save(opts.checkpoint)
    end
    if opts.callback and opts.every and (s + 1) % opts.every == 0 then
      opts.callback(s + 1, trainer, info)
    end
  end
  if show then io.stderr:write("\n") end
  if log then log:close() end
  if opts.checkpoint then trainer:save(opts.checkpoint) end
  return trainer, history
end

-- writes dir/model.safetensors (TransformerLens names), dir/config.json (HookedTransformerConfig
-- fields) and copies the tokenizer to dir/tokenizer.json
function M.save_model(trainer, dir, opts)
  opts = opts or {}
  os.execute(("mkdir -p '%s'"):format(dir))
  trainer:export(dir .. "/model.safetensors")
  local cfg = assert(opts.cfg, "save_model: opts.cfg (the config the trainer was built from) is needed")
  local fields = {"model_name", "d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab", "d_vocab_out",
                  "d_mlp", "attn_only", "act_fn", "normalization_type", "positional_embedding_type",
                  "attention_dir", "use_attn_result", "use_attn_scale", "eps", "seed", "tokenizer_name",
                  "default_prepend_bos", "original_architecture"}
  local full = {d_vocab_out = cfg.d_vocab, attention_dir = "causal", use_attn_result = true,
                use_attn_scale = true, eps = 1e-5, tokenizer_name = "tokenizer.json", default_prepend_bos = true,
                original_architecture = "miwb", act_fn = (not cfg.attn_only) and "gelu_new" or nil,
                positional_embedding_type = "standard"}
  for k, v in pairs(cfg) do full[k] = v end
  local parts = {}
  for _, k in ipairs(fields) do
    local v = full[k]
    local js
    if v == nil then js = "null"
    elseif type(v) == "string" then js = ("%q"):format(v)
    elseif type(v) == "boolean" then js = tostring(v)
    elseif math.type(v) == "integer" then js = tostring(v)
    else js = ("%.17g"):format(v) end
    parts[#parts + 1] = ("  %q: %s"):format(k, js)
  end
  local f = assert(io.open(dir .. "/config.json", "w"))
  f:write("{\n", table.concat(parts, ",\n"), "\n}\n")
  f:close()
  if opts.tokenizer then
    local src = assert(io.open(opts.tokenizer, "rb"))
    local data = src:read("a")
    src:close()
    local dst = assert(io.open(dir .. "/tokenizer.json", "wb"))
    dst:write(data)
    dst:close()
  end
end

function M._install(mi)
  local c = core()
  if not c.Trainer then return end
  mi.train_tokenizer = M.train_tokenizer
  mi.tokenize_dataset = M.tokenize_dataset
  mi.Dataset = c.Dataset
  mi.Trainer = c.Trainer
  -- mi.train is both this table (mi.train.induction_scores ...) and callable as mi.train(...)
  mi.train = setmetatable(M, {__call = function(_, ...) return M.train(...) end})
end

return M
