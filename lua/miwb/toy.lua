-- miwb.toy: models whose weights are set by hand to hold a known circuit, for tests and for
-- trying the analysis tools where no trained model is at hand.
--
-- induction_circuit{} builds a 2-layer attention-only shortformer model (normalization None,
-- use_attn_result) with an induction circuit planted in two heads; every other head gets
-- small random weights. The residual stream [d_model = 3V + n_ctx] is cut into subspaces:
--   [0, V)           token identity (W_E is one-hot)
--   [V, 2V)          "previous token", written by the previous-token head of layer 0
--   [2V, 3V)         "next-token prediction", written by the induction head of layer 1
--   [3V, 3V+n_ctx)   position, one-hot (shortformer: added to the Q and K inputs only)
-- Layer 0, head prev_head: query position p, key position p' score a^2 [p == p' + 1]:
--   attends to the previous position and copies its token into [V, 2V).
-- Layer 1, head ind_head: query token t, key score b^2 [token at p'-1 == t] read from
--   [V, 2V) (K-composition with the previous-token head); copies the attended token into
--   [2V, 3V), which W_U reads out: the head predicts the token that followed t last time.
local M = {}

function M.induction_circuit(opts)
  local mi = require("miwb")
  mi.utils.check_opts("toy.induction_circuit", opts, {"d_vocab", "n_ctx", "n_heads", "prev_head", "ind_head",
                                                      "score", "logit", "seed", "noise"})
  opts = opts or {}
  local V = opts.d_vocab or 100
  local N = opts.n_ctx or 128
  local H = opts.n_heads or 4
  local hp = opts.prev_head or 1
  local hi = opts.ind_head or 2
  local dh = math.max(N, V)
  local d = 3 * V + N
  local scale = opts.score or 20        -- attention logit of a match, after 1/sqrt(d_head)
  local a = math.sqrt(scale * math.sqrt(dh))
  local c = opts.logit or 10            -- logit of the predicted token
  local g = mi.Generator(opts.seed or 0)
  local noise = opts.noise or 0.02

  local cfg = mi.HookedTransformerConfig{
    d_model = d, d_head = dh, n_heads = H, n_layers = 2, n_ctx = N, d_vocab = V,
    attn_only = true, normalization_type = "None", positional_embedding_type = "shortformer",
    use_attn_result = true, act_fn = "gelu_new", seed = opts.seed or 0,
  }

  local sd = {}
  sd["embed.W_E"] = mi.zeros(V, d)
  sd["embed.W_E"][{{}, {0, V}}] = mi.eye(V)
  sd["pos_embed.W_pos"] = mi.zeros(N, d)
  sd["pos_embed.W_pos"][{{}, {3 * V, 3 * V + N}}] = mi.eye(N)
  for l = 0, 1 do
    local p = "blocks." .. l .. ".attn."
    sd[p .. "W_Q"] = mi.randn({H, d, dh}, g) * noise
    sd[p .. "W_K"] = mi.randn({H, d, dh}, g) * noise
    sd[p .. "W_V"] = mi.randn({H, d, dh}, g) * noise
    sd[p .. "W_O"] = mi.randn({H, dh, d}, g) * noise
    sd[p .. "b_Q"] = mi.zeros(H, dh)
    sd[p .. "b_K"] = mi.zeros(H, dh)
    sd[p .. "b_V"] = mi.zeros(H, dh)
    sd[p .. "b_O"] = mi.zeros(d)
  end
  -- previous-token head (layer 0)
  local WQ, WK = sd["blocks.0.attn.W_Q"], sd["blocks.0.attn.W_K"]
  local WV, WO = sd["blocks.0.attn.W_V"], sd["blocks.0.attn.W_O"]
  WQ[hp]:zero_(); WK[hp]:zero_(); WV[hp]:zero_(); WO[hp]:zero_()
  WQ[{hp, {3 * V, 3 * V + N}, {0, N}}] = mi.eye(N) * a            -- pos p -> head dim p
  WK[{hp, {3 * V, 3 * V + N - 1}, {1, N}}] = mi.eye(N - 1) * a    -- pos p' -> head dim p'+1
  WV[{hp, {0, V}, {0, V}}] = mi.eye(V)                              -- token t -> head dim t
  WO[{hp, {0, V}, {V, 2 * V}}] = mi.eye(V)                          -- head dim t -> prev-token t
  -- induction head (layer 1)
  WQ, WK = sd["blocks.1.attn.W_Q"], sd["blocks.1.attn.W_K"]
  WV, WO = sd["blocks.1.attn.W_V"], sd["blocks.1.attn.W_O"]
  WQ[hi]:zero_(); WK[hi]:zero_(); WV[hi]:zero_(); WO[hi]:zero_()
  WQ[{hi, {0, V}, {0, V}}] = mi.eye(V) * a                          -- token t -> head dim t
  WK[{hi, {V, 2 * V}, {0, V}}] = mi.eye(V) * a                      -- prev-token t -> head dim t
  WV[{hi, {0, V}, {0, V}}] = mi.eye(V)
  WO[{hi, {0, V}, {2 * V, 3 * V}}] = mi.eye(V)
  sd["unembed.W_U"] = mi.zeros(d, V)
  sd["unembed.W_U"][{{2 * V, 3 * V}, {}}] = mi.eye(V) * c
  sd["unembed.b_U"] = mi.zeros(V)

  local model = mi.HookedTransformer(cfg)
  model:load_state_dict(sd)
  model.planted = {prev = {0, hp}, induction = {1, hi}}
  return model
end

return M
