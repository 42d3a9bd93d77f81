-- test_model.lua - mi.HookedTransformer, run_with_cache / run_with_hooks, ActivationCache,
-- utils.get_act_name, against tests/fixtures/model/*.safetensors (written by
-- tests/fixtures/gen_model.py, an independent float64 PyTorch implementation), and the seed
-- notebook's identities recomputed here with tensor ops.
local T = require("testlib")
local mi = require("miwb")

-- ---------------------------------------------------------------- fixture reader
-- a plain safetensors reader (string.unpack + mi.json), so these tests depend on nothing but
-- the tensor library
local function load_st(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  local n = string.unpack("<I8", data)
  local header = mi.json.decode(data:sub(9, 8 + n))
  local base = 8 + n
  local out = {}
  for name, info in pairs(header) do
    if name ~= "__metadata__" then
      local b, e = info.data_offsets[1], info.data_offsets[2]
      local fmt = info.dtype == "F32" and "<f" or "<i8"
      local size = info.dtype == "F32" and 4 or 8
      local vals = {}
      for i = 0, (e - b) // size - 1 do vals[i + 1] = string.unpack(fmt, data, base + b + i * size + 1) end
      local t = mi.tensor(vals, info.dtype == "F32" and "float32" or "int64")
      if #info.shape == 0 then t = t:view({})
      else t = t:view(info.shape) end
      out[name] = t
    end
  end
  return out, header.__metadata__
end

local FIX = "tests/fixtures/model/"
local fixtures = {}
local function fixture(name)
  if fixtures[name] then return table.unpack(fixtures[name]) end
  local t, meta = load_st(FIX .. name .. ".safetensors")
  local c = mi.json.decode(meta.config)
  if c.normalization_type == nil or c.normalization_type == mi.json.null then c.normalization_type = false end
  c.seed = 1
  local model = mi.HookedTransformer(c)
  local sd = {}
  for k, v in pairs(t) do if k:sub(1, 6) == "param." then sd[k:sub(7)] = v end end
  model:load_state_dict(sd)
  local order = mi.json.decode(meta.hook_order)
  fixtures[name] = {model, t, order, tonumber(meta.ablate_head)}
  return model, t, order, tonumber(meta.ablate_head)
end

-- max |a - b| / max |b| (-inf entries must match)
local function rel(a, b)
  T.eq(table.concat(a:shape(), ","), table.concat(b:shape(), ","), "shape")
  local fa, fb = a:contiguous():view(-1):totable(), b:contiguous():view(-1):totable()
  local mx, md = 0, 0
  for i = 1, #fb do
    local x, y = fa[i], fb[i]
    if y == -math.huge or x == -math.huge then
      if x ~= y then return math.huge end
    else
      mx = math.max(mx, math.abs(y))
      md = math.max(md, math.abs(x - y))
    end
  end
  return md / math.max(mx, 1e-30)
end
local function close(a, b, tol, what) local e = rel(a, b); if not (e <= (tol or 1e-4)) then error((what or "close") .. ": rel err " .. e, 2) end end

local MODELS = {"gpt2", "attn2", "lnpre", "attnln"}

-- ---------------------------------------------------------------- config
T.test("HookedTransformerConfig: TransformerLens defaults and derived fields", function()
  local c = mi.HookedTransformerConfig{d_model = 64, d_head = 16, n_layers = 2, n_ctx = 32, d_vocab = 100, act_fn = "gelu_new"}
  T.eq(c.n_heads, 4); T.eq(c.d_mlp, 256); T.eq(c.d_vocab_out, 100); T.eq(c.normalization_type, "LN")
  T.eq(c.positional_embedding_type, "standard"); T.eq(c.eps, 1e-5); T.eq(c.use_attn_scale, true)
  T.eq(c.default_prepend_bos, true); T.eq(c.attn_only, false); T.eq(c.use_attn_result, false)
  T.near(c.initializer_range, 0.1, 1e-12)
  T.eq(c.n_params, 2 * (64 * 16 * 4 * 4) + 2 * 64 * 256 * 2)
  local s = mi.HookedTransformerConfig{d_model = 768, d_head = 64, n_heads = 12, n_layers = 2, n_ctx = 2048,
    d_vocab = 50278, attention_dir = "causal", attn_only = "True", seed = 398, use_attn_result = true,
    normalization_type = false, positional_embedding_type = "shortformer"}
  T.eq(s.attn_only, true); T.eq(s.normalization_type, nil); T.eq(s.d_mlp, nil)
  T.raises(function() mi.HookedTransformerConfig{d_model = 8, d_head = 2, n_layers = 1, n_ctx = 4, d_vocab = 5} end, "act_fn")
  T.raises(function() mi.HookedTransformerConfig{d_model = 8, d_head = 2, n_layers = 1, d_vocab = 5, act_fn = "relu"} end, "n_ctx")
  T.raises(function() mi.HookedTransformerConfig{d_model = 8, d_head = 2, n_layers = 1, n_ctx = 4, d_vocab = 5,
    attn_only = true, normalization_type = "BatchNorm"} end, "normalization_type")
end)

T.test("HookedTransformer(cfg): seeded init as TransformerLens (W_* ~ N(0, 0.8/sqrt(d)), biases 0, LN w 1)", function()
  local cfg = {d_model = 64, d_head = 16, n_layers = 2, n_ctx = 32, d_vocab = 300, act_fn = "gelu_new", seed = 5}
  local m1, m2 = mi.HookedTransformer(cfg), mi.HookedTransformer(cfg)
  T.truthy(m1.W_E:equal(m2.W_E), "same seed, same weights")
  local w = m1.W_in
  T.eq(table.concat(w:shape(), ","), "2,64,256")
  T.near(w:mean():item(), 0, 0.003)
  T.near(w:std():item(), 0.1, 0.003)
  T.eq(m1.b_Q:abs():sum():item(), 0)
  T.eq(m1:state_dict()["blocks.1.ln2.w"]:sum():item(), 64)
  T.eq(table.concat(m1.W_Q:shape(), ","), "2,4,64,16")
  T.eq(table.concat(m1.W_O:shape(), ","), "2,4,16,64")
  T.eq(table.concat(m1.b_O:shape(), ","), "2,64")
end)

-- ---------------------------------------------------------------- fixtures
T.test("run_with_cache: every activation, logits and loss match the PyTorch fixtures (rel err 1e-4)", function()
  for _, name in ipairs(MODELS) do
    local model, t, order = fixture(name)
    local logits, cache = model:run_with_cache(t.tokens)
    T.eq(table.concat(cache:keys(), " "), table.concat(order, " "), name .. ": cache keys in firing order")
    for _, k in ipairs(order) do close(cache[k], t["act." .. k], 1e-4, name .. " " .. k) end
    close(logits, t.logits, 1e-4, name .. " logits")
    local loss = model(t.tokens, {return_type = "loss"})
    T.near(loss:item(), t.loss[0]:item(), 1e-4 * t.loss[0]:item(), name .. " loss")
    local per = model(t.tokens, {return_type = "loss", loss_per_token = true})
    close(per, t.loss_per_token, 1e-4, name .. " loss_per_token")
    local lg, l2 = model(t.tokens, {return_type = "both"})
    close(lg, t.logits, 1e-4); T.near(l2:item(), loss:item(), 1e-6)
    T.eq(model(t.tokens, {return_type = "none"}), nil)
  end
end)

T.test("padding: attention_mask as TransformerLens (masked keys -inf, positions shifted, loss ignores pads)", function()
  for _, name in ipairs(MODELS) do
    local model, t, order = fixture(name)
    local mask = t["masked.attention_mask"]
    local logits, cache = model:run_with_cache(t["masked.tokens"], {attention_mask = mask, return_type = "logits"})
    for _, k in ipairs(order) do close(cache[k], t["masked.act." .. k], 1e-4, name .. " masked " .. k) end
    close(logits, t["masked.logits"], 1e-4)
    local loss = model(t["masked.tokens"], {attention_mask = mask, return_type = "loss"})
    T.near(loss:item(), t["masked.loss"][0]:item(), 1e-4 * t["masked.loss"][0]:item(), name .. " masked loss")
  end
end)

T.test("last_only: logits [B,1,V] of each row's last real position = those rows of the full logits (fixtures)", function()
  for _, name in ipairs(MODELS) do
    local model, t = fixture(name)
    local last = model(t.tokens, {last_only = true})
    local B, P = t.tokens:shape()[1], t.tokens:shape()[2]
    T.eq(table.concat(last:shape(), ","), B .. ",1," .. model.cfg.d_vocab_out, name .. " shape")
    close(last, t.logits[{{}, {P - 1, P}}], 1e-4, name .. " last position")
    -- padded rows: the last position the mask marks (the fixture pads some rows)
    local mask = t["masked.attention_mask"]
    local lm = model(t["masked.tokens"], {attention_mask = mask, return_type = "logits", last_only = true})
    local mt = mask:totable()
    for b = 0, B - 1 do
      local p = P - 1
      while p > 0 and mt[b + 1][p + 1] == 0 do p = p - 1 end
      close(lm[b][0], t["masked.logits"][b][p], 1e-4, name .. " masked row " .. b .. " position " .. p)
    end
  end
  local model, t = fixture("attn2")
  T.raises(function() model(t.tokens, {return_type = "loss", last_only = true}) end,
           "last_only = true returns logits: it needs return_type = 'logits' (got 'loss')")
  T.raises(function() model:run_with_cache(t.tokens, {return_type = "both", last_only = true}) end,
           "it needs return_type = 'logits'")
  T.raises(function() model(t.tokens, {stop_at_layer = 1, last_only = true}) end, "not with stop_at_layer")
end)

T.test("loss without logits (rows gathered across the batch in blocks) = the loss of the logits", function()
  -- 8 x 80 tokens: 632 predicting rows, more than one block of 512
  local model = mi.HookedTransformer({d_model = 16, d_head = 4, n_heads = 4, n_layers = 1, n_ctx = 96, d_vocab = 37,
                                      d_mlp = 32, act_fn = "gelu", seed = 3})
  local tokens = mi.randint(0, 37, {8, 80}, mi.Generator(4))
  local logits = model(tokens)
  local lp = logits:narrow(1, 0, 79):log_softmax(-1)
  local want = -lp:gather(2, tokens:narrow(1, 1, 79):unsqueeze(2)):squeeze(2)       -- [8, 79]
  local per = model(tokens, {return_type = "loss", loss_per_token = true})
  T.truthy((per - want):abs():max():item() < 1e-5, "per-token loss")
  T.near(model(tokens, {return_type = "loss"}):item(), want:mean():item(), 1e-5)
  -- a window of positions 10..69: the rest are 0 and the mean is over the window
  local win = model:_run(tokens, {return_type = "loss", loss_per_token = true}, {loss_slice = {10, 70}})
  T.truthy((win:narrow(1, 10, 60) - want:narrow(1, 10, 60)):abs():max():item() < 1e-5, "window")
  T.eq(win:narrow(1, 0, 10):abs():sum():item(), 0)
  T.eq(win:narrow(1, 70, 9):abs():sum():item(), 0)
end)

T.test("caches dropped without collecting: memory stays flat over run_with_cache calls; mi.release_memory", function()
  -- every call's cache holds two [4,4,256,256] tensors per layer (scores, pattern: 4 MB each) and
  -- 12.8 MB of logits, far more than this test's Lua heap
  local model = mi.HookedTransformer({d_model = 16, d_head = 4, n_heads = 4, n_layers = 2, n_ctx = 256,
                                      d_vocab = 12500, attn_only = true, seed = 1})
  local tokens = mi.randint(0, 12500, {4, 256}, mi.Generator(0))
  collectgarbage("collect")
  collectgarbage("stop")                 -- only the forward's own collection may run
  local ok, err = pcall(function()
    local function step() local lg, c = model:run_with_cache(tokens); return c["blocks.0.attn.hook_pattern"]:size(0) end
    step()
    local before = mi.live_tensor_bytes()
    for _ = 1, 3 do step() end
    -- each call's cache is about 30 MB: the dropped ones are collected (the forward collects first,
    -- and cloning steps the collector) and their memory reused
    T.truthy(mi.live_tensor_bytes() - before < 1e6, "live tensor bytes grew by " .. (mi.live_tensor_bytes() - before))
    local lg, keep = model:run_with_cache(tokens)   -- held: untouched by the next call
    local first = keep["blocks.1.attn.hook_pattern"][{0, 1, 200, 100}]:item()
    model:run_with_cache(mi.randint(0, 12500, {4, 256}, mi.Generator(9)))
    T.eq(keep["blocks.1.attn.hook_pattern"][{0, 1, 200, 100}]:item(), first)
  end)
  collectgarbage("restart")
  if not ok then error(err, 0) end
  collectgarbage("collect")
  local kept = mi.release_memory()
  if mi.release_memory() ~= 0 then error("release_memory kept memory after giving it back") end
  T.truthy(math.type(kept) == "integer" and kept >= 0, "release_memory returns the bytes it gave back")
  T.raises(function() mi.release_memory(1) end, "release_memory: takes no arguments")
end)

T.test("logits dropped without collecting: the next call reuses their memory (no fresh buffer per call)", function()
  -- logits of 64 x 50000 floats (12.8 MB), far more than this test's Lua heap
  local model = mi.HookedTransformer({d_model = 16, d_head = 4, n_layers = 1, n_ctx = 64, d_vocab = 50000,
                                      attn_only = true, seed = 1})
  local tokens = mi.randint(0, 50000, {1, 64}, mi.Generator(0))
  collectgarbage("stop")                 -- only the forward's own collection may run
  local ok, err = pcall(function()
    local function step() local lg = model(tokens); return lg:data_ptr() end   -- drops its logits
    local first = step()
    local before = mi.live_tensor_bytes()
    for i = 1, 5 do T.eq(step(), first, "call " .. i + 1 .. "'s logits are in the first call's buffer") end
    T.truthy(mi.live_tensor_bytes() - before < 1e6, "live tensor bytes grew by " .. (mi.live_tensor_bytes() - before))
    local keep = model(tokens)          -- held logits are not reused: a new buffer, the old one intact
    local first = keep[{0, 5, 7}]:item()
    local other = model(mi.randint(0, 50000, {1, 64}, mi.Generator(9)))
    T.eq(keep[{0, 5, 7}]:item(), first)
    T.truthy(other[{0, 5, 7}]:item() ~= first, "a new buffer holds the new logits")
  end)
  collectgarbage("restart")
  if not ok then error(err, 0) end
end)

T.test("threads: 1 and 2 threads give the same activations, logits and loss (attention, LayerNorm, MLP in pieces)", function()
  -- big enough that every threaded loop is cut in pieces: 8 x 128 positions, d_model 128, d_mlp 512
  local cfg = {d_model = 128, d_head = 32, n_heads = 4, n_layers = 2, n_ctx = 128, d_vocab = 97, d_mlp = 512,
               act_fn = "gelu_new", seed = 3}
  local model = mi.HookedTransformer(cfg)
  local tokens = mi.randint(0, 97, {8, 128}, mi.Generator(4))
  local saved = mi.get_num_threads()
  local res = {}
  for _, n in ipairs({1, 2}) do
    mi.set_num_threads(n)
    T.eq(mi.get_num_threads(), n)
    local logits, cache = model:run_with_cache(tokens)
    res[n] = {logits = logits, cache = cache, loss = model(tokens, {return_type = "loss"}):item(),
              fused = model(tokens)}                                  -- no hook: the fused attention loop
  end
  mi.set_num_threads(saved)
  close(res[2].logits, res[1].logits, 1e-6, "logits")
  close(res[2].fused, res[1].fused, 1e-6, "logits without a cache")
  mi.set_num_threads(2)
  for i = 1, 4 do close(model(tokens), res[1].fused, 1e-6, "2 threads, run " .. i) end  -- races show up now and then
  mi.set_num_threads(saved)
  close(res[2].fused, res[1].logits, 1e-6, "fused = staged attention")
  for _, k in ipairs(res[1].cache:keys()) do close(res[2].cache[k], res[1].cache[k], 1e-6, k) end
  T.near(res[2].loss, res[1].loss, 1e-6 * res[1].loss)
  T.raises(function() mi.set_num_threads(0) end, "set_num_threads: n must be 1 to 64, got 0")
end)

T.test("cache filters: only what was asked is kept", function()
  local model, t = fixture("gpt2")
  local _, c1 = model:run_with_cache(t.tokens, {names_filter = "blocks.1.attn.hook_pattern"})
  T.eq(table.concat(c1:keys(), ","), "blocks.1.attn.hook_pattern")
  local _, c2 = model:run_with_cache(t.tokens, {names_filter = {"hook_embed", "blocks.0.hook_resid_post"}})
  T.eq(table.concat(c2:keys(), ","), "hook_embed,blocks.0.hook_resid_post")
  local _, c3 = model:run_with_cache(t.tokens, {names_filter = function(n) return n:sub(-7) == "pattern" end})
  T.eq(table.concat(c3:keys(), ","), "blocks.0.attn.hook_pattern,blocks.1.attn.hook_pattern")
  T.eq(#c3, 2)
  T.raises(function() return c3["blocks.0.attn.hook_q"] end, "not in the cache")
  T.raises(function() model:run_with_cache(t.tokens, {names_filter = "blocks.0.hook_nothing"}) end, "not a hook point")
  local _, a = fixture("attn2")
  local ma = fixture("attn2")
  local _, c4 = ma:run_with_cache(a.tokens)
  T.eq(#c4, 22, "the seed's attention-only 2-layer model caches 22 tensors")
end)

T.test("cache lookups: full names, {name, layer}, cache(name, layer), negative layers, shorthands", function()
  local model, t = fixture("gpt2")
  local _, cache = model:run_with_cache(t.tokens)
  local p = cache["blocks.1.attn.hook_pattern"]
  T.truthy(cache[{"pattern", 1}]:equal(p)); T.truthy(cache("pattern", 1):equal(p))
  T.truthy(cache("pattern", -1):equal(p)); T.truthy(cache[{"attn", -1}]:equal(p))
  T.truthy(cache["k1"]:equal(cache["blocks.1.attn.hook_k"]))
  T.truthy(cache("scale", 0, "ln2"):equal(cache["blocks.0.ln2.hook_scale"]))
  T.truthy(cache["scale1ln1"]:equal(cache["blocks.1.ln1.hook_scale"]))
  T.truthy(cache("scale"):equal(cache["ln_final.hook_scale"]))
  T.truthy(cache("embed"):equal(cache["hook_embed"]))
  local n = 0
  for name, v in cache:items() do n = n + 1; T.truthy(mi.is_tensor(v), name) end
  T.eq(n, #cache:keys())
end)

T.test("utils.get_act_name: TransformerLens names, aliases and compact forms", function()
  local g = mi.utils.get_act_name
  T.eq(g("pattern", 0), "blocks.0.attn.hook_pattern"); T.eq(g("resid_pre", 1), "blocks.1.hook_resid_pre")
  T.eq(g("embed"), "hook_embed"); T.eq(g("pos_embed"), "hook_pos_embed")
  T.eq(g("scale", 4, "ln1"), "blocks.4.ln1.hook_scale"); T.eq(g("scale"), "ln_final.hook_scale")
  T.eq(g("attn", 2), "blocks.2.attn.hook_pattern"); T.eq(g("attn_logits", 2), "blocks.2.attn.hook_attn_scores")
  T.eq(g("key", 3), "blocks.3.attn.hook_k"); T.eq(g("query", 3), "blocks.3.attn.hook_q"); T.eq(g("value", 3), "blocks.3.attn.hook_v")
  T.eq(g("k6"), "blocks.6.attn.hook_k"); T.eq(g("pre5"), "blocks.5.mlp.hook_pre"); T.eq(g("scale4ln1"), "blocks.4.ln1.hook_scale")
  T.eq(g("post", 0), "blocks.0.mlp.hook_post"); T.eq(g("mlp_out", 0), "blocks.0.hook_mlp_out")
  T.eq(g("normalized", 2, "ln2"), "blocks.2.ln2.hook_normalized")
  T.eq(g("v"), "attn.hook_v")
  T.eq(g("blocks.0.hook_resid_pre"), "blocks.0.hook_resid_pre")
end)

T.test("remove_batch_dim: batch 1 only; run_with_cache{remove_batch_dim = true}", function()
  local model, t = fixture("attn2")
  local one = t.tokens:narrow(0, 0, 1)
  local _, cache = model:run_with_cache(one, {remove_batch_dim = true})
  T.eq(table.concat(cache[{"pattern", 0}]:shape(), ","), "4,7,7")
  T.eq(table.concat(cache("z", 1):shape(), ","), "7,4,8")
  local _, c2 = model:run_with_cache(t.tokens)
  T.raises(function() c2:remove_batch_dim() end, "batch size 2")
end)

-- ---------------------------------------------------------------- the seed notebook's identities
T.test("identity: layer-0 pattern rebuilt from cached q and k (scale, causal mask, softmax)", function()
  for _, name in ipairs{"gpt2", "attn2"} do
    local model, t = fixture(name)
    local _, cache = model:run_with_cache(t.tokens:narrow(0, 0, 1), {remove_batch_dim = true})
    local q, k = cache[{"q", 0}], cache[{"k", 0}]
    local n = q:size(0)
    local scores = mi.einsum("seqQ nhead dhead, seqK nhead dhead -> nhead seqQ seqK", q, k) / math.sqrt(model.cfg.d_head)
    scores = scores:masked_fill(mi.triu(mi.ones(n, n), 1):bool(), -math.huge)
    close(scores:softmax(-1), cache[{"pattern", 0}], 1e-5, name)
  end
end)

T.test("identity: logit attribution (embed, every head, biases) sums to the correct-token logits", function()
  local model, t = fixture("attn2")   -- no normalization: logits are linear in the residual stream
  local tokens = t.tokens:narrow(0, 0, 1)
  local logits, cache = model:run_with_cache(tokens, {remove_batch_dim = true})
  local P = tokens:size(1)
  local heads = cache:stack_head_results(-1)                     -- [2H, P, d]
  T.eq(heads:size(0), 2 * model.cfg.n_heads)
  local stack = mi.cat({cache["embed"]:unsqueeze(0), heads,
                        model:accumulated_bias(model.cfg.n_layers):expand(1, P, model.cfg.d_model)}, 0)
  local next_tok = tokens[0]:narrow(0, 1, P - 1)
  local attrs = cache:logit_attrs(stack:narrow(1, 0, P - 1), next_tok)   -- [components, P-1]
  local total = attrs:sum(0) + model.b_U:index_select(0, next_tok)
  local correct = logits[0]:narrow(0, 0, P - 1):gather(-1, next_tok:unsqueeze(-1)):squeeze(-1)
  close(total, correct, 1e-4)
end)

T.test("identity: full residual decomposition through the final LayerNorm gives the logits (LNPre)", function()
  local model, t = fixture("lnpre")
  local tokens = t.tokens
  local logits, cache = model:run_with_cache(tokens)
  -- TransformerLens's order: layer, mlp_input, expand_neurons, apply_ln, pos_slice, return_labels
  local stack, labels = cache:get_full_resid_decomposition(nil, false, true, false, nil, true)
  T.eq(#labels, stack:size(0))
  T.eq(labels[1], "L0H0"); T.eq(labels[#labels], "bias"); T.eq(labels[#labels - 1], "pos_embed")
  T.eq(labels[model.cfg.n_layers * model.cfg.n_heads + 1], "L0N0", "neurons expanded")
  close(stack:sum(0), cache[{"resid_post", -1}], 1e-4)
  local P = tokens:size(1)
  -- logit_attrs applies ln_final's centring and scale itself, as TransformerLens's does
  local attrs = cache:logit_attrs(stack, tokens)                  -- [components, B, P]: each position's own token
  local total = attrs:sum(0) + model.b_U:index_select(0, tokens:reshape(-1)):view(tokens:shape())
  local own = logits:gather(-1, tokens:unsqueeze(-1)):squeeze(-1)
  close(total, own, 1e-4)
  -- accumulated_resid: L + 1 entries, the last the final resid_post
  local acc, al = cache:accumulated_resid{layer = -1, return_labels = true}
  T.eq(acc:size(0), model.cfg.n_layers + 1); T.eq(al[#al], "final_post")
  close(acc[model.cfg.n_layers], cache[{"resid_post", -1}], 1e-6)
  -- decompose_resid sums to the residual stream after the last block
  local dec = cache:decompose_resid(-1)
  close(dec:sum(0), cache[{"resid_post", -1}], 1e-4)
  T.eq(P, 7)
end)

T.test("identity: decomposed QK input and its projections sum to layer-1 q and k (shortformer)", function()
  local model, t = fixture("attn2")
  local _, cache = model:run_with_cache(t.tokens:narrow(0, 0, 1), {remove_batch_dim = true})
  local P, d = cache["embed"]:size(0), model.cfg.d_model
  local bias0 = model.b_O[0]:expand(1, P, d)
  local l0 = cache[{"result", 0}]:permute(1, 0, 2)                 -- [H, P, d]
  local parts = mi.cat({cache["embed"]:unsqueeze(0), cache["pos_embed"]:unsqueeze(0), l0, bias0}, 0)
  close(parts:sum(0), cache[{"resid_pre", 1}] + cache["pos_embed"], 1e-5)
  for h = 0, model.cfg.n_heads - 1 do
    local q = parts:matmul(model.W_Q[1][h]):sum(0) + model.b_Q[1][h]
    local k = parts:matmul(model.W_K[1][h]):sum(0) + model.b_K[1][h]
    close(q, cache[{"q", 1}]:select(1, h), 1e-4, "q head " .. h)
    close(k, cache[{"k", 1}]:select(1, h), 1e-4, "k head " .. h)
  end
end)

T.test("apply_ln_to_stack: with LN's w and b it gives the cached ln1 / ln2 / ln_final outputs; decompose_resid modes", function()
  local model, t = fixture("gpt2")
  local _, cache = model:run_with_cache(t.tokens)
  local sd = model:state_dict()
  for l = 0, 1 do
    local x = cache:apply_ln_to_stack(cache[{"resid_pre", l}]:unsqueeze(0), l)[0]
    close(x * sd["blocks." .. l .. ".ln1.w"] + sd["blocks." .. l .. ".ln1.b"], cache[{"normalized", l, "ln1"}], 1e-5)
    local y = cache:apply_ln_to_stack(cache[{"resid_mid", l}]:unsqueeze(0), l, true)[0]
    close(y * sd["blocks." .. l .. ".ln2.w"] + sd["blocks." .. l .. ".ln2.b"], cache[{"normalized", l, "ln2"}], 1e-5)
  end
  local acc, labels = cache:accumulated_resid(nil, true, true, nil, false, true)
  T.eq(table.concat(labels, ","), "0_pre,0_mid,1_pre,1_mid,final_post")
  close(acc[4] * sd["ln_final.w"] + sd["ln_final.b"], cache["ln_final.hook_normalized"], 1e-5)
  local a, al = cache:decompose_resid{layer = 2, mode = "attn", return_labels = true}
  T.eq(table.concat(al, ","), "embed,pos_embed,0_attn_out,1_attn_out")
  local m, ml = cache:decompose_resid{layer = 1, mode = "mlp", incl_embeds = false, return_labels = true}
  T.eq(table.concat(ml, ","), "0_mlp_out")
  close(a:sum(0) + m[0] + cache[{"mlp_out", 1}], cache[{"resid_post", 1}], 1e-5)
  -- mlp_input: the stack entering layer 1's MLP sums to resid_mid of layer 1
  local mi_stack = cache:decompose_resid{layer = 1, mlp_input = true}
  close(mi_stack:sum(0), cache[{"resid_mid", 1}], 1e-5)
  local full = cache:get_full_resid_decomposition{layer = 1, mlp_input = true}
  close(full:sum(0), cache[{"resid_mid", 1}], 1e-4)
end)

-- ---------------------------------------------------------------- hooks
T.test("run_with_hooks: zero-ablating a head's z (in place, or by returning a tensor) = the fixture's ablation", function()
  for _, name in ipairs(MODELS) do
    local model, t, _, head = fixture(name)
    local seen = {}
    local lg = model:run_with_hooks(t.tokens, {fwd_hooks = {{"blocks.0.attn.hook_z", function(z, hook)
      seen[#seen + 1] = hook.name .. "@" .. hook:layer()
      z[{{}, {}, head}] = 0
    end}}})
    T.eq(table.concat(seen, ","), "blocks.0.attn.hook_z@0")
    close(lg, t["ablate.logits"], 1e-4, name)
    local lg2 = model:run_with_hooks(t.tokens, {fwd_hooks = {{mi.utils.get_act_name("z", 0), function(z)
      local r = z:clone(); r[{{}, {}, head}] = 0; return r
    end}}})
    close(lg2, t["ablate.logits"], 1e-4, name .. " (returned)")
    -- the hooks are gone afterwards
    close(model(t.tokens), t.logits, 1e-4, name .. " clean")
  end
end)

T.test("hook edits propagate as a recomputation by hand (attn-only: resid_post = resid_pre + kept heads + b_O)", function()
  local model, t, _, head = fixture("attn2")
  local out, cache = model:hooks({{"blocks.0.attn.hook_z", function(z) z[{{}, {}, head}] = 0 end}}, function()
    return model:run_with_cache(t.tokens)
  end)
  local res = cache[{"result", 0}]
  T.eq(res:select(2, head):abs():sum():item(), 0, "result of the ablated head is 0")
  local by_hand = cache[{"resid_pre", 0}] + res:sum(2) + model.b_O[0]
  close(cache[{"resid_post", 0}], by_hand, 1e-5)
  -- and layer 1 sees it: its q is recomputed from the edited stream (shortformer adds pos)
  local q1 = mi.einsum("b p d, h d e -> b p h e", cache[{"resid_pre", 1}] + cache["pos_embed"], model.W_Q[1]) + model.b_Q[1]
  close(cache[{"q", 1}], q1, 1e-4)
  -- editing q changes the scores: q = 0 gives uniform causal attention
  local _, c2 = model:hooks({{"blocks.1.attn.hook_q", function(q) q:zero_() end}}, function()
    return model:run_with_cache(t.tokens, {names_filter = "blocks.1.attn.hook_pattern"})
  end)
  local P = t.tokens:size(1)
  local uni = mi.tril(mi.ones(P, P)) / mi.arange(1, P + 1):float():unsqueeze(-1)
  close(c2[{"pattern", 1}], uni:expand(2, model.cfg.n_heads, P, P), 1e-6)
  -- editing the pattern changes z: attend only to position 0
  local _, c3 = model:hooks({{"blocks.1.attn.hook_pattern", function(p)
    p:zero_(); p[{{}, {}, {}, 0}] = 1
  end}}, function() return model:run_with_cache(t.tokens, {names_filter = {"blocks.1.attn.hook_z", "blocks.1.attn.hook_v"}}) end)
  local v0 = c3[{"v", 1}]:narrow(1, 0, 1):expand(2, P, model.cfg.n_heads, model.cfg.d_head)
  close(c3[{"z", 1}], v0, 1e-6)
end)

T.test("weights are views: zeroing W_O of a head edits the model like the ablation", function()
  local model, t, _, head = fixture("gpt2")
  local W_O = model.W_O
  local saved = W_O[0][head]:clone()
  W_O[0][head] = 0
  close(model(t.tokens), t["ablate.logits"], 1e-4)
  model.W_O[0][head] = saved
  close(model(t.tokens), t.logits, 1e-4)
  T.truthy(model:state_dict()["blocks.0.attn.W_O"][head]:equal(saved))
end)

T.test("hook errors: wrong shapes name the hook; a raising hook reaches the caller with a traceback; the model stays clean", function()
  local model, t = fixture("gpt2")
  T.raises(function()
    model:run_with_hooks(t.tokens, {fwd_hooks = {{"blocks.1.hook_resid_pre", function(x) return mi.zeros(3) end}}})
  end, "hook on blocks.1.hook_resid_pre returned a tensor of shape [3], expected [2,7,32]")
  local err = T.raises(function()
    model:run_with_hooks(t.tokens, {fwd_hooks = {{"blocks.0.hook_mlp_out", function() error("boom in hook") end}}})
  end, "boom in hook")
  T.truthy(tostring(err):find("stack traceback", 1, true), "traceback kept")
  T.raises(function() model:run_with_hooks(t.tokens, {fwd_hooks = {{"blocks.0.hook_mlp_out", 5}}}) end, "must be a function")
  close(model(t.tokens), t.logits, 1e-4, "clean after errors")
  local _, c = model:run_with_cache(t.tokens)
  close(c["blocks.0.hook_mlp_out"], t["act.blocks.0.hook_mlp_out"], 1e-4)
  -- a hook may not run the same model again (its buffers are in use)
  T.raises(function()
    model:run_with_hooks(t.tokens, {fwd_hooks = {{"hook_embed", function() model(t.tokens) end}}})
  end, "already running")
  close(model(t.tokens), t.logits, 1e-4, "clean after a re-entry attempt")
  -- an error inside a scoped block removes its hooks too
  T.raises(function() model:hooks({{"hook_embed", function(e) e:zero_() end}}, function() error("inner") end) end, "inner")
  close(model(t.tokens), t.logits, 1e-4, "scoped hooks removed on error")
end)

T.test("add_hook / reset_hooks / scoped hooks (function and <close>); hook.ctx; filters", function()
  local model, t, _, head = fixture("attn2")
  local calls = 0
  local counts = {}
  model:add_hook(function(n) return n:sub(-7) == "pattern" end, function(p, hook)
    calls = calls + 1
    hook.ctx.n = (hook.ctx.n or 0) + 1
    counts[#counts + 1] = hook.ctx.n
  end)
  model(t.tokens)
  T.eq(calls, 2)
  model(t.tokens)
  T.eq(calls, 4)
  T.eq(table.concat(counts, ","), "1,1,2,2", "hook.ctx of a persistent hook lasts across calls")
  model:add_hook("blocks.0.attn.hook_z", function(z) z[{{}, {}, head}] = 0 end)
  close(model(t.tokens), t["ablate.logits"], 1e-4)
  model:reset_hooks()
  close(model(t.tokens), t.logits, 1e-4)
  do
    local h <close> = model:hooks({{"blocks.0.attn.hook_z", function(z) z[{{}, {}, head}] = 0 end}})
    close(model(t.tokens), t["ablate.logits"], 1e-4)
  end
  close(model(t.tokens), t.logits, 1e-4, "removed at scope exit")
  T.raises(function() model:add_hook("blocks.9.attn.hook_z", function() end) end, "not a hook point")
  -- a kept act is a copy of what the hook saw, not the reused buffer
  local kept = {}
  model:run_with_hooks(t.tokens, {fwd_hooks = {{function(n) return n:find("hook_q", 1, true) end, function(q) kept[#kept + 1] = q end}}})
  local _, c = model:run_with_cache(t.tokens)
  close(kept[1], c[{"q", 0}], 1e-7); close(kept[2], c[{"q", 1}], 1e-7)
end)

T.test("start_at_layer / stop_at_layer", function()
  local model, t = fixture("gpt2")
  local resid = model(t.tokens, {stop_at_layer = 1})
  close(resid, t["act.blocks.1.hook_resid_pre"], 1e-5)
  close(model(t.tokens, {stop_at_layer = -1}), t["act.blocks.1.hook_resid_pre"], 1e-5)
  close(model(t.tokens, {stop_at_layer = 2}), t["act.blocks.1.hook_resid_post"], 1e-5)
  close(model(resid, {start_at_layer = 1}), t.logits, 1e-4)
  local loss = model(resid, {start_at_layer = 1, tokens = t.tokens, return_type = "loss"})
  T.near(loss:item(), t.loss[0]:item(), 1e-4)
  T.raises(function() model(t.tokens, {start_at_layer = 1}) end, "residual stream")
end)

T.test("state_dict / load_state_dict: round trip, ignored buffers, errors naming the tensors", function()
  local model, t = fixture("attn2")
  local sd = model:state_dict()
  local copy = {}
  for k, v in pairs(sd) do copy[k] = v:clone() end
  copy["blocks.0.attn.mask"] = mi.ones(4, 4)
  copy["blocks.1.attn.IGNORE"] = mi.tensor(-1e5)
  local m2 = mi.HookedTransformer(model.cfg)
  m2:load_state_dict(copy)
  close(m2(t.tokens), t.logits, 1e-6)
  local bad = {}
  for k, v in pairs(copy) do bad[k] = v end
  bad["blocks.0.attn.W_Q"] = mi.zeros(3, 3)
  bad["blocks.1.attn.b_O"] = nil
  bad["blocks.0.mlp.W_in"] = mi.zeros(2)
  local err = T.raises(function() m2:load_state_dict(bad) end, "blocks.0.attn.W_Q' has shape [3,3], the model expects [4,32,8]")
  T.truthy(tostring(err):find("missing keys: blocks.1.attn.b_O", 1, true), "missing named")
  T.truthy(tostring(err):find("blocks.0.mlp.W_in", 1, true), "unexpected named")
  close(m2(t.tokens), t.logits, 1e-6, "nothing copied on error")
end)

T.test("all_composition_scores against dense products by hand; QK / OV factored", function()
  for _, name in ipairs{"attn2", "lnpre"} do
    local model = fixture(name)
    local c = model.cfg
    for _, mode in ipairs{"Q", "K", "V"} do
      local s = model:all_composition_scores(mode)
      T.eq(table.concat(s:shape(), ","), table.concat({c.n_layers, c.n_heads, c.n_layers, c.n_heads}, ","))
      for l1 = 0, c.n_layers - 1 do for h1 = 0, c.n_heads - 1 do
        local A = model.W_V[l1][h1]:matmul(model.W_O[l1][h1])
        for l2 = 0, c.n_layers - 1 do for h2 = 0, c.n_heads - 1 do
          local want = 0
          if l1 < l2 then
            local Bm
            if mode == "Q" then Bm = model.W_Q[l2][h2]:matmul(model.W_K[l2][h2]:t())
            elseif mode == "K" then Bm = model.W_K[l2][h2]:matmul(model.W_Q[l2][h2]:t())
            else Bm = model.W_V[l2][h2]:matmul(model.W_O[l2][h2]) end
            want = A:matmul(Bm):norm():item() / (A:norm():item() * Bm:norm():item())
          end
          T.near(s[{l1, h1, l2, h2}]:item(), want, 1e-4 * math.max(want, 1e-3), name .. " " .. mode)
        end end
      end end
    end
  end
  if mi.FactoredMatrix then
    local model = fixture("attn2")
    close(model.OV.AB[1][2], model.W_V[1][2]:matmul(model.W_O[1][2]), 1e-5)
    close(model.QK.AB[0][3], model.W_Q[0][3]:matmul(model.W_K[0][3]:t()), 1e-5)
  end
end)

-- ---------------------------------------------------------------- tokens (a small stand-in tokenizer)
-- one token per character of "abcdefgh ", BOS/EOS/PAD = 9; the methods of mi.load_tokenizer's objects
local function char_tokenizer()
  local chars = "abcdefgh "
  local tok = {}
  function tok:encode_list(s)
    local ids = {}
    for ch in s:gmatch(".") do ids[#ids + 1] = assert(chars:find(ch, 1, true), "char") - 1 end
    return ids
  end
  function tok:encode(s) return mi.tensor(self:encode_list(s), "int64") end
  local function list(x) if type(x) == "table" then return x elseif type(x) == "number" then return {x} end return x:reshape(-1):totable() end
  function tok:tokens(x)
    local out = {}
    for i, id in ipairs(list(x)) do out[i] = id == 9 and "<|endoftext|>" or chars:sub(id + 1, id + 1) end
    return out
  end
  function tok:decode(x) return table.concat(self:tokens(x)) end
  function tok:bos_token_id() return 9 end
  function tok:eos_token_id() return 9 end
  function tok:pad_token_id() return 9 end
  function tok:vocab_size() return 10 end
  return tok
end

T.test("token helpers: to_tokens (BOS), to_str_tokens, to_string, to_single_token; model without tokenizer", function()
  local m = mi.HookedTransformer({d_model = 16, d_head = 4, n_layers = 2, n_ctx = 16, act_fn = "gelu_new", seed = 3},
                                 {tokenizer = char_tokenizer()})
  T.eq(m.cfg.d_vocab, 10, "d_vocab from the tokenizer")
  T.eq(table.concat(m:to_tokens("abc"):totable()[1], ","), "9,0,1,2")
  T.eq(table.concat(m:to_tokens("abc", {prepend_bos = false}):totable()[1], ","), "0,1,2")
  local toks, mask = m:to_tokens({"ab", "abcd"})
  T.eq(mi.json.encode(toks:totable()), "[[9,0,1,9,9],[9,0,1,2,3]]")
  T.eq(mi.json.encode(mask:totable()), "[[1,1,1,0,0],[1,1,1,1,1]]")
  local lt = m:to_tokens({"ab", "abcd"}, {padding_side = "left"})
  T.eq(mi.json.encode(lt:totable()), "[[9,9,9,0,1],[9,0,1,2,3]]")
  T.eq(table.concat(m:to_str_tokens("ab"), "|"), "<|endoftext|>|a|b")
  T.eq(mi.json.encode(m:to_str_tokens({"a", "bc"})), '[["<|endoftext|>","a"],["<|endoftext|>","b","c"]]')
  T.eq(table.concat(m:to_str_tokens(mi.tensor({1, 2}, "int64")), "|"), "b|c")
  T.eq(table.concat(m:to_str_tokens({3, 4}), "|"), "d|e")
  T.eq(m:to_string({9, 0, 1}), "<|endoftext|>ab")
  T.eq(mi.json.encode(m:to_string(mi.tensor({{0, 1}, {2, 3}}, "int64"))), '["ab","cd"]')
  T.eq(m:to_single_token("c"), 2)
  T.raises(function() m:to_single_token("cd") end, "is 2 tokens")
  -- strings in: the same numbers as tokens in
  close(m("abc"), m(m:to_tokens("abc")), 1e-7)
  -- a list of strings: padded on the right; real positions equal the single runs; the loss
  -- ignores the padding
  local lg = m({"ab", "abcd"})
  close(lg[0]:narrow(0, 0, 3), m("ab")[0], 1e-5)
  close(lg[1], m("abcd")[0], 1e-5)
  local per_a = m("ab", {return_type = "loss", loss_per_token = true})
  local per_b = m("abcd", {return_type = "loss", loss_per_token = true})
  local want = (per_a:sum():item() + per_b:sum():item()) / (2 + 4)
  T.near(m({"ab", "abcd"}, {return_type = "loss"}):item(), want, 1e-5)
  -- no tokenizer: tokens still work, strings say what is missing
  local bare = mi.HookedTransformer({d_model = 16, d_head = 4, n_layers = 1, n_ctx = 8, d_vocab = 10, act_fn = "relu"})
  T.eq(bare.tokenizer, nil)
  T.eq(table.concat(bare(mi.tensor({{1, 2, 3}}, "int64")):shape(), ","), "1,3,10")
  T.raises(function() bare("abc") end, "no tokenizer")
end)

T.test("generate: greedy (temperature 0) equals an argmax loop; sampling is seeded", function()
  local m = mi.HookedTransformer({d_model = 16, d_head = 4, n_layers = 2, n_ctx = 16, act_fn = "gelu_new", seed = 11,
                                  initializer_range = 0.5}, {tokenizer = char_tokenizer()})
  local toks = m:to_tokens("ab")
  local want = toks
  for _ = 1, 4 do
    local nxt = m(want)[0][-1]:argmax(0):item()
    want = mi.cat({want, mi.tensor({{nxt}}, "int64")}, 1)
  end
  local got = m:generate(toks, {max_new_tokens = 4, temperature = 0, stop_at_eos = false})
  T.eq(mi.json.encode(got:totable()), mi.json.encode(want:totable()))
  local s = m:generate("ab", {max_new_tokens = 4, temperature = 0, stop_at_eos = false})
  T.eq(type(s), "string"); T.eq(s:sub(1, 2), "ab")
  local a = m:generate(toks, {max_new_tokens = 5, seed = 7, top_k = 3, stop_at_eos = false})
  local b = m:generate(toks, {max_new_tokens = 5, seed = 7, top_k = 3, stop_at_eos = false})
  T.eq(mi.json.encode(a:totable()), mi.json.encode(b:totable()))
  T.eq(a:size(1), 8)
end)

T.test("gelu_new and softmax over wide ranges: hook_post = gelu_new(hook_pre), pattern = softmax(scores) (tensor ops)", function()
  local m = mi.HookedTransformer({d_model = 32, d_head = 8, n_layers = 1, n_ctx = 40, d_vocab = 20, act_fn = "gelu_new",
                                  seed = 2, initializer_range = 2.0})
  local toks = mi.randint(0, 20, {3, 40}, mi.Generator(1))
  local _, c = m:run_with_cache(toks)
  local pre = c["blocks.0.mlp.hook_pre"]
  T.truthy(pre:abs():max():item() > 30, "inputs reach the saturated ends")
  close(c["blocks.0.mlp.hook_post"], pre:gelu_new(), 1e-6)
  local s = c["blocks.0.attn.hook_attn_scores"]
  T.truthy(s:masked_fill(s:eq(-math.huge), 0):abs():max():item() > 50, "wide scores")
  close(c["blocks.0.attn.hook_pattern"], s:softmax(-1), 1e-6)
end)

T.test("cache:save writes safetensors keyed by full hook names (read back with mi.load)", function()
  if not mi.save then print("SKIP - cache:save: mi.save not in this build"); return end
  local model, t = fixture("attn2")
  local _, cache = model:run_with_cache(t.tokens, {names_filter = function(n) return n:find("hook_z") or n == "hook_embed" end})
  local path = os.tmpname()
  cache:save(path)
  local back = mi.load(path)
  os.remove(path)
  local n = 0
  for k, v in pairs(back) do n = n + 1; close(v, cache[k], 0, k) end
  T.eq(n, 3)
end)

local SHARED = os.getenv("MIWB_SHARED") or "../shared"
T.test("the seed notebook's token outputs with the real GPT-2 tokenizer", function()
  local f = io.open(SHARED .. "/assets/gpt2/tokenizer.json")
  if not f or not mi.load_tokenizer then print("SKIP - GPT-2 tokenizer: " .. SHARED .. "/assets/gpt2 or mi.load_tokenizer missing"); return end
  f:close()
  local m = mi.HookedTransformer({d_model = 8, d_head = 4, n_layers = 1, n_ctx = 64, attn_only = true, seed = 1},
                                 {tokenizer = SHARED .. "/assets/gpt2"})
  T.eq(m.cfg.d_vocab, 50257)
  T.eq(mi.json.encode(m:to_str_tokens("gpt2")), '["<|endoftext|>","g","pt","2"]')
  T.eq(mi.json.encode(m:to_str_tokens({"gpt2", "gpt2"})), '[["<|endoftext|>","g","pt","2"],["<|endoftext|>","g","pt","2"]]')
  T.eq(mi.json.encode(m:to_tokens("gpt2"):totable()), "[[50256,70,457,17]]")
  T.eq(m:to_string({50256, 70, 457, 17}), "<|endoftext|>gpt2")
  T.eq(m:to_single_token(" the"), 262)
  -- right padding with the EOS id, as TransformerLens pads GPT-2
  local toks, mask = m:to_tokens({"gpt2", "a"})
  T.eq(mi.json.encode(toks:totable()), "[[50256,70,457,17],[50256,64,50256,50256]]")
  T.eq(mi.json.encode(mask:totable()), "[[1,1,1,1],[1,1,0,0]]")
end)

T.test("config from JSON: null fields are Python's None", function()
  local c = mi.HookedTransformerConfig(mi.json.decode('{"d_model": 8, "d_head": 4, "n_layers": 1, "n_ctx": 4, "d_vocab": 5, "attn_only": true, "normalization_type": null, "seed": null}'))
  T.eq(c.normalization_type, nil); T.eq(c.seed, nil)
  local m = mi.HookedTransformer(c)
  local names = table.concat(m:hook_names(), ",")
  T.truthy(not names:find("ln1", 1, true), "no LayerNorm hooks")
end)

T.done()
