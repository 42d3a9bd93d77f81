-- sae_features.lua: a small sparse autoencoder on the bundled model's residual stream, and its
-- features with their max-activating contexts.
-- Text: --text FILE[,FILE...] (default: the corpus's valid.txt when tools/make_corpus.sh made it,
-- else the license texts in /usr/share/common-licenses). It is cut into --ctx-token rows (BOS
-- first); the activations at --hook (BOS positions left out) train a top-k SAE with mi.SAE.train
-- (Adam in Lua). The script reports the fraction of variance unexplained, L0, dead features,
-- the loss with the SAE spliced in (model:add_sae, without the error term) against the clean loss,
-- and for the most active features the contexts where they fire most. The SAE is written to
-- DIR/sae in SAELens's format.
--   miwb scripts/sae_features.lua [--hook blocks.1.hook_resid_pre] [--d_sae 512] [--k 16]
--       [--steps 1500] [--ctx 64] [--features 6] [--text FILES] [--out DIR]
local mi = require("miwb")
local E = mi.experiment

local args = E.parse_args(arg, "sae_features", {hook = "blocks.1.hook_resid_pre", d_sae = 512, k = 16,
                                                steps = 1500, ctx = 64, features = 6, text = ""}, {
  hook = "the hook point the SAE reads", d_sae = "SAE features", k = "active features per token (top-k SAE)",
  steps = "training steps", ctx = "tokens per training context", features = "features whose top contexts are shown",
  text = "text files to take activations from, comma-separated (none: data/corpus/valid.txt, else the licence texts in /usr/share/common-licenses)"})
local model, model_name = E.load_model(args.model)
if not model.tokenizer then error("sae_features.lua: the model needs a tokenizer (not the toy model)", 0) end
print("model: " .. model_name)

local files = {}
if args.text ~= "" then
  for f in tostring(args.text):gmatch("[^,]+") do files[#files + 1] = f end
else
  local corpus = E.repo_root() .. "/data/corpus/valid.txt"
  local fh = io.open(corpus)
  if fh then fh:close(); files = {corpus}
  else
    for _, n in ipairs({"GPL-3", "Apache-2.0", "GFDL-1.3", "LGPL-3", "Artistic", "MPL-2.0", "CC0-1.0"}) do
      local p = "/usr/share/common-licenses/" .. n
      local h = io.open(p)
      if h then h:close(); files[#files + 1] = p end
    end
  end
end
if #files == 0 then error("sae_features.lua: no text found; give --text FILE", 0) end
local ids = {}
for _, p in ipairs(files) do
  local fh = assert(io.open(p))
  local text = fh:read(2 * 1024 * 1024)
  fh:close()
  for _, id in ipairs(model.tokenizer:encode_list(text, {add_special_tokens = false})) do ids[#ids + 1] = id end
end
local ctx = args.ctx
local rows = {}
local bos = mi.analysis.bos_id(model)
for i = 1, #ids - (ctx - 1), ctx - 1 do
  local r = {bos}
  for j = 0, ctx - 2 do r[#r + 1] = ids[i + j] end
  rows[#rows + 1] = r
end
local tokens = mi.tensor(rows, "int64")                                 -- [R, ctx]
print(("text: %d tokens from %s, %d rows of %d"):format(#ids, table.concat(files, ", "), #rows, ctx))

-- activations at the hook, without the BOS position: [R * (ctx - 1), d]
local parts = {}
for s = 0, tokens:size(0) - 1, 32 do
  local b = tokens:narrow(0, s, math.min(32, tokens:size(0) - s))
  local _, cache = model:run_with_cache(b, {names_filter = args.hook, return_type = "none"})
  parts[#parts + 1] = cache[args.hook]:narrow(1, 1, ctx - 1):reshape(-1, model.cfg.d_model)
end
local acts = mi.cat(parts, 0)
print(("activations: %s at %s"):format("[" .. table.concat(acts:shape(), ",") .. "]", args.hook))

local t0 = os.clock()
local sae, hist = mi.SAE.train(acts, {d_sae = args.d_sae, k = args.k, steps = args.steps, batch = 512, lr = 2e-3,
  seed = args.seed, hook_name = args.hook, every = math.max(1, args.steps // 10),
  callback = function(step, _, info)
    print(("  step %5d  mse %.4f  fvu %.4f  L0 %.1f"):format(step, info.mse, info.fvu, info.l0))
  end})
print(("trained in %.1f s of CPU"):format(os.clock() - t0))

local f = sae:encode(acts)                                              -- [n, d_sae]
local fired = f:gt(0):float():sum(0)                                    -- [d_sae]
local dead = fired:eq(0):float():sum():item()
local last = hist[#hist]
local clean_loss = model(tokens, {return_type = "loss"}):item()
model:add_sae(sae)
local sae_loss = model(tokens, {return_type = "loss"}):item()
model:reset_saes()
print(("fraction of variance unexplained %.3f, L0 %.1f, dead features %d of %d"):format(last.fvu, last.l0, dead, args.d_sae))
print(("loss: clean %.3f, with the SAE in place of %s %.3f"):format(clean_loss, args.hook, sae_loss))

-- specific features (firing on 0.2% to 5% of tokens), the strongest first, with their top contexts
local n = acts:size(0)
local freq = fired / n
local fmax = f:amax(0)                                                  -- [d_sae]
local score = fmax * freq:ge(0.002):logical_and(freq:le(0.05)):float()
local _, order = score:topk(args.features)
local tok = model.tokenizer
local function show(id) return (tok:decode({id}):gsub("\n", "\\n")) end
local features = {}
for i = 0, args.features - 1 do
  local j = order[i]:item()
  local col = f:select(1, j)
  local vals, where = col:topk(5)
  local ctxs = {}
  print(("\nfeature %d  (fires on %.1f%% of tokens, max %.2f)"):format(j, 100 * freq[j]:item(), vals[0]:item()))
  for q = 0, 4 do
    local at = where[q]:item()
    local row, pos = at // (ctx - 1), at % (ctx - 1) + 1           -- position in the row (after BOS)
    local before = {}
    for p = math.max(1, pos - 8), pos - 1 do before[#before + 1] = show(tokens[{row, p}]:item()) end
    local here = show(tokens[{row, pos}]:item())
    local line = table.concat(before) .. "[[" .. here .. "]]"
    ctxs[#ctxs + 1] = {activation = vals[q]:item(), context = line}
    print(("  %6.2f  %s"):format(vals[q]:item(), line))
  end
  features[#features + 1] = {feature = j, frequency = freq[j]:item(), top = ctxs}
end

sae:save(args.out .. "/sae")
local steps, fvus = {}, {}
for i, h in ipairs(hist) do steps[i], fvus[i] = h.step, h.fvu end
E.write_results(args.out, {model = model_name, hook = args.hook, d_sae = args.d_sae, k = args.k, fvu = last.fvu,
  l0 = last.l0, dead = dead, clean_loss = clean_loss, sae_loss = sae_loss, features = features,
  figures = {fvu = mi.plot.line(fvus, {x = steps, title = "SAE training: fraction of variance unexplained",
    xlabel = "step", ylabel = "FVU", out = args.out .. "/sae_fvu.png"})}})
print("\nSAE (SAELens format), figures and results.json in " .. args.out)
