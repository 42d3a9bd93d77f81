-- The one config path (core/config.c, lua/lconfig.c, HookedTransformerConfig in lua/miwb/model.lua):
-- defaults and derived fields as TransformerLens 2.12's HookedTransformerConfig.__post_init__
-- (closed forms below), Python's None spelled false / "None" / json.null, errors naming the
-- field for configs TransformerLens rejects or miwb cannot run, and attn_scale honoured by the
-- forward pass (scores recomputed from the cached q and k).
local T = require("testlib")
local mi = require("miwb")

local BASE = {d_model = 32, d_head = 8, n_layers = 1, n_ctx = 16, d_vocab = 20}
local function cfg(extra)
  local t = {}
  for k, v in pairs(BASE) do t[k] = v end
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

T.test("derived fields: n_heads, d_mlp, d_vocab_out, attn_scale, initializer_range, n_params", function()
  local c = mi.HookedTransformerConfig(cfg{act_fn = "relu"})
  T.eq(c.n_heads, 32 // 8); T.eq(c.d_mlp, 4 * 32); T.eq(c.d_vocab_out, 20)
  T.near(c.attn_scale, math.sqrt(8), 1e-12); T.near(c.initializer_range, 0.8 / math.sqrt(32), 1e-12)
  T.eq(c.n_params, 1 * (32 * 8 * 4 * 4) + 1 * 32 * 128 * 2)
  T.eq(c.seed, nil); T.eq(c.model_name, "custom"); T.eq(c.init_mode, "gpt2"); T.eq(c.tokenizer_name, nil)
  local u = mi.HookedTransformerConfig(cfg{attn_only = true, use_attn_scale = false})
  T.eq(u.attn_scale, -1.0, "TransformerLens leaves attn_scale at -1 when use_attn_scale is false")
  T.eq(u.d_mlp, nil, "attention-only: d_mlp is None")
  local v = mi.HookedTransformerConfig{d_model = 32, d_head = 8, n_layers = 1, n_ctx = 16, attn_only = true}
  T.eq(v.d_vocab, -1); T.eq(v.d_vocab_out, -1, "d_vocab unknown until a tokenizer gives it")
end)

T.test("normalization_type: absent is 'LN'; false, 'None' and json.null are None", function()
  T.eq(mi.HookedTransformerConfig(cfg{attn_only = true}).normalization_type, "LN")
  for _, none in ipairs{false, "None", mi.json.null} do
    T.eq(mi.HookedTransformerConfig(cfg{attn_only = true, normalization_type = none}).normalization_type, nil,
         tostring(none))
  end
  local j = mi.json.decode('{"d_model": 32, "d_head": 8, "n_layers": 1, "n_ctx": 16, "d_vocab": 20,' ..
                           '"attn_only": true, "normalization_type": null, "seed": null, "d_mlp": null}')
  local c = mi.HookedTransformerConfig(j)
  T.eq(c.normalization_type, nil); T.eq(c.seed, nil)
  -- the model built from the config has no LayerNorm hooks, one built without the field has them
  local none = mi.HookedTransformer(c)
  local ln = mi.HookedTransformer(cfg{attn_only = true})
  local function has(m, name) for _, n in ipairs(m:hook_names()) do if n == name then return true end end end
  T.eq(has(none, "blocks.0.ln1.hook_normalized"), nil); T.eq(has(ln, "blocks.0.ln1.hook_normalized"), true)
end)

T.test("configs TransformerLens rejects, or miwb cannot run, raise naming the field", function()
  T.raises(function() mi.HookedTransformerConfig(cfg{d_modle = 3, attn_only = true}) end, "unknown field 'd_modle'")
  T.raises(function() mi.HookedTransformerConfig(cfg{}) end, "act_fn")
  T.raises(function() mi.HookedTransformerConfig(cfg{act_fn = "soul"}) end, "act_fn")
  T.raises(function() mi.HookedTransformerConfig(cfg{act_fn = "solu", gated_mlp = true}) end,
           "act_fn 'solu' with gated_mlp is not supported")
  T.raises(function() mi.HookedTransformerConfig{d_model = 32, d_head = 8, n_ctx = 16, attn_only = true} end, "n_layers")
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, d_head = 0}) end, "d_head")
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, n_ctx = 2.5}) end, "n_ctx must be an integer")
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = "maybe"}) end, "attn_only must be a boolean")
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, positional_embedding_type = false}) end,
           "positional_embedding_type cannot be None")
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, eps = -1e-5}) end, "eps")
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, attn_scale = 0}) end, "attn_scale")
  -- features miwb does not have yet: refused unless at TransformerLens's default value
  for k, v in pairs{init_mode = "xavier_uniform", attention_dir = "bidirectional", use_local_attn = true,
                    num_experts = 4, post_embedding_ln = true} do
    T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, [k] = v}) end, k .. " = ", k)
  end
  -- the architecture options are checked by the core, naming the field
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, n_key_value_heads = 3}) end, "n_key_value_heads must divide")
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, positional_embedding_type = "rotary", rotary_dim = 3}) end, "rotary_dim")
  T.raises(function() mi.HookedTransformerConfig(cfg{attn_only = true, final_rms = true}) end, "final_rms")
  local ok = mi.HookedTransformerConfig(cfg{attn_only = true, gated_mlp = false, n_key_value_heads = mi.json.null,
                                            rotary_base = 10000, dtype = "torch.float32", device = "cpu"})
  T.eq(ok.gated_mlp, false); T.eq(ok.rotary_base, 10000); T.eq(ok.n_key_value_heads, nil)
  local r = mi.HookedTransformerConfig(cfg{attn_only = true, positional_embedding_type = "rotary"})
  T.eq(r.rotary_dim, 8, "rotary_dim defaults to d_head")
end)

T.test("attn_scale: the forward pass divides q.k by it (TransformerLens), or by 1 without use_attn_scale", function()
  local toks = mi.tensor({{0, 3, 7, 1, 19, 4}}, "int64")
  for _, case in ipairs{{attn_scale = 2.5}, {use_attn_scale = false}, {}} do
    local c = cfg{attn_only = true, normalization_type = false, seed = 3}
    for k, v in pairs(case) do c[k] = v end
    local model = mi.HookedTransformer(c)
    local _, cache = model:run_with_cache(toks)
    local q, k = cache["blocks.0.attn.hook_q"][0], cache["blocks.0.attn.hook_k"][0]  -- [P, H, dh]
    local div = case.attn_scale or (case.use_attn_scale == false and 1) or math.sqrt(8)
    local want = mi.einsum("q h d, k h d -> h q k", q, k) / div
    local got = cache["blocks.0.attn.hook_attn_scores"][0]
    local mask = mi.ones(6, 6):tril():bool()
    for h = 0, 3 do
      T.truthy(got[h][mask]:allclose(want[h][mask], 1e-5, 1e-6), "head " .. h .. " " .. mi.json.encode(case))
    end
  end
end)

T.done()
