-- docs/figures.lua: draws the example figures of README.md (docs/*.png) with mi.plot.
-- Run from the repository root:  build/miwb docs/figures.lua
-- Each figure is drawn under plots/docs/ (with its data and script, kept out of git); the PNG is then
-- copied to docs/.
-- The data are SYNTHETIC, made up here to show what the figures look like: attention patterns of a
-- previous-token head, an induction head, a BOS-sink head and a local-averaging head on a repeated
-- random-token sequence, and a made-up induction-score table. They are not model outputs.
local ok, mi = pcall(require, "miwb")
if not ok then
  package.path = "lua/?.lua;" .. package.path
  mi = {plot = require("miwb.plot")}
end
local plot = mi.plot

local function publish(path)
  local name = path:match("[^/]*$")
  assert(os.execute("cp '" .. path .. "' 'docs/" .. name .. "'"))
  print("docs/" .. name)
end

-- x_{n+1} = 69069 x_n + 1 mod 2^32, so the figures are the same on every machine
local seed = 2024
local function rnd()
  seed = (69069 * seed + 1) % 4294967296
  return seed / 4294967296
end

local words = {" neat", " post", " 99", "cancer", "church", " lunar", "ville", " '", "_id", " {",
               " @", "é", " the", " Mr", " 1984", " café"}
local seq = 12
local toks = {"<|endoftext|>"}
for _ = 1, seq do toks[#toks + 1] = words[1 + math.floor(rnd() * #words)] end
for i = 1, seq do toks[#toks + 1] = toks[i + 1] end
local n = #toks

-- softmax over the keys k <= q of score(q, k) plus a little noise
local function head(score)
  local pat = {}
  for q = 1, n do
    local row, s = {}, 0
    for k = 1, n do
      row[k] = k <= q and math.exp(score(q, k) + 0.6 * rnd()) or 0
      s = s + row[k]
    end
    for k = 1, n do row[k] = row[k] / s end
    pat[q] = row
  end
  return pat
end

local pattern = {
  head(function(q, k) return k == q - 1 and 5 or 0 end),                         -- previous token
  head(function(q, k) return (q > seq + 1 and k == q - seq + 1) and 6 or (k == 1 and 2 or 0) end), -- induction
  head(function(_, k) return k == 1 and 4 or 0 end),                             -- BOS sink
  head(function(q, k) return -0.8 * (q - k) end),                                -- local average
}
publish(plot.attention_patterns(toks, pattern, {
  out = "plots/docs/attention_patterns.png",
  title = "Attention patterns on a repeated random sequence (synthetic)",
  head_names = {"L0H7 previous token", "L1H4 induction", "L1H6 BOS sink", "L0H1 local average"},
  cols = 2,
}))

local scores = {{}, {}}
for h = 1, 12 do
  scores[1][h] = 0.04 * rnd()
  scores[2][h] = 0.03 + 0.08 * rnd()
end
scores[2][5], scores[2][11] = 0.91, 0.62
publish(plot.imshow(scores, {
  out = "plots/docs/induction_scores.png",
  title = "Induction score by head (synthetic)",
  labels = {x = "Head", y = "Layer", color = "score"}, text_auto = ".2f", range = {0, 1},
}))
