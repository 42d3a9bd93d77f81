-- Tests of mi.plot (lua/miwb/plot.lua): every kind of figure is drawn by the real gnuplot into a
-- temporary folder; the image's size is read from the PNG header (or the SVG root), the data file is
-- parsed back and compared with the input, and text is checked in SVG output, where gnuplot writes
-- labels as XML text.
local T = require("testlib")

-- the module: through `require "miwb"` in the miwb program, or from lua/ under a stock lua5.4
local mi
do
  local ok, m = pcall(require, "miwb")
  if ok and type(m) == "table" and m.plot then mi = m
  else
    package.path = "lua/?.lua;" .. package.path
    mi = {plot = require("miwb.plot")}
  end
end
local plot = mi.plot

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local tmp = os.tmpname()
os.remove(tmp)
tmp = tmp .. "-miwb-plot"
assert(os.execute("mkdir -p " .. shq(tmp)))
plot.dir = tmp .. "/default"

local function read(path)
  local fh = assert(io.open(path, "rb"), "missing file " .. path)
  local s = fh:read("a")
  fh:close()
  return s
end

local function exists(path)
  local fh = io.open(path, "rb")
  if fh then fh:close() return true end
  return false
end

-- width, height from a PNG's IHDR chunk (bytes 17..24, big-endian)
local function png_size(path)
  local s = read(path)
  T.eq(s:sub(1, 8), "\137PNG\r\n\26\n", "PNG signature of " .. path)
  T.eq(s:sub(13, 16), "IHDR", "IHDR chunk")
  return string.unpack(">I4I4", s, 17)
end

