-- train_attn_only.lua: trains a 2-layer attention-only shortformer transformer from scratch (the
-- seed notebook's toy model, scaled to 2 CPU cores) and logs each head's induction score through
-- training, to watch for the phase change in which induction heads form.
--
-- The defaults are the recipe of the bundled model (models/attn_only_2L/README.md), whose heads
-- formed between steps 9,000 and 10,500. That model was trained by build/tools/mwtrain in two
-- phases (6,000 steps, then resumed with a longer cosine and stopped at 11,000); this script runs
-- the same recipe in one schedule and has not yet been run end to end with these defaults (about
-- 20 minutes at 20,000 tokens/s on 2 idle cores). The model folder is written whatever the
-- outcome; check the printed heads before using it.
--
--   build/miwb scripts/train_attn_only.lua [--FLAG VALUE ...]   (--help lists the flags and defaults)
-- It writes models/attn_only_2L_new by default; the bundled model is replaced only with
-- --out models/attn_only_2L.
--
-- Training rows: 30% repeat their own opening (English text quoting itself), 30% open with a
-- repeated sequence of random ids, the rest are plain windows (see mw_dataset_batch_repeat in
-- core/train.h: on a few million tokens of plain text this small model forms no induction heads).
-- Steps: English corpus from Debian packages (tools/make_corpus.sh) -> byte-level BPE tokenizer
-- (mi.train_tokenizer) -> token files (mi.tokenize_dataset) -> mi.train, measuring every `every`
-- steps the validation loss, each head's induction score on repeated random tokens
-- ([BOS, R, R], seq_len 50, batch 10) and previous-token score on validation text -> the model
-- folder (model.safetensors in TransformerLens names, config.json, tokenizer.json), the logs
-- (work/train_log.csv, work/eval_log.csv) and two figures: plots/attn_only_loss.png and
-- plots/attn_only_induction.png (the phase change).
local mi = require("miwb")

local o = mi.experiment.parse_args(arg, "train_attn_only", {
  out = "models/attn_only_2L_new", work = "data/attn_only", corpus = "data/corpus", steps = 11000, batch = 8,
  lr = 3e-3, min_lr = 3e-4, warmup = 100, weight_decay = 0.05, repeat_frac = 0.3, random_frac = 0.3,
  every = 500, seed = 398, vocab_size = 1024, d_model = 128, n_heads = 8, d_head = 16, n_ctx = 256,
}, {
  out = "the model folder written at the end (the bundled models/attn_only_2L is only replaced if named here)",
  work = "folder for the tokenizer, token files, logs and checkpoints (kept: a rerun resumes)",
  corpus = "folder with train.txt and valid.txt (made by tools/make_corpus.sh when missing)",
  steps = "training steps", batch = "sequences per step", lr = "peak learning rate (AdamW)",
  min_lr = "learning rate at the end of the cosine schedule", warmup = "linear warm-up steps",
  weight_decay = "AdamW weight decay on the W_* matrices",
  repeat_frac = "share of rows that repeat their own opening",
  random_frac = "share of rows that open with a repeated random sequence",
  every = "steps between evaluations (loss, induction and previous-token scores)",
  seed = "seed of the initialization and the row order", vocab_size = "BPE vocabulary size",
  d_model = "residual stream width", n_heads = "heads per layer", d_head = "width of each head",
  n_ctx = "context length (tokens per row)",
}, {standard = false})

local function exists(p) local f = io.open(p, "rb"); if f then f:close() end return f ~= nil end
local function sh(cmd) assert(os.execute(cmd), "command failed: " .. cmd) end

-- 1. corpus
if not exists(o.corpus .. "/train.txt") then sh("sh tools/make_corpus.sh " .. o.corpus) end
sh("mkdir -p " .. o.work)
-- 2. tokenizer, 3. token files
local tok_path = o.work .. "/tokenizer.json"
if not exists(tok_path) then
  local info = mi.train_tokenizer({o.corpus .. "/train.txt"}, {vocab_size = math.tointeger(o.vocab_size), out = tok_path})
  print(("tokenizer: %d ids (%d merges) -> %s"):format(info.vocab_size, info.merges, tok_path))
end
for _, split in ipairs({"train", "valid"}) do
  local p = o.work .. "/" .. split .. ".tok"
  if not exists(p) then
    local n = mi.tokenize_dataset(tok_path, {o.corpus .. "/" .. split .. ".txt"}, p)
    print(("%s: %d tokens"):format(p, n))
  end
end
local train_ds, valid_ds = mi.Dataset(o.work .. "/train.tok"), mi.Dataset(o.work .. "/valid.tok")

-- 4. the model: the seed notebook's config, scaled down
local cfg = {model_name = "attn_only_2L", d_model = math.tointeger(o.d_model), d_head = math.tointeger(o.d_head),
             n_heads = math.tointeger(o.n_heads), n_layers = 2, n_ctx = math.tointeger(o.n_ctx),
             d_vocab = train_ds.vocab, attn_only = true, normalization_type = "None", positional_embedding_type = "shortformer",
             use_attn_result = true, seed = math.tointeger(o.seed), tokenizer_name = "tokenizer.json"}

-- fixed validation batches: the same tokens at every evaluation
valid_ds:seed(12345)
local val_batches = {}
for i = 1, 4 do val_batches[i] = valid_ds:batch(math.tointeger(o.batch), cfg.n_ctx) end
valid_ds:seed(777)
local prev_batch = valid_ds:batch(8, 128)

local elog = assert(io.open(o.work .. "/eval_log.csv", "w"))
local H, L = cfg.n_heads, cfg.n_layers
local head_names = {}
for l = 0, L - 1 do for h = 0, H - 1 do head_names[#head_names + 1] = ("%d.%d"):format(l, h) end end
elog:write("step,val_loss,ind_" .. table.concat(head_names, ",ind_") .. ",prev_" .. table.concat(head_names, ",prev_")
           .. ",first_half_logprob,second_half_logprob\n")
local curve = {steps = {}, val = {}, ind = {}}
for i = 1, #head_names do curve.ind[i] = {} end

local function evaluate(step, trainer)
  local vl = 0
  for _, b in ipairs(val_batches) do vl = vl + trainer:forward(b, false) end
  vl = vl / #val_batches
  local r = mi.train.induction_scores(trainer, {seq_len = 50, batch = 10, seed = 0})
  local prev = trainer:prev_token(prev_batch)
  local ind, pv = {}, {}
  for _, row in ipairs(r.scores:totable()) do for _, v in ipairs(row) do ind[#ind + 1] = v end end
  for _, row in ipairs(prev:totable()) do for _, v in ipairs(row) do pv[#pv + 1] = v end end
  local fmt = function(t) local s = {} for i, v in ipairs(t) do s[i] = ("%.4f"):format(v) end return table.concat(s, ",") end
  elog:write(("%d,%.5f,%s,%s,%.4f,%.4f\n"):format(step, vl, fmt(ind), fmt(pv), r.first_half, r.second_half))
  elog:flush()
  curve.steps[#curve.steps + 1] = step
  curve.val[#curve.val + 1] = vl
  for i, v in ipairs(ind) do curve.ind[i][#curve.ind[i] + 1] = v end
  local best, bp = 0, 0
  for i, v in ipairs(ind) do if v > best then best = v end end
  for i, v in ipairs(pv) do if v > bp then bp = v end end
  print(("step %d: val loss %.3f | best induction %.3f | best prev-token %.3f | rep-token log-prob gap %.2f nats")
        :format(step, vl, best, bp, r.gap))
  return ind, pv, r, vl
end

local trainer = mi.Trainer(cfg)
print(("model: %d parameters; %d training tokens"):format(trainer:nparams(), #train_ds))
evaluate(0, trainer)
local _, history = mi.train(trainer, train_ds, {
  steps = math.tointeger(o.steps), batch = math.tointeger(o.batch), n_ctx = cfg.n_ctx, lr = o.lr, min_lr = o.min_lr,
  warmup = math.tointeger(o.warmup), weight_decay = o.weight_decay, repeat_frac = o.repeat_frac, random_frac = o.random_frac,
  seed = math.tointeger(o.seed), log = o.work .. "/train_log.csv", checkpoint = o.work .. "/checkpoint.safetensors",
  checkpoint_every = math.tointeger(o.every) * 4, every = math.tointeger(o.every), callback = evaluate})
local ind, pv, r, vl = evaluate(trainer:steps(), trainer)
elog:close()

-- 5. the model folder
mi.train.save_model(trainer, o.out, {cfg = cfg, tokenizer = tok_path})
print("wrote " .. o.out)
local found = {}
for i, name in ipairs(head_names) do
  if ind[i] >= 0.5 then found[#found + 1] = ("induction head %s (%.2f)"):format(name, ind[i]) end
  if pv[i] >= 0.35 then found[#found + 1] = ("previous-token head %s (%.2f)"):format(name, pv[i]) end
end
print(("final: train loss (last step) %.3f, validation loss %.3f; repeated random tokens: first half %.2f, second half %.2f nats")
      :format(history[#history] and history[#history].loss or 0 / 0, vl, r.first_half, r.second_half))
print(#found > 0 and table.concat(found, "\n") or "no induction or previous-token head above the thresholds")

-- 6. figures: the loss curve, and every head's induction score through training
local steps, losses = {}, {}
for i, h in ipairs(history) do steps[i] = h.step; losses[i] = h.loss end
if #steps > 1 then
  mi.plot.line({losses}, {x = steps, labels = {"train loss"}, title = "attn_only_2L: training loss",
                          xlabel = "step", ylabel = "cross-entropy (nats)", name = "attn_only_loss"})
end
if #curve.steps > 1 then
  mi.plot.line(curve.ind, {x = curve.steps, labels = head_names, title = "attn_only_2L: induction score of each head",
                           xlabel = "step", ylabel = "induction score (seq_len 50)", name = "attn_only_induction",
                           hline = {{0.5, label = "0.5"}}})
end
