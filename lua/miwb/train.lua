-- miwb.train: training small transformers from Lua (TransformerLens's `train` module, in miwb).
--
--   mi.train_tokenizer(files, {vocab_size = 4096, min_frequency = 2, out = "tokenizer.json"})
--   mi.tokenize_dataset(tokenizer_json, files, out)     -> n tokens (a memory-mapped token file)
--   mi.Dataset(path)                                     -> ds:batch(B, T), #ds, ds.vocab
--   mi.Trainer(cfg)                                      -> the C trainer (core/train.h) over the
--                                                           model's one forward/backward pass
--   mi.train(cfg_or_trainer, dataset, opts)              -> trainer, history
--   mi.train.induction_scores(trainer, {seq_len = 50, batch = 10, seed = 0})
--   mi.train.save_model(trainer, dir, {tokenizer = path, cfg = cfg})  -- TransformerLens names
--
-- cfg is a HookedTransformerConfig table read as the model reads it (a field left out gets
-- TransformerLens's default: normalization_type "LN"; write "None" for no normalization).
--
-- opts of mi.train: steps, batch (16), n_ctx (cfg.n_ctx), lr (1e-3), min_lr (lr/10), warmup (0),
-- weight_decay (0.1), clip (1), beta1, beta2, seed (data order, 0), repeat_frac (0: fraction of
-- rows that repeat their opening), random_frac (0: fraction of rows opening with repeated random
-- ids; see mw_dataset_batch_repeat in core/train.h), log (CSV path: step, tokens,
-- loss, lr, grad_norm, seconds), checkpoint (path), checkpoint_every (steps), resume (load the
-- checkpoint when it exists), every + callback(step, trainer, info) (info: loss, lr, grad_norm,
-- tokens, seconds), hooks ({[hook name] = fn(act, hook)}: run during every training forward, e.g.
-- to read blocks.0.attn.hook_pattern), progress (default: on a terminal; a bar with loss, tokens/s
-- and ETA).
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
  if type(files) ~= "table" then
    error("tokenize_dataset: files must be a path or a list of paths, got " .. require("miwb").utils.typename(files), 2)
  end
  require("miwb").utils.check_name("tokenize_dataset", "tokenizer", tokenizer)
  require("miwb").utils.check_name("tokenize_dataset", "out", out)
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


function M.train(model, dataset, opts)
  local mi = require("miwb")
  opts = opts or {}
  local B = opts.batch or 16
  local trainer = model
  if type(model) == "table" then trainer = M.Trainer(model.cfg or model) end
  local T = opts.n_ctx or trainer:config().n_ctx
  if type(dataset) == "string" then dataset = core().Dataset(dataset) end
  local steps = assert(opts.steps, "mi.train: opts.steps is needed")
  local adam = {lr = opts.lr or 1e-3, min_lr = opts.min_lr, warmup = opts.warmup or 0, steps = steps,
                weight_decay = opts.weight_decay or 0.1, clip = opts.clip or 1.0,
                beta1 = opts.beta1, beta2 = opts.beta2}
  if opts.resume and opts.checkpoint and mi.utils.file_exists(opts.checkpoint) then
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
    local loss = trainer:forward(tokens, true, opts.hooks and {hooks = opts.hooks} or nil)
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

-- writes dir/model.safetensors (TransformerLens names), dir/config.json (the trainer's finished
-- HookedTransformerConfig; opts.cfg may add fields the core does not keep, such as model_name)
-- and copies the tokenizer to dir/tokenizer.json
function M.save_model(trainer, dir, opts)
  opts = opts or {}
  local ok, err = require("miwb").utils.mkdir_p(dir)   -- no shell
  if not ok then error("save_model: cannot create " .. tostring(dir) .. ": " .. tostring(err), 2) end
  trainer:export(dir .. "/model.safetensors")
  local cfg = trainer:config()
  if opts.cfg then
    -- only the fields the core does not keep (model_name, tokenizer_name, ...): the numeric ones
    -- are the trainer's (a None there is a nil that must stay nil)
    local _, core_names = core()._config_finish(opts.cfg)
    local owned = {}
    for _, n in ipairs(core_names) do owned[n] = true end
    for k, v in pairs(opts.cfg) do
      if not owned[k] then cfg[k] = v end
    end
  end
  local fields = {"model_name", "d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab", "d_vocab_out",
                  "d_mlp", "attn_only", "act_fn", "normalization_type", "positional_embedding_type",
                  "attention_dir", "use_attn_result", "use_attn_scale", "eps", "seed", "rotary_dim", "rotary_base",
                  "rotary_adjacent_pairs", "gated_mlp", "n_key_value_heads", "parallel_attn_mlp", "final_rms",
                  "tokenizer_name", "default_prepend_bos", "original_architecture"}
  local full = {attention_dir = "causal", tokenizer_name = "tokenizer.json", default_prepend_bos = true,
                original_architecture = "miwb"}
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

-- mi.Trainer(cfg, ...): the config goes through HookedTransformerConfig first, so a misspelt or
-- unknown field raises naming it (the C reader sees only the numeric fields it knows)
function M.Trainer(cfg, ...)
  local mi = require("miwb")
  if type(cfg) ~= "table" then error("Trainer: cfg must be a table of HookedTransformerConfig fields", 2) end
  return core().Trainer(mi.model.core_config(mi.HookedTransformerConfig(cfg)), ...)
end

function M._install(mi)
  local c = core()
  if not c.Trainer then return end
  mi.train_tokenizer = M.train_tokenizer
  mi.tokenize_dataset = M.tokenize_dataset
  mi.Dataset = c.Dataset
  mi.Trainer = M.Trainer
  -- mi.train is both this table (mi.train.induction_scores ...) and callable as mi.train(...)
  mi.train = setmetatable(M, {__call = function(_, ...) return M.train(...) end})
end

return M