-- numbers of a whitespace-separated data file, as blocks (split at blank-line pairs) of rows
local function parse_blocks(path)
  local blocks, rows, blank = {}, {}, 0
  for line in (read(path) .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*$") then
      blank = blank + 1
      if blank == 2 and #rows > 0 then blocks[#blocks + 1] = rows; rows = {} end
    else
      blank = 0
      local row = {}
      for w in line:gmatch("%S+") do
        local v = tonumber(w) or (w == "NaN" and 0 / 0) or (w == "Inf" and math.huge) or (w == "-Inf" and -math.huge)
        assert(v, "not a number in " .. path .. ": " .. w)
        row[#row + 1] = v
      end
      rows[#rows + 1] = row
    end
  end
  if #rows > 0 then blocks[#blocks + 1] = rows end
  return blocks
end

-- relative comparison: the data file keeps 9 significant digits
local function close_rel(a, b, msg)
  if a ~= a and b ~= b then return end
  T.truthy(math.abs(a - b) <= 1e-8 * math.max(1, math.abs(b)), (msg or "value") .. ": " .. a .. " vs " .. b)
end

local function svg_has(svg, text)
  -- gnuplot's svg terminal escapes & and < in text; > may be escaped or not
  local e = text:gsub("&", "&amp;"):gsub("<", "&lt;")
  local e2 = e:gsub(">", "&gt;")
  return svg:find(">" .. e .. "<", 1, true) or svg:find(">" .. e2 .. "<", 1, true)
end

-- Runs a figure's script with `set table` instead of its terminal: gnuplot then writes the points it
-- would draw (after the script's own transformations: masking, binning) as text. Returns the rows
-- of the first curve, each a list of numbers (nan for undefined).
local function gnuplot_table(script)
  local dir, name = script:match("^(.*)/([^/]*)$")
  local gp = read(script):gsub("\nset terminal [^\n]*", '\nset table "table.txt"'):gsub("\nset output [^\n]*", "")
  local fh = assert(io.open(dir .. "/table_" .. name, "w"))
  fh:write(gp)
  fh:close()
  assert(os.execute("cd " .. shq(dir) .. " && gnuplot " .. shq("table_" .. name) .. " 2>/dev/null"))
  local rows, curve = {}, 0
  for line in read(dir .. "/table.txt"):gmatch("[^\n]+") do
    if line:match("^# Curve") then curve = curve + 1
    elseif not line:match("^#") and curve == 1 then
      local row = {}
      for w in line:gmatch("%S+") do
        local v = tonumber(w)
        if v == nil and w == "nan" then v = 0 / 0 end
        if v ~= nil then row[#row + 1] = v end
      end
      if #row > 0 then rows[#rows + 1] = row end
    end
  end
  return rows
end

-- a small deterministic generator (not the code under test): x_{n+1} = 69069 x_n + 1 mod 2^32
local seed = 12345
local function rnd()
  seed = (69069 * seed + 1) % 4294967296
  return seed / 4294967296
end

local function matrix(nr, nc, f)
  local m = {}
  for i = 1, nr do m[i] = {} for j = 1, nc do m[i][j] = f(i, j) end end
  return m
end

T.test("label_text shows printable text as itself and control/invalid bytes as escapes", function()
  for _, s in ipairs{"plain", " leading space", "'", "''", '"', "\\", "@x", "a_b", "x^2", "{y}", "&amp;",
                     "<b>", "100%", "#", "`date`", "$1", "é", "中文", "🙂", ""} do
    T.eq(plot.label_text(s), s, "printable string kept")
  end
  T.eq(plot.label_text("a\nb"), "a\\nb")
  T.eq(plot.label_text("\t\r"), "\\t\\r")
  T.eq(plot.label_text("x\0y"), "x\\x00y")
  T.eq(plot.label_text("\127"), "\\x7F")
  T.eq(plot.label_text("ok\xffok"), "ok\\xFFok")       -- invalid byte
  T.eq(plot.label_text("\xc3"), "\\xC3")                -- truncated 2-byte sequence
  T.eq(plot.label_text("\xc2\x85"), "\\u{85}")          -- C1 control (NEL)
end)

T.test("gp_quote escapes backslash, double quote and backquote; tic labels double %", function()
  T.eq(plot.gp_quote([[a"b\c`d'e]]), [["a\"b\\c\140d'e"]])
  T.eq(plot.gp_quote("'s"), [["'s"]])
  T.eq(plot.gp_tic_quote("100% %d"), [["100%% %%d"]])
end)

T.test("imshow: PNG of the requested size, data file holds the values, script beside it", function()
  local m = matrix(3, 5, function(i, j) return (rnd() - 0.5) * 10 ^ (j - 3) end)
  m[2][3] = -1234.5678
  local path, info = plot.imshow(m, {out = tmp .. "/imshow/", name = "m", width = 640, height = 360,
                                     title = "t", x = {"a", "b", "c", "d", "e"}})
  T.eq(path, tmp .. "/imshow/m.png")
  local w, h = png_size(path)
  T.eq(w, 640, "width"); T.eq(h, 360, "height")
  T.eq(info.script, tmp .. "/imshow/m.gp")
  T.truthy(exists(info.script), "script exists")
  T.eq(info.data[1], tmp .. "/imshow/m.dat")
  local blocks = parse_blocks(info.data[1])
  T.eq(#blocks, 1)
  T.eq(#blocks[1], 3, "rows")
  for i = 1, 3 do
    T.eq(#blocks[1][i], 5, "columns")
    for j = 1, 5 do close_rel(blocks[1][i][j], m[i][j], "m[" .. i .. "][" .. j .. "]") end
  end
end)

T.test("imshow: default size, default folder created, text_auto values written in the cells", function()
  local m = {{0.125, -0.5}, {2.0, 0.333}}
  local path = plot.imshow(m, {name = "auto", text_auto = ".2f"})
  T.eq(path, tmp .. "/default/auto.png")
  local w, h = png_size(path)
  T.truthy(w >= 240 and h >= 160, "a reasonable default size")
  local svgpath = plot.imshow(m, {name = "auto", format = "svg", text_auto = ".2f"})
  local svg = read(svgpath)
  -- %.2f of each value, worked out by hand
  for _, s in ipairs{"0.12", "-0.50", "2.00", "0.33"} do T.truthy(svg_has(svg, s), "cell text " .. s) end
end)

T.test("imshow: SVG sized as asked, tick labels and titles verbatim", function()
  local toks = {"'s", "\"q\"", "\\", "@x_y^{z}", "&amp;", "<b>", "100%", "é中", "#c", "`date`", "a\nb", "$1"}
  local m = matrix(2, #toks, function(i, j) return i * j end)
  local path = plot.imshow(m, {out = tmp .. "/svg/toks.svg", x = toks, y = {"L0", "L1"},
                               title = "T & <i> 'q' \"dq\" \\ @_^{} 100%", width = 900, height = 300})
  T.eq(path, tmp .. "/svg/toks.svg")
  local svg = read(path)
  T.truthy(svg:find('width="900"', 1, true) and svg:find('height="300"', 1, true), "svg size 900x300")
  for _, t in ipairs(toks) do
    local shown = t == "a\nb" and "a\\nb" or t
    T.truthy(svg_has(svg, shown), "token label " .. shown)
  end
  T.truthy(svg_has(svg, "T & <i> 'q' \"dq\" \\ @_^{} 100%"), "title verbatim")
end)

T.test("attention_patterns: grid PNG, all heads in the data file, hostile tokens verbatim in SVG", function()
  local toks = {"<|endoftext|>", " the", "'s", "\"", "\\", "@", "_x_", "^", "{}", "&", "<>", "100%",
                "é", "中文", "\n", "`ls`"}
  local n, H = #toks, 3
  local pat = {}
  for h = 1, H do
    pat[h] = {}
    for qi = 1, n do
      local row, s = {}, 0
      for k = 1, n do row[k] = k <= qi and rnd() or 0; s = s + row[k] end
      for k = 1, n do row[k] = row[k] / s end
      pat[h][qi] = row
    end
  end
  local path, info = plot.attention_patterns(toks, pat, {out = tmp .. "/attn/", name = "p", layer = 1,
                                                         title = "Layer 1"})
  local w, h = png_size(path)
  T.truthy(w > 300 and h > 300, "grid size " .. w .. "x" .. h)
  local blocks = parse_blocks(info.data[1])
  T.eq(#blocks, H, "one block per head")
  for hh = 1, H do
    T.eq(#blocks[hh], n)
    for qi = 1, n do for k = 1, n do close_rel(blocks[hh][qi][k], pat[hh][qi][k]) end end
  end
  -- a requested size is honoured
  local p2 = plot.attention_patterns(toks, pat, {out = tmp .. "/attn/", name = "sized", width = 1000, height = 420})
  local w2, h2 = png_size(p2)
  T.eq(w2, 1000); T.eq(h2, 420)
  -- SVG: every token label appears as itself (newline shown as \n), head names as given
  local sp = plot.attention_patterns(toks, pat, {out = tmp .. "/attn/", name = "p", format = "svg",
                                                 head_names = {"prev", "ind'n", "BOS & co"}, heads = {0, 2}})
  local svg = read(sp)
  for _, t in ipairs(toks) do
    local shown = t == "\n" and "\\n" or t
    T.truthy(svg_has(svg, shown), "token " .. shown)
  end
  T.truthy(svg_has(svg, "prev") and svg_has(svg, "BOS & co"), "selected head names")
  T.truthy(not svg_has(svg, "ind'n"), "unselected head not drawn")
end)

T.test("attention_patterns: keys after the query are masked (drawn as undefined), others drawn as is", function()
  -- 2 queries over 3 keys (the queries are the last two positions): query i sees keys 0..i+1
  local pat = {{{0.5, 0.5, 0.9}, {0.2, 0.3, 0.5}}}
  local _, info = plot.attention_patterns({"a", "b", "c"}, pat, {out = tmp .. "/mask/", name = "m", format = "svg"})
  local rows = gnuplot_table(info.script)
  T.eq(#rows, 6, "six cells")
  for _, r in ipairs(rows) do
    local k, qi, v = r[1], r[2], r[3]
    if k > qi + 1 then T.truthy(v ~= v, "masked cell key " .. k .. " query " .. qi)
    else T.near(v, pat[1][qi + 1][k + 1], 1e-6, "cell key " .. k .. " query " .. qi) end
  end
  local _, i2 = plot.attention_patterns({"a", "b", "c"}, pat, {out = tmp .. "/mask/", name = "nomask", mask = false, format = "svg"})
  for _, r in ipairs(gnuplot_table(i2.script)) do T.near(r[3], pat[1][r[2] + 1][r[1] + 1], 1e-6) end
end)

T.test("attention_patterns: 100 tokens stay drawable; a [q, k] pattern is one head", function()
  local n = 101
  local toks, pat = {}, {}
  for i = 1, n do toks[i] = "tok" .. i end
  for qi = 1, n do
    pat[qi] = {}
    for k = 1, n do pat[qi][k] = k <= qi and 1 / qi or 0 end
  end
  local path, info = plot.attention_patterns(toks, pat, {out = tmp .. "/attn/", name = "long"})
  local w, h = png_size(path)
  T.truthy(w >= n * 7 and h >= n * 7, "at least 7 px per token: " .. w .. "x" .. h)
  local blocks = parse_blocks(info.data[1])
  T.eq(#blocks, 1); T.eq(#blocks[1], n)
  close_rel(blocks[1][n][n], 1 / n)
end)

T.test("line: several series of different lengths, markers, vertical line", function()
  local a, b = {}, {}
  for i = 1, 30 do a[i] = math.sin(i / 5) end
  for i = 1, 20 do b[i] = i * 0.25 end
  local path, info = plot.line({a, b}, {out = tmp .. "/line.png", labels = {"sin", "ramp"}, markers = true,
                                        vline = {{15, label = "repeat starts"}}, width = 700, height = 400})
  T.eq(path, tmp .. "/line.png")
  local w, h = png_size(path)
  T.eq(w, 700); T.eq(h, 400)
  local rows = parse_blocks(info.data[1])[1]
  T.eq(#rows, 30)
  for i = 1, 30 do
    T.eq(rows[i][1], i - 1, "x column")
    close_rel(rows[i][2], a[i])
    if i <= 20 then close_rel(rows[i][3], b[i]) else T.truthy(rows[i][3] ~= rows[i][3], "padding NaN") end
  end
  local svg = read(plot.line({a, b}, {out = tmp .. "/line.svg", labels = {"sin", "ramp"},
                                      vline = {{15, label = "repeat starts"}}}))
  T.truthy(svg_has(svg, "repeat starts") and svg_has(svg, "sin") and svg_has(svg, "ramp"), "labels in svg")
end)

T.test("line: explicit x values and a 2-D table whose rows are series", function()
  local _, info = plot.line({{1, 2, 3}, {4, 5, 6}}, {out = tmp .. "/", name = "xy", x = {0.5, 1.5, 2.5}})
  local rows = parse_blocks(info.data[1])[1]
  T.near_table(rows, {{0.5, 1, 4}, {1.5, 2, 5}, {2.5, 3, 6}}, 0)
end)

T.test("hist: PNG, raw values in the data file, mean line label", function()
  local v = {}
  for i = 1, 500 do v[i] = rnd() * 4 - 1 end
  local path, info = plot.hist(v, {out = tmp .. "/hist/", name = "h", bins = 20, width = 600, height = 350})
  local w, h = png_size(path)
  T.eq(w, 600); T.eq(h, 350)
  local rows = parse_blocks(info.data[1])[1]
  T.eq(#rows, 500)
  for i = 1, 500 do close_rel(rows[i][1], v[i]) end
  local svg = read(plot.hist({1, 2, 3, 6}, {out = tmp .. "/hist/", name = "m", format = "svg", mean = true}))
  T.truthy(svg_has(svg, "mean = 3.000"), "mean of 1,2,3,6 is 3")
  -- the script's binning, run through gnuplot's `set table`: bins [0,1) [1,2) [2,3] of 7 values
  -- hold 1, 2 and 4 of them (worked out by hand); density divides by (n in range) * width = 7
  for _, case in ipairs{{false, {1, 2, 4}}, {true, {1 / 7, 2 / 7, 4 / 7}}} do
    local _, ih = plot.hist({0.5, 1.5, 7.0, 1.9, 2.5, 0 / 0, 2.0, -1, math.huge, 2.5, -math.huge, 3.0},
                            {out = tmp .. "/hist/", name = "bins", range = {0, 3}, bins = 3, density = case[1]})
    local got = gnuplot_table(ih.script)
    T.eq(#got, 3, "three bins")
    for i = 1, 3 do
      T.near(got[i][1], i - 0.5, 1e-9, "bin centre")
      -- 7.0, -1, +-Inf and NaN fall outside the range; 2.0 goes to the third bin, 3.0 too (last bin
      -- closed); values outside, in the middle of the data, must not split the sums
      T.near(got[i][2], case[2][i], 1e-5, "bin " .. i .. " value")
    end
  end
  -- two series overlaid: two blocks
  local _, i2 = plot.hist({{1, 2, 2}, {3, 3, 4, 5}}, {out = tmp .. "/hist/", name = "two", labels = {"a", "b"}})
  local blocks = parse_blocks(i2.data[1])
  T.eq(#blocks, 2); T.eq(#blocks[1], 3); T.eq(#blocks[2], 4)
end)

T.test("hist: the extreme values are counted (bins from the data's own range)", function()
  -- float32-like values whose 9-digit forms round up or down: all 300 must land in some bin
  local v = {}
  for i = 1, 300 do v[i] = (rnd() - 0.5) * 5.123456789 + 1e-9 * i end
  local _, info = plot.hist(v, {out = tmp .. "/hist/", name = "extremes", bins = 30})
  local rows = gnuplot_table(info.script)
  local total = 0
  for _, r in ipairs(rows) do total = total + r[2] end
  T.eq(total, 300, "every value counted once")
  T.truthy(#rows <= 30, "one sum per bin: " .. #rows .. " rows")
end)

T.test("the notebook's plotly options: hist nbins and labels.x, imshow range_color", function()
  local v = {}
  for i = 1, 300 do v[i] = 0.036 + 0.0004 * (rnd() - 0.5) end
  local path, info = plot.hist(v, {nbins = 50, width = 800, labels = {x = "Composition score"},
                                   title = "Random composition scores", out = tmp .. "/nb/", format = "svg"})
  local svg = read(path)
  T.truthy(svg_has(svg, "Composition score") and svg_has(svg, "Random composition scores"), "titles")
  T.truthy(read(info.script):find("NBINS = 50", 1, true), "50 bins")
  local total = 0
  for _, r in ipairs(gnuplot_table(info.script)) do total = total + r[2] end
  T.eq(total, 300, "all 300 values binned")
  local _, i2 = plot.imshow({{0.2, 0.5}}, {range_color = {-1, 1}, out = tmp .. "/nb/", name = "rc"})
  local lo, hi = read(i2.script):match("set cbrange %[([^:]+):([^%]]+)%]")
  T.eq(tonumber(lo), -1); T.eq(tonumber(hi), 1)
end)

T.test("scatter: PNG, x y (and colour) columns", function()
  local x, y, c = {}, {}, {}
  for i = 1, 50 do x[i] = rnd(); y[i] = 2 * x[i] + rnd() * 0.1; c[i] = i end
  local path, info = plot.scatter(x, y, {out = tmp .. "/sc.png", color = c, diag = true, width = 500, height = 500,
                                         text = (function() local t = {} for i = 1, 50 do t[i] = "p" .. i end return t end)()})
  local w, h = png_size(path)
  T.eq(w, 500); T.eq(h, 500)
  local rows = parse_blocks(info.data[1])[1]
  for i = 1, 50 do close_rel(rows[i][1], x[i]); close_rel(rows[i][2], y[i]); T.eq(rows[i][3], c[i]) end
  T.raises(function() plot.scatter({1, 2}, {1}) end, "x has 2 values, y has 1")
end)

T.test("loss_difference: the notebook's title, shaded halves labelled with their means", function()
  local lp = {-2, -4, -1, -1}   -- seq_len 2: first half mean -3, repeat mean -1
  local toks = {"<bos>", "a", "b", "a", "b"}
  local path, info = plot.loss_difference(lp, toks, 2, {out = tmp .. "/ld.svg"})
  local svg = read(path)
  T.truthy(svg_has(svg, "first half: mean -3.000"), "first half mean")
  T.truthy(svg_has(svg, "repeat: mean -1.000"), "repeat mean")
  T.truthy(svg_has(svg, "Per token log prob on correct token, for sequence of length 2*2 (repeated twice)"), "title")
  local rows = parse_blocks(info.data[1])[1]
  for i = 1, 4 do close_rel(rows[i][2], lp[i]) end
  T.raises(function() plot.loss_difference(lp, toks, 7) end, "seq_len")
end)

T.test("logit_attribution: components Direct, L0H0.. across, |token|_i down", function()
  local la = matrix(4, 1 + 2 * 3, function(i, j) return (i - j) / 3 end)
  local toks = {"A", " b", "'c", "\\d", "e"}
  local path, info = plot.logit_attribution(3, la, toks, "Logit attr", {format = "svg", out = tmp .. "/la/"})
  local svg = read(path)
  for _, s in ipairs{"Direct", "L0H0", "L0H2", "L1H0", "L1H2", "|A|_0", "| b|_1", "|'c|_2", "|\\d|_3",
                     "Logit attr", "Term", "Position"} do
    T.truthy(svg_has(svg, s), "label " .. s)
  end
  T.truthy(not svg_has(svg, "|e|_4"), "the last token predicts nothing")
  local rows = parse_blocks(info.data[1])[1]
  for i = 1, 4 do for j = 1, 7 do close_rel(rows[i][j], la[i][j]) end end
  T.raises(function() plot.logit_attribution(4, la, toks) end, "not 1 + n_layers * 4")
  T.raises(function() plot.logit_attribution({cfg = {n_layers = 3, n_heads = 3}}, la, toks) end, "expected 10")
  -- a model-like table and token ids
  local model = {cfg = {n_layers = 2, n_heads = 3}}
  function model.to_str_tokens(_, ids) local t = {} for i, v in ipairs(ids) do t[i] = "t" .. v end return t end
  local p2 = plot.logit_attribution(model, la, {7, 8, 9, 10, 11}, {format = "svg", out = tmp .. "/la/", name = "ids"})
  T.truthy(svg_has(read(p2), "|t7|_0"), "to_str_tokens used for ids")
end)

T.test("comp_scores: L0H*/L1H* labels; colour scale centred on the baseline", function()
  local sc = matrix(4, 4, function(i, j) return 0.1 + 0.01 * i * j end)
  local path, info = plot.comp_scores(sc, "K composition", 0.15, {format = "svg", out = tmp .. "/cs/"})
  local svg = read(path)
  for _, s in ipairs{"L0H0", "L0H3", "L1H0", "L1H3", "Layer 0", "Layer 1", "K composition"} do
    T.truthy(svg_has(svg, s), "label " .. s)
  end
  -- centred on 0.15: the largest distance is |0.26 - 0.15| = 0.11, so the range is [0.04, 0.26]
  local gp = read(info.script)
  local lo, hi = gp:match("set cbrange %[([^:]+):([^%]]+)%]")
  close_rel(tonumber(lo), 0.04, "cb lo"); close_rel(tonumber(hi), 0.26, "cb hi")
  -- without a baseline: from 0 to the maximum
  local _, i2 = plot.comp_scores({cfg = {n_heads = 4}}, sc, "no baseline", {out = tmp .. "/cs/"})
  lo, hi = read(i2.script):match("set cbrange %[([^:]+):([^%]]+)%]")
  T.eq(tonumber(lo), 0); close_rel(tonumber(hi), 0.26)
end)

T.test("the notebook's compositions as PNGs of the requested size", function()
  local lp = {-2, -4, -1, -1}
  local sizes = {
    {plot.loss_difference(lp, nil, 2, {out = tmp .. "/sizes/", name = "ld", width = 640, height = 300}), 640, 300},
    {plot.logit_attribution(1, {{1, -1}, {0.5, 2}}, {"a", "b", "c"}, "la",
                            {out = tmp .. "/sizes/", name = "la", width = 500, height = 420}), 500, 420},
    {plot.comp_scores({{0.1, 0.2}, {0.3, 0.05}}, "cs", 0.1, {out = tmp .. "/sizes/", name = "cs", width = 450, height = 380}), 450, 380},
  }
  for _, c in ipairs(sizes) do
    local w, h = png_size(c[1])
    T.eq(w, c[2], c[1] .. " width"); T.eq(h, c[3], c[1] .. " height")
  end
end)

T.test("signed data: diverging scale symmetric about 0; non-negative: sequential from min", function()
  local _, i1 = plot.imshow({{-1, 3}, {0.5, 2}}, {out = tmp .. "/sc/", name = "signed", format = "svg"})
  local g1 = read(i1.script)
  local lo, hi = g1:match("set cbrange %[([^:]+):([^%]]+)%]")
  T.eq(tonumber(lo), -3); T.eq(tonumber(hi), 3)
  T.truthy(g1:find("#67001f", 1, true) and g1:find("#053061", 1, true), "RdBu stops")
  local _, i2 = plot.imshow({{1, 3}, {0.5, 2}}, {out = tmp .. "/sc/", name = "pos", format = "svg"})
  local g2 = read(i2.script)
  lo, hi = g2:match("set cbrange %[([^:]+):([^%]]+)%]")
  T.eq(tonumber(lo), 0.5); T.eq(tonumber(hi), 3)
  T.truthy(g2:find("#08306b", 1, true) and not g2:find("#67001f", 1, true), "Blues stops")
  local _, i3 = plot.imshow({{1, 3}, {0.5, 2}}, {out = tmp .. "/sc/", name = "rng", range = {-1, 1}, format = "svg"})
  lo, hi = read(i3.script):match("set cbrange %[([^:]+):([^%]]+)%]")
  T.eq(tonumber(lo), -1); T.eq(tonumber(hi), 1)
end)

T.test("the script redraws the figure with gnuplot alone, from its folder", function()
  local path, info = plot.imshow({{1, 2}, {3, 4}}, {out = tmp .. "/redraw/", name = "r"})
  os.remove(path)
  local ok = os.execute("cd " .. shq(tmp .. "/redraw") .. " && gnuplot r.gp 2>/dev/null")
  T.truthy(ok, "gnuplot r.gp ran")
  T.eq(png_size(path), png_size(path)) -- readable again
  os.remove(path)
  T.eq(plot.redraw(info.script), path)
  T.truthy(exists(path), "redraw wrote the image")
end)

T.test("gnuplot failing raises with gnuplot's own message", function()
  local dir = tmp .. "/bad"
  assert(os.execute("mkdir -p " .. shq(dir)))
  local fh = assert(io.open(dir .. "/bad.gp", "w"))
  fh:write('set terminal pngcairo\nset output "bad.png"\nplot "no-such-file.dat" using 1:2\n')
  fh:close()
  local err = T.raises(function() plot.redraw(dir .. "/bad.gp") end, "gnuplot failed")
  T.truthy(tostring(err):find("no-such-file.dat", 1, true), "gnuplot's message names the file: " .. tostring(err))
  fh = assert(io.open(dir .. "/bad2.gp", "w"))
  fh:write('set output "bad2.png"\nset nonsense 3\n')
  fh:close()
  err = T.raises(function() plot.redraw(dir .. "/bad2.gp") end, "gnuplot failed")
  T.truthy(tostring(err):find("nonsense", 1, true), "gnuplot's message quotes the line: " .. tostring(err))
end)

T.test("gnuplot missing raises, naming the program", function()
  local saved = plot.gnuplot
  plot.gnuplot = tmp .. "/no/such/gnuplot"
  local ok, err = pcall(plot.imshow, {{1}}, {out = tmp .. "/missing/"})
  plot.gnuplot = saved
  T.truthy(not ok, "no error raised")
  T.truthy(tostring(err):find("gnuplot not found", 1, true) and tostring(err):find("no/such/gnuplot", 1, true),
           "message: " .. tostring(err))
end)

T.test("bad input gives errors naming the op and the shapes", function()
  T.raises(function() plot.imshow({{1, 2}, {3}}) end, "plot.imshow: tensor: ragged")
  T.raises(function() plot.imshow({{1, "x"}}) end, "expected a number")
  T.raises(function() plot.imshow({{{1, 2}, {2, 3}}, {{3, 4}, {4, 5}}}) end, "expected a 2-D tensor, got shape [2,2,2]")
  T.raises(function() plot.imshow({{1, 2}}, {x = {"a"}}) end, "1 x labels for 2 columns")
  T.raises(function() plot.imshow({{1, 2}}, {text_auto = "%s"}) end, "unsupported format")
  T.raises(function() plot.imshow({{1, 2}}, {format = "jpg"}) end, "must be \"png\" or \"svg\"")
  T.raises(function() plot.attention_patterns({"a", "b"}, {{{1, 0, 0}}}) end, "2 str_tokens for a pattern of shape [1,1,3]")
  T.raises(function() plot.attention_patterns({"a"}, {{{1}}}, {heads = {3}}) end, "head 3 out of range")
  T.raises(function() plot.line({}, {}) end, "plot.line")
  T.raises(function() plot.line({1, 2}, {width = "wide"}) end, "opts.width and opts.height must be numbers")
  T.raises(function() plot.line({1, 2}, {width = 5}) end, "image size 5x460 out of range")
  T.raises(function() plot.hist({1, 2}, {range = {2, 1}}) end, "opts.range must be {lo, hi} with lo < hi")
  T.raises(function() plot.logit_attribution(2, {{1, 2, 3, 4}}, {"a"}) end, "4 components is not 1 + n_layers * 2 heads")
  T.raises(function() plot.line({1, 2}, {legend = "top; system"}) end, "unknown word")
end)

if os.getenv("DISPLAY") or os.getenv("WAYLAND_DISPLAY") then
  print("SKIP - show without a display (a display is set here)")
else
  T.test("show: raises without a display instead of failing silently", function()
    local path = plot.imshow({{1}}, {out = tmp .. "/show/"})
    T.raises(function() plot.show(path) end, "no display")
  end)
end

if not mi.tensor then
  print("SKIP - tensor inputs: mi.tensor is not available in this build")
else
  T.test("tensor inputs (mi.tensor) give the same files as tables", function()
    local m = {{0.5, -1.25, 3}, {2, 0, -0.125}}
    local _, info = plot.imshow(mi.tensor(m), {out = tmp .. "/tensor/", name = "t"})
    local rows = parse_blocks(info.data[1])[1]
    T.near_table(rows, m, 0)
    local _, i2 = plot.line(mi.tensor({1, 2, 4}), {out = tmp .. "/tensor/", name = "l", format = "svg"})
    T.near_table(parse_blocks(i2.data[1])[1], {{0, 1}, {1, 2}, {2, 4}}, 0)
    local pat = mi.tensor({{{1, 0}, {0.25, 0.75}}})
    local _, i3 = plot.attention_patterns({"a", "b"}, pat, {out = tmp .. "/tensor/", name = "a", format = "svg"})
    T.near_table(parse_blocks(i3.data[1])[1], {{1, 0}, {0.25, 0.75}}, 0)
  end)
end

os.execute("rm -rf " .. shq(tmp))
T.done()
