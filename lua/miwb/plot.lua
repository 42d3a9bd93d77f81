-- mi.plot: figures drawn by gnuplot, through files.
--
-- Each figure is a small set of files side by side in one folder (default "plots/", created when
-- missing):
--   NAME.png | NAME.svg   the image (pngcairo by default, svg with opts.format = "svg")
--   NAME.gp               the standalone gnuplot script that drew it: `cd plots && gnuplot NAME.gp`
--                         redraws it, so a figure can be restyled with gnuplot alone
--   NAME.dat              the data as plain text: a matrix is one row per line, values separated by
--                         spaces; several matrices (heads) are blocks separated by two blank lines
--                         (gnuplot's `index`); line plots have columns x y1 y2 ...
-- Each drawing function returns the image path and a table {image=, script=, data={...}, log=}:
--   imshow(t, opts)                      heatmap of a 2-D tensor
--   attention_patterns(str_tokens, pattern [heads, q, k], opts)
--   line(ys, opts), hist(values, opts), scatter(x, y, opts)
--   loss_difference(log_probs, str_tokens, seq_len, opts)    the seed notebook's figures
--   logit_attribution(model | n_heads, logit_attr, tokens, title, opts)
--   comp_scores(scores, title, baseline, opts)
--   redraw(script_path), show(image_path)
-- Common opts: title, xlabel, ylabel, width, height (px), out (a folder, or a file .png/.svg), name,
-- format ("png" | "svg"), font, fontsize, show.
--
-- Inputs are miwb tensors (anything with :totable()) or plain nested Lua tables of numbers.
-- Indices shown on axes are 0-based (positions, heads, layers), as in TransformerLens.
--
-- Text (titles, token labels) is drawn in gnuplot's "noenhanced" mode and passed in escaped
-- gnuplot strings, so that quotes, backslashes, @ _ ^ { } & < > # ` $ and non-ASCII characters print as
-- themselves. Only what cannot be printed is made visible: control characters become \n \t \r or
-- \xNN, bytes that are not valid UTF-8 become \xNN.
--
-- gnuplot missing or failing raises a Lua error with gnuplot's own message; a figure is never skipped.
local P = {}
local U = require("miwb.utils") -- files without a shell (write_file, mkdir_p, shell_quote)

P.gnuplot = os.getenv("MIWB_GNUPLOT") or "gnuplot" -- the program run on each script
P.dir = "plots"                                    -- default output folder (relative to the cwd)
P.format = "png"                                   -- "png" (pngcairo) or "svg"
P.font = "DejaVu Sans"                             -- any fontconfig name
P.autoshow = false                                 -- open each figure in a window (see P.show)

local floor, ceil, max, min, abs = math.floor, math.ceil, math.max, math.min, math.abs

local function check_opts(op, opts, allowed) return require("miwb").utils.check_opts(op, opts, allowed) end

---------------------------------------------------------------------------------------------------
-- inputs: tensors or nested tables -> nested Lua tables of numbers
---------------------------------------------------------------------------------------------------

local function is_tensor(v)
  if type(v) ~= "userdata" then return false end
  local ok, f = pcall(function() return v.totable end)
  return ok and type(f) == "function"
end

local function shape_str(shape) return "[" .. table.concat(shape, ",") .. "]" end

-- the shape of a rectangular nested table of numbers; raises on ragged or non-numeric content
local function table_shape(t, op, what)
  local shape = {}
  local x = t
  while type(x) == "table" do
    if #shape >= 32 then -- a deeper table is a mistake (or a cycle): say so before walking it
      error(string.format("%s: %s: nested table more than 32 levels deep", op, what), 0)
    end
    shape[#shape + 1] = #x
    if #x == 0 then break end
    x = x[1]
  end
  local function check(v, d, path)
    if d > #shape then
      if type(v) ~= "number" then
        error(string.format("%s: %s: expected a number at %s, got %s", op, what, path, type(v)), 0)
      end
      return
    end
    if type(v) ~= "table" or #v ~= shape[d] then
      error(string.format("%s: %s: ragged nested table at %s (expected shape %s)", op, what,
                          path == "" and "top" or path, shape_str(shape)), 0)
    end
    for i = 1, #v do check(v[i], d + 1, path .. "[" .. i .. "]") end
  end
  check(t, 1, "")
  return shape
end

-- (nested table, shape) from a tensor, a nested table or a number
local function to_nested(v, op, what)
  if is_tensor(v) then v = v:totable() end
  if type(v) == "number" then return v, {} end
  if type(v) ~= "table" then
    error(string.format("%s: %s: expected a tensor or a table of numbers, got %s", op, what, type(v)), 0)
  end
  return v, table_shape(v, op, what)
end

-- drops dimensions of size 1 until `want` remain (log_probs of shape [1, n] -> [n])
local function squeeze_to(v, shape, want)
  while #shape > want do
    local i
    for d = 1, #shape do if shape[d] == 1 then i = d break end end
    if not i then break end
    if i == 1 then v = v[1] else
      local function drop(x, d)
        if d == i - 1 then
          local out = {}
          for k = 1, #x do out[k] = x[k][1] end
          return out
        end
        local out = {}
        for k = 1, #x do out[k] = drop(x[k], d + 1) end
        return out
      end
      v = drop(v, 1)
    end
    table.remove(shape, i)
  end
  return v, shape
end

local function as_dims(v, want, op, what)
  local t, shape = to_nested(v, op, what)
  t, shape = squeeze_to(t, shape, want)
  -- fewer dims than wanted: leading dims of size 1 (a row vector, a single head)
  if #shape >= 1 and #shape < want then
    while #shape < want do t = {t}; table.insert(shape, 1, 1) end
  end
  if #shape ~= want then
    error(string.format("%s: %s: expected a %d-D tensor, got shape %s", op, what, want, shape_str(shape)), 0)
  end
  for _, n in ipairs(shape) do
    if n == 0 then error(string.format("%s: %s: empty tensor %s", op, what, shape_str(shape)), 0) end
  end
  return t, shape
end

local function flatten(t, out)
  out = out or {}
  if type(t) == "number" then out[#out + 1] = t
  else for i = 1, #t do flatten(t[i], out) end end
  return out
end

local function finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

local function finite_range(list)
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(list) do
    if finite(x) then if x < lo then lo = x end if x > hi then hi = x end end
  end
  if lo > hi then return nil end
  return lo, hi
end

---------------------------------------------------------------------------------------------------
-- text: visible label text, gnuplot string quoting
---------------------------------------------------------------------------------------------------

local CTRL = {[9] = "\\t", [10] = "\\n", [13] = "\\r"}

-- The text a label shows for string s: s itself where it is printable UTF-8; control characters
-- as \n \t \r \xNN (C0, DEL) or \u{NN} (C1); invalid UTF-8 bytes as \xNN.
function P.label_text(s)
  s = tostring(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local ok, cp = pcall(utf8.codepoint, s, i)
    if ok then
      local len = #utf8.char(cp)
      if cp < 0x20 or cp == 0x7F then out[#out + 1] = CTRL[cp] or string.format("\\x%02X", cp)
      elseif cp >= 0x80 and cp <= 0x9F then out[#out + 1] = string.format("\\u{%X}", cp)
      else out[#out + 1] = s:sub(i, i + len - 1) end
      i = i + len
    else
      out[#out + 1] = string.format("\\x%02X", s:byte(i))
      i = i + 1
    end
  end
  return table.concat(out)
end

-- A gnuplot string literal for s. Double-quoted, with backslash and double quote escaped and the
-- backquote written as \140: gnuplot runs `...` as a shell command anywhere in a line outside single
-- quotes, and single-quoted strings cannot start with a quote (gnuplot 5.4 rejects '''s').
local GP_ESC = {["\\"] = "\\\\", ['"'] = '\\"', ["`"] = "\\140"}
function P.gp_quote(s)
  return '"' .. (tostring(s):gsub('[\\"`]', GP_ESC)) .. '"'
end

-- tic labels in `set xtics ("label" pos, ...)` are also printf formats for the position: % -> %%
function P.gp_tic_quote(s)
  return P.gp_quote((tostring(s):gsub("%%", "%%%%")))
end

-- label text cut to at most n characters (UTF-8 aware), ending with an ellipsis when cut
local function truncate(s, n)
  if not n or utf8.len(s) <= n then return s end
  return s:sub(1, utf8.offset(s, n) - 1) .. "…"
end

local function textlen(s) return utf8.len(s) or #s end

local function q(s) return P.gp_quote(P.label_text(s)) end

---------------------------------------------------------------------------------------------------
-- files, paths and running gnuplot
---------------------------------------------------------------------------------------------------

local function shq(s) return U.shell_quote(s) end

local function slug(s)
  s = P.label_text(s):lower():gsub("[^%w%.%-]+", "_"):gsub("^_+", ""):gsub("_+$", "")
  if #s > 60 then s = s:sub(1, 60):gsub("_+$", "") end
  return s
end

local counters = {}

-- (dir, base, format) for a figure of the given kind
local function resolve_out(kind, opts)
  local fmt = opts.format or P.format
  local dir, base
  local out = opts.out
  if out ~= nil then
    if type(out) ~= "string" or out == "" then
      error(kind .. ": opts.out must be a file name (.png/.svg) or a folder, got " .. tostring(out), 0)
    end
    local d, b, ext = out:match("^(.-)([^/]*)%.(%a+)$")
    if ext and (ext:lower() == "png" or ext:lower() == "svg") and b ~= "" then
      dir, base, fmt = d, b, ext:lower()
      if opts.format and opts.format ~= fmt then
        error(kind .. ": opts.out " .. out .. " disagrees with opts.format " .. tostring(opts.format), 0)
      end
    else
      dir = out
    end
  else
    dir = P.dir
  end
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = out and out:sub(1, 1) == "/" and "/" or "." end
  if not base then
    if opts.name then
      base = tostring(opts.name)
      if base:find("/", 1, true) or base == "" then
        error(kind .. ": opts.name must be a plain file name, got " .. base, 0)
      end
    elseif opts.title and slug(opts.title) ~= "" then
      base = slug(opts.title)
    else
      counters[kind] = (counters[kind] or 0) + 1
      base = kind .. "-" .. counters[kind]
    end
  end
  if fmt ~= "png" and fmt ~= "svg" then
    error(kind .. ": opts.format must be \"png\" or \"svg\", got " .. tostring(fmt), 0)
  end
  return dir, base, fmt
end

local function mkdir_p(op, dir)
  local ok, err = U.mkdir_p(dir)
  if not ok then error(op .. ": " .. err, 0) end
end

-- atomic; on failure (a full disk) the files of this figure written so far (list `written`) go too
local function write_file(op, path, text, written)
  local ok, err = U.write_file(path, text)
  if not ok then
    for _, f in ipairs(written) do os.remove(f) end
    error(op .. ": " .. err, 0)
  end
  written[#written + 1] = path
end

local function fmtnum(x)
  if x ~= x then return "NaN" end
  if x == math.huge then return "Inf" end
  if x == -math.huge then return "-Inf" end
  -- %.9g round-trips float32 values exactly
  return string.format("%.9g", x)
end

-- matrix text: one row per line
local function matrix_text(rows, out)
  out = out or {}
  for _, row in ipairs(rows) do
    local cells = {}
    for j = 1, #row do cells[j] = fmtnum(row[j]) end
    out[#out + 1] = table.concat(cells, " ")
    out[#out + 1] = "\n"
  end
  return out
end

-- Runs gnuplot on dir/script; raises with gnuplot's message when it is missing or fails.
local function run_gnuplot(op, dir, script, image)
  local cmd = string.format("cd %s && %s %s 2>&1", shq(dir), shq(P.gnuplot), shq(script))
  local fh = io.popen(cmd, "r")
  if not fh then error(op .. ": cannot start gnuplot (" .. P.gnuplot .. ")", 0) end
  local msg = fh:read("a") or ""
  local ok, _, code = fh:close()
  msg = msg:gsub("%s+$", "")
  if not ok then
    if code == 127 then
      error(string.format("%s: gnuplot not found (%s): %s; install the Debian package gnuplot-nox",
                          op, P.gnuplot, msg), 0)
    end
    error(string.format("%s: gnuplot failed on %s/%s (exit %s):\n%s", op, dir, script, tostring(code), msg), 0)
  end
  local img = io.open(dir .. "/" .. image, "rb")
  local size = img and img:seek("end") or 0
  if img then img:close() end
  if size == 0 then
    error(string.format("%s: gnuplot wrote no image %s/%s: %s", op, dir, image, msg), 0)
  end
  return msg
end

-- Writes data files and the script, runs gnuplot, returns (image path, info).
-- fig = {kind, opts, width, height, fontsize, data = {{suffix, text}, ...},
--        body = function(base) -> script lines}  (data file i is named base .. data[i][1])
local function render(fig)
  local op = "plot." .. fig.kind
  local opts = fig.opts
  local dir, base, fmt = resolve_out(fig.kind, opts)
  mkdir_p(op, dir)
  local image = base .. "." .. fmt
  local info = {data = {}}
  local written = {}
  for _, d in ipairs(fig.data) do
    local name = base .. d[1]
    write_file(op, dir .. "/" .. name, type(d[2]) == "table" and table.concat(d[2]) or d[2], written)
    info.data[#info.data + 1] = dir .. "/" .. name
  end
  if type(fig.width) ~= "number" or type(fig.height) ~= "number" then
    error(op .. ": opts.width and opts.height must be numbers (pixels)", 0)
  end
  local W, H = floor(fig.width + 0.5), floor(fig.height + 0.5)
  if not (W >= 16 and H >= 16 and W <= 20000 and H <= 20000) then
    error(string.format("%s: image size %dx%d out of range (16..20000 px)", op, W, H), 0)
  end
  local font = P.gp_quote((opts.font or P.font) .. "," .. (opts.fontsize or fig.fontsize or 10))
  local term = fmt == "png" and "pngcairo" or "svg"
  local head = {
    "# " .. op .. " (miwb). Redraw in this folder with: gnuplot " .. base .. ".gp",
    "set encoding utf8",
    string.format("set terminal %s size %d,%d noenhanced font %s background '#ffffff'", term, W, H, font),
    "set output " .. P.gp_quote(image),
  }
  local script = table.concat(head, "\n") .. "\n" .. table.concat(fig.body(base), "\n") .. "\n"
  write_file(op, dir .. "/" .. base .. ".gp", script, written)
  os.remove(dir .. "/" .. image)
  info.log = run_gnuplot(op, dir, base .. ".gp", image)
  info.image = dir .. "/" .. image
  info.script = dir .. "/" .. base .. ".gp"
  if opts.show or P.autoshow then P.show(info.image) end
  return info.image, info
end

-- redraw(script): runs a figure's gnuplot script again (after editing it, say) in its folder;
-- returns the image path named by its `set output` line.
function P.redraw(script)
  local op = "plot.redraw"
  local fh = io.open(script, "r")
  if not fh then error(op .. ": no such script: " .. tostring(script), 0) end
  local text = fh:read("a")
  fh:close()
  local image = ("\n" .. text):match('\nset output "([^"\\`]*)"')
  if not image then error(op .. ": " .. script .. " has no set output line", 0) end
  local dir = script:match("^(.*)/") or "."
  os.remove(dir .. "/" .. image)
  run_gnuplot(op, dir, script:match("[^/]*$"), image)
  return dir .. "/" .. image
end

---------------------------------------------------------------------------------------------------
-- colour maps
---------------------------------------------------------------------------------------------------

-- Stops of ColorBrewer / matplotlib maps; dark_lo/dark_hi: fractions of the range below/above which
-- cell text is drawn white.
local PALETTES = {
  RdBu = {stops = {"#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7", "#d1e5f0",
                   "#92c5de", "#4393c3", "#2166ac", "#053061"}, dark_lo = 0.2, dark_hi = 0.8},
  Blues = {stops = {"#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5",
                    "#08519c", "#08306b"}, dark_lo = -1, dark_hi = 0.6},
  viridis = {stops = {"#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962",
                      "#addc30", "#fde725"}, dark_lo = 0.55, dark_hi = 2},
  Greys = {stops = {"#ffffff", "#f0f0f0", "#d9d9d9", "#bdbdbd", "#969696", "#737373", "#525252",
                    "#252525", "#000000"}, dark_lo = -1, dark_hi = 0.55},
}
do
  local r = {}
  for i = #PALETTES.RdBu.stops, 1, -1 do r[#r + 1] = PALETTES.RdBu.stops[i] end
  PALETTES.RdBu_r = {stops = r, dark_lo = 0.2, dark_hi = 0.8}
end
P.palettes = PALETTES

-- the colour at t in [0, 1] of a palette's stops, interpolated
local function palette_at(stops, t)
  local x = t * (#stops - 1)
  local i = min(#stops - 1, floor(x))
  local f = x - i
  local function rgb(c) return tonumber(c:sub(2, 3), 16), tonumber(c:sub(4, 5), 16), tonumber(c:sub(6, 7), 16) end
  local r1, g1, b1 = rgb(stops[i + 1])
  local r2, g2, b2 = rgb(stops[min(#stops, i + 2)])
  return string.format("#%02x%02x%02x", floor(r1 + (r2 - r1) * f + 0.5), floor(g1 + (g2 - g1) * f + 0.5),
                       floor(b1 + (b2 - b1) * f + 0.5))
end

-- "set palette" lines for a named palette; sub = {t0, t1} draws only that part of it (a diverging
-- scale cut off where the data cannot go, its colours unchanged)
local function palette_lines(op, name, sub)
  local p = PALETTES[name]
  if not p then
    local names = {}
    for k in pairs(PALETTES) do names[#names + 1] = k end
    table.sort(names)
    error(op .. ": unknown palette " .. tostring(name) .. " (known: " .. table.concat(names, ", ") .. ")", 0)
  end
  local parts = {}
  if sub then
    for k = 0, 16 do parts[#parts + 1] = string.format("%d '%s'", k, palette_at(p.stops, sub[1] + (sub[2] - sub[1]) * k / 16)) end
  else
    for i, c in ipairs(p.stops) do parts[i] = string.format("%d '%s'", i - 1, c) end
  end
  return {"set palette defined (" .. table.concat(parts, ", ") .. ")"}, p
end

-- Colour scale for values: (palette name, lo, hi). Signed data gets RdBu centred on `mid` (0 unless
-- given); non-negative data a sequential map from its minimum (or 0 with zero_based) to its maximum.
local function color_scale(op, values, opts, defaults)
  defaults = defaults or {}
  local lo, hi = finite_range(values)
  lo, hi = lo or 0, hi or 1
  local mid = opts.midpoint or defaults.midpoint
  local palette = opts.palette or defaults.palette
  local signed = lo < 0 or mid ~= nil
  if not palette then palette = signed and "RdBu" or "Blues" end
  local range = opts.range or opts.range_color or defaults.range
  if range then
    if type(range) ~= "table" or type(range[1]) ~= "number" or type(range[2]) ~= "number"
       or not (range[1] < range[2]) then
      error(op .. ": opts.range must be {lo, hi} with lo < hi", 0)
    end
    return palette, range[1], range[2]
  end
  if signed then
    mid = mid or 0
    local m = max(abs(hi - mid), abs(lo - mid))
    if m == 0 then m = 1 end
    -- non-negative data on a scale centred on a midpoint (composition scores around their
    -- baseline): the scale stops at 0, keeping the colours of the centred scale
    if lo >= 0 and mid >= 0 and mid - m < 0 then
      return palette, 0, mid + m, {(m - mid) / (2 * m), 1}
    end
    return palette, mid - m, mid + m
  end
  if defaults.zero_based then lo = min(lo, 0) end
  if lo == hi then lo, hi = lo - 0.5, hi + 0.5 end
  return palette, lo, hi
end

-- text_auto = ".2f" | "%.2f" | true -> a C format for one number (checked: it goes into the script)
local function cell_format(op, ta)
  if ta == true then return "%.3g" end
  if type(ta) ~= "string" then error(op .. ": opts.text_auto must be a format such as \".2f\" or true", 0) end
  local f = ta:sub(1, 1) == "%" and ta or "%" .. ta
  if not f:match("^%%[-+ #0]*%d*%.?%d*[eEfgG]$") then
    error(op .. ": opts.text_auto: unsupported format " .. ta .. " (use e.g. \".2f\", \".3g\")", 0)
  end
  return f
end

---------------------------------------------------------------------------------------------------
-- layout helpers (pixel estimates for DejaVu Sans as drawn by pngcairo)
---------------------------------------------------------------------------------------------------

-- measured on pngcairo renderings: a mix of letters, digits and symbols advances ~0.76 fs px per
-- character, and a glyph spans ~1.2 fs px from ascender to descender
local function char_w(fs) return fs * 0.76 end   -- mean advance of a character at font size fs
local function line_h(fs) return fs * 1.5 end    -- a line of text, with spacing

-- a round tick increment (1, 2, 2.5 or 5 times a power of ten) giving at most n intervals over [lo, hi]
local function nice_step(lo, hi, n)
  local raw = (hi - lo) / max(1, n)
  if not (raw > 0) then return 1 end
  local mag = 10 ^ floor(math.log(raw, 10))
  for _, m in ipairs{1, 2, 2.5, 5, 10} do
    if m * mag >= raw * (1 - 1e-9) then return m * mag end
  end
  return 10 * mag
end

local function maxlen(labels)
  local m = 0
  for _, s in ipairs(labels or {}) do m = max(m, textlen(s)) end
  return m
end

-- display labels (visible text, cut to `cut` characters) from strings or numbers
local function prep_labels(op, list, n, what, cut)
  if list == nil then return nil end
  if is_tensor(list) then list = list:totable() end
  if type(list) ~= "table" then error(op .. ": " .. what .. " labels must be a list of strings", 0) end
  if #list ~= n then
    error(string.format("%s: %d %s labels for %d %s", op, #list, what, n, what == "x" and "columns" or "rows"), 0)
  end
  local out = {}
  for i = 1, n do out[i] = truncate(P.label_text(list[i]), cut) end
  return out
end

-- `set xtics (...)` with every step-th label; hide: tick marks without labels
local function tics_line(axis, labels, n, step, extra, hide)
  local parts = {}
  for i = 0, n - 1, step do
    local lab = hide and "" or labels and labels[i + 1] or tostring(i)
    parts[#parts + 1] = P.gp_tic_quote(lab) .. " " .. i
  end
  return string.format("set %stics (%s) %s", axis, table.concat(parts, ", "), extra or "")
end

---------------------------------------------------------------------------------------------------
-- heatmaps
---------------------------------------------------------------------------------------------------

-- gnuplot commands drawing one heatmap panel of data block `index` of `file`.
-- hm = {file, index, nr, nc, xlabels, ylabels, xstep, ystep, xrot, lo, hi, pal, text_fmt,
--       text_fs, mask_offset, title, xlabel, ylabel, cblabel, colorbox, tick_fs, masked_color,
--       hide_xtics, hide_ytics}
local function heat_panel(hm)
  local L = {}
  local function add(s) L[#L + 1] = s end
  add(string.format("set xrange [-0.5:%g]", hm.nc - 0.5))
  add(string.format("set yrange [%g:-0.5]", hm.nr - 0.5)) -- row 0 at the top, as in imshow
  local tick_font = hm.tick_fs and ("font " .. P.gp_quote("," .. hm.tick_fs)) or ""
  add(tics_line("x", hm.xlabels, hm.nc, hm.xstep or 1,
                (hm.xrot and "rotate by 90 right" or "norotate") .. " nomirror out scale 0.4 " .. tick_font,
                hm.hide_xtics))
  add(tics_line("y", hm.ylabels, hm.nr, hm.ystep or 1, "nomirror out scale 0.4 " .. tick_font, hm.hide_ytics))
  add(hm.title and ("set title " .. q(hm.title) .. (hm.title_fs and (" font " .. P.gp_quote("," .. hm.title_fs)) or ""))
      or "unset title")
  add(hm.xlabel and ("set xlabel " .. q(hm.xlabel)) or "unset xlabel")
  add(hm.ylabel and ("set ylabel " .. q(hm.ylabel)) or "unset ylabel")
  add(hm.cblabel and ("set cblabel " .. q(hm.cblabel)) or "unset cblabel")
  add(string.format("set cbrange [%s:%s]", fmtnum(hm.lo), fmtnum(hm.hi)))
  if hm.cb_px then -- colour-bar tick labels ~30 px apart, at least 4 intervals
    -- starting at a multiple of the step: gnuplot would start at lo (3.0e-08 + 2k -> long labels)
    local step = nice_step(hm.lo, hm.hi, max(4, floor(hm.cb_px / 30)))
    local first = ceil(hm.lo / step - 1e-9) * step
    local last = first + floor((hm.hi - first) / step + 1e-9) * step
    if first - hm.lo > 0.1 * step or hm.hi - last > 0.1 * step then
      -- round ticks would leave an end of the scale unlabelled (a scale running to 6.06 read as
      -- one stopping at 5): label the ends and even steps between them instead
      local n = max(2, min(4, floor(hm.cb_px / 30)))
      local ticks = {}
      for k = 0, n do
        local v = hm.lo + (hm.hi - hm.lo) * k / n
        if abs(v) < 1e-12 * (hm.hi - hm.lo) then v = 0 end
        ticks[#ticks + 1] = string.format("\"%.3g\" %.10g", v, v)
      end
      add("set cbtics (" .. table.concat(ticks, ", ") .. ")")
    else
      add(string.format("set cbtics %.10g, %.10g", first, step))
      add("set format cb \"%g\"") -- gnuplot's default picks 8 decimals when lo is tiny
    end
  end
  if hm.colorbox == false then add("unset colorbox")
  elseif type(hm.colorbox) == "string" then add(hm.colorbox)
  else add("set colorbox") end
  -- masked and missing cells are left undrawn; this rectangle behind the image shows them grey
  add(string.format("set object 1 rectangle from graph 0,0 to graph 1,1 behind fillcolor rgb '%s' "
                    .. "fillstyle solid 1.0 noborder", hm.masked_color or "#d4d4d4"))
  local src = P.gp_quote(hm.file) .. (hm.index and (" index " .. hm.index) or "")
  local value = "3"
  if hm.mask_offset then
    value = string.format("($1 > $2 + %d ? NaN : $3)", hm.mask_offset) -- key > query: not attended
  end
  local plot = string.format("plot %s matrix using 1:2:%s with image notitle", src, value)
  if hm.text_fmt then
    add(string.format("LO = %s; HI = %s", fmtnum(hm.lo), fmtnum(hm.hi)))
    add(string.format("cell_frac(v) = (v - LO) / (HI - LO)"))
    add(string.format("cell_color(v) = (cell_frac(v) < %g || cell_frac(v) > %g) ? 0xffffff : 0x1a1a1a",
                      hm.pal.dark_lo, hm.pal.dark_hi))
    plot = plot .. string.format(", \\\n     %s matrix using 1:2:($3 == $3 ? sprintf(%s, $3) : ''):"
                                 .. "(cell_color($3)) with labels textcolor rgb variable font %s notitle",
                                 src, P.gp_quote(hm.text_fmt), P.gp_quote("," .. (hm.text_fs or 9)))
  end
  add(plot)
  return L
end

local function common_style()
  return {
    "set border lw 0.8 lc rgb '#333333'",
    "set tics textcolor rgb '#222222'",
    "unset key",
  }
end

-- imshow(t, opts): heatmap of a 2-D tensor, row 0 at the top.
-- opts: title, xlabel, ylabel (or labels = {x=, y=, color=}), x / y (tick labels), text_auto (".2f"),
--   range = {lo, hi} (or range_color, plotly's name), midpoint, palette ("RdBu", "RdBu_r", "Blues", "viridis", "Greys"), clabel,
--   width, height, aspect ("equal": square cells, the default unless both width and height are
--   given; "auto": cells fill the image), out, name, format, show, max_label (chars, default 24)
function P.imshow(t, opts)
  check_opts("plot.imshow", opts, {"aspect", "clabel", "font", "fontsize", "format", "heads", "height", "labels", "max_label", "midpoint", "name", "out", "palette", "range", "range_color", "show", "text_auto", "title", "width", "x", "xlabel", "y", "ylabel"})
  opts = opts or {}
  local op = "plot.imshow"
  local rows, shape = as_dims(t, 2, op, "tensor")
  local nr, nc = shape[1], shape[2]
  local labels = opts.labels or {}
  local cut = opts.max_label or 24
  local xl = prep_labels(op, opts.x, nc, "x", cut)
  local yl = prep_labels(op, opts.y, nr, "y", cut)
  local values = flatten(rows)
  local pal_name, lo, hi, pal_sub = color_scale(op, values, opts)
  local _, pal = palette_lines(op, pal_name)
  local text_fmt = opts.text_auto and cell_format(op, opts.text_auto)

  -- sizes: cells of 3-60 px (wide enough for their text) unless a width or height sets them;
  -- margins from the label lengths
  local fs = opts.fontsize or 10
  local tick_fs = fs - 1
  local sample = text_fmt and #string.format(text_fmt, -abs(max(abs(lo), abs(hi)))) or 0
  -- square cells, unless both sides of the image are given (then the cells fill it) or the matrix
  -- is so elongated (more than 4:1) that square cells would make a thin strip
  local elongated = max(nr, nc) > 4 * min(nr, nc)
  local equal = (opts.aspect or (((opts.width and opts.height) or elongated) and "auto" or "equal")) == "equal"
  local xlen = xl and maxlen(xl) or #tostring(nc - 1)
  local ylen = yl and maxlen(yl) or #tostring(nr - 1)
  local left = ylen * char_w(tick_fs) + ((opts.ylabel or labels.y) and 45 or 20)
  local top = opts.title and 45 or 20
  local right = 110
  local xtitle = (opts.xlabel or labels.x) and 45 or 25
  -- labelled axes keep >= 14 px per cell, so that every token or head name can be shown
  local cell = max((xl or yl) and 14 or 3, min(60, floor(min(640 / nc, 480 / nr))))
  local cell_w = max(cell, text_fmt and ceil(char_w(fs - 1) * sample + 8) or 0)
  local cell_h = max(cell, text_fmt and 20 or 0)
  if not equal and not opts.aspect then -- elongated: each side sized on its own
    cell_w = max(xl and 14 or 3, min(60, floor(640 / nc)), text_fmt and ceil(char_w(fs - 1) * sample + 8) or 0)
    cell_h = max(yl and 14 or 3, min(60, floor(360 / nr)), text_fmt and 20 or 0)
  end
  if equal then cell_w = max(cell_w, cell_h); cell_h = cell_w end
  if opts.width then
    cell_w = max(1, (opts.width - left - right) / nc)
    if equal then cell_h = cell_w end
  end
  if opts.height then
    local bottom_guess = (xl and xlen * char_w(tick_fs) or line_h(tick_fs)) + xtitle
    cell_h = max(1, (opts.height - top - bottom_guess) / nr)
    if equal then cell_w = cell_h end
  end
  -- named columns are all labelled, rotated when they do not fit; numbered axes step by 1, 2, 5, 10..
  local fits = (xlen + 1) * char_w(tick_fs) <= cell_w
  local xrot = xl ~= nil and not fits
  local xstep, ystep = 1, max(1, ceil(line_h(tick_fs) / cell_h))
  if xrot then xstep = max(1, ceil(line_h(tick_fs) / cell_w))
  elseif not fits then xstep = max(1, ceil((xlen + 1) * char_w(tick_fs) / cell_w)) end
  if not xl then xstep = floor(nice_step(0, xstep, 1) + 0.5) end
  if not yl then ystep = floor(nice_step(0, ystep, 1) + 0.5) end
  local bottom = (xrot and xlen * char_w(tick_fs) or line_h(tick_fs)) + xtitle
  local W = opts.width or max(240, left + nc * cell_w + right)
  local H = opts.height or max(160, top + nr * cell_h + bottom)

  -- the plot rectangle in pixels, placed by us (centred when the cells are square) so that the
  -- colour bar keeps a fixed width and the axis titles sit just outside the tick labels
  local aw, ah = max(1, W - left - right), max(1, H - top - bottom)
  local pw, ph = aw, ah
  if equal then
    local c = min(aw / nc, ah / nr)
    pw, ph = c * nc, c * nr
  end
  local x0, y0 = left + (aw - pw) / 2, top + (ah - ph) / 2
  local xt, yt = opts.xlabel or labels.x, opts.ylabel or labels.y

  local function body(base)
    local L = common_style()
    L[#L + 1] = string.format("set lmargin at screen %.6f; set rmargin at screen %.6f", x0 / W, (x0 + pw) / W)
    L[#L + 1] = string.format("set tmargin at screen %.6f; set bmargin at screen %.6f", 1 - y0 / H, 1 - (y0 + ph) / H)
    for _, l in ipairs((palette_lines(op, pal_name, pal_sub))) do L[#L + 1] = l end
    local panel = heat_panel{
      file = base .. ".dat", nr = nr, nc = nc, xlabels = xl, ylabels = yl, xstep = xstep, ystep = ystep,
      xrot = xrot, lo = lo, hi = hi, pal = pal, text_fmt = text_fmt,
      text_fs = max(6, min(fs - 1, floor(ph / nr / 2.2))),
      title = opts.title, cblabel = opts.clabel or labels.color, tick_fs = tick_fs, cb_px = ph,
      title_fs = fs + 2,
      colorbox = string.format("set colorbox user origin screen %.6f, screen %.6f size screen %.6f, screen %.6f",
                               (x0 + pw + 14) / W, 1 - (y0 + ph) / H, 16 / W, ph / H),
    }
    -- axis titles as screen labels next to our estimate of the tick labels' extent
    if xt then
      table.insert(panel, #panel, string.format("set label 201 %s at screen %.6f, screen %.6f center",
        q(xt), (x0 + pw / 2) / W, (H - y0 - ph - (bottom - xtitle) - 30) / H))
    end
    if yt then
      table.insert(panel, #panel, string.format("set label 202 %s at screen %.6f, screen %.6f center rotate by 90",
        q(yt), (x0 - (left - 45) - 26) / W, (H - y0 - ph / 2) / H))
    end
    for _, l in ipairs(panel) do L[#L + 1] = l end
    return L
  end
  local fig = {kind = "imshow", opts = opts, width = W, height = H, fontsize = fs, body = body,
               data = {{".dat", matrix_text(rows)}}}
  return render(fig)
end

-- a list of 0-based head indices from opts.heads (default: all n)
local function head_list(op, heads, n)
  local out = {}
  if heads == nil then
    for h = 0, n - 1 do out[#out + 1] = h end
    return out
  end
  if type(heads) == "number" then heads = {heads} end
  if is_tensor(heads) then heads = flatten(heads:totable()) end
  for _, h in ipairs(heads) do
    if math.type(h) ~= "integer" and not (type(h) == "number" and h == floor(h)) then
      error(op .. ": opts.heads must hold integer head indices", 0)
    end
    local hh = h < 0 and n + h or h
    if hh < 0 or hh >= n then error(string.format("%s: head %d out of range for %d heads", op, h, n), 0) end
    out[#out + 1] = floor(hh)
  end
  if #out == 0 then error(op .. ": opts.heads is empty", 0) end
  return out
end

local function str_list(op, what, list)
  if is_tensor(list) then list = flatten(list:totable()) end
  if type(list) ~= "table" then error(op .. ": " .. what .. " must be a list of strings", 0) end
  local out = {}
  for i = 1, #list do
    if type(list[i]) ~= "string" and type(list[i]) ~= "number" then
      error(string.format("%s: %s[%d] is a %s, not a string", op, what, i, type(list[i])), 0)
    end
    out[i] = tostring(list[i])
  end
  return out
end

-- attention_patterns(str_tokens, pattern, opts): one heatmap per head of a [heads, q, k] pattern
-- (a leading batch dim of 1 is dropped; a [q, k] pattern is one head), queries down, keys across,
-- token labels on both axes, key > query (the causal mask) shown grey.
-- opts: title, head_names (one per head) or layer (names "L<layer>H<h>"), heads (0-based list to
--   draw), head (the index of a single [q, k] pattern's head: without it that panel has no head
--   name), cols, mask (default true), range (default {0, 1}), palette ("Blues"), cell (px per
--   token), fontsize, max_label (chars, default 16), all_labels (tick labels on every panel), out,
--   name, format
function P.attention_patterns(str_tokens, pattern, opts)
  check_opts("plot.attention_patterns", opts, {"all_labels", "cell", "cols", "font", "fontsize", "format", "head", "head_names", "heads", "height", "layer", "mask", "max_label", "name", "out", "palette", "range", "show", "title", "width"})
  opts = opts or {}
  local op = "plot.attention_patterns"
  local single = (is_tensor(pattern) and pattern:dim() == 2) or
                 (type(pattern) == "table" and type(pattern[1]) == "table" and type(pattern[1][1]) ~= "table")
  if opts.head ~= nil and not single then
    error(op .. ": opts.head names the head of a single [q, k] pattern; for [heads, q, k] use opts.heads", 0)
  end
  local pat, shape = as_dims(pattern, 3, op, "pattern")
  local nh, nq, nk = shape[1], shape[2], shape[3]
  local toks = str_list(op, "str_tokens", str_tokens)
  if #toks ~= nk then
    error(string.format("%s: %d str_tokens for a pattern of shape %s (keys: %d)", op, #toks, shape_str(shape), nk), 0)
  end
  local cut = opts.max_label or 16
  local klabels, qlabels = {}, {}
  for i = 1, nk do klabels[i] = truncate(P.label_text(toks[i]), cut) end
  for i = 1, nq do qlabels[i] = klabels[nk - nq + i] end -- queries are the last nq positions
  local heads = head_list(op, opts.heads, nh)
  local names = {}
  for _, h in ipairs(heads) do
    if single and opts.head_names == nil then
      -- one head's [q, k] pattern: its index is opts.head, or unknown (no head name)
      local hh = opts.head
      if hh == nil then names[#names + 1] = opts.layer and string.format("Layer %d", opts.layer) or ""
      elseif opts.layer then names[#names + 1] = string.format("L%dH%d", opts.layer, hh)
      else names[#names + 1] = "Head " .. hh end
    elseif opts.head_names then
      local hn = opts.head_names
      if #hn ~= nh then error(string.format("%s: %d head_names for %d heads", op, #hn, nh), 0) end
      names[#names + 1] = tostring(hn[h + 1])
    elseif opts.layer then names[#names + 1] = string.format("L%dH%d", opts.layer, h)
    else names[#names + 1] = "Head " .. h end
  end
  local pal_name = opts.palette or "Blues"
  local _, pal = palette_lines(op, pal_name)
  local range = opts.range or {0, 1}
  local mask = opts.mask ~= false

  -- layout in pixels: square-ish panels, labels thinned to one per ~1.45 font heights
  local n = max(nq, nk)
  local tf = opts.fontsize or (n <= 24 and 9 or n <= 64 and 8 or 7)
  -- >= 7 px per token up to ~130 tokens (readable labels, thinned), then panels of ~900 px
  -- up to 64 tokens a cell is one text line high, so every token is labelled (as imshow does)
  local cell = opts.cell or max(1, min(7, floor(900 / n)), min(22, floor(640 / n)),
                                n <= 64 and ceil(line_h(tf)) or 0)
  local pw, ph = nk * cell, nq * cell
  local step = max(1, ceil(line_h(tf) / cell))
  local ylab = maxlen(qlabels) * char_w(tf) + 10
  local xlab = maxlen(klabels) * char_w(tf) + 10
  local nshow = #heads
  local cols = opts.cols or ceil(math.sqrt(nshow))
  local rows = ceil(nshow / cols)
  local all = opts.all_labels
  local Lm, Bm, Rm = ylab + 40, xlab + 40, 95
  local Tm = (opts.title and 44 or 12) + 24
  local gx = all and (ylab + 40) or 18
  local gy = 42 + (all and (xlab + 30) or 0)
  local W = Lm + cols * pw + (cols - 1) * gx + Rm
  local H = Tm + rows * ph + (rows - 1) * gy + Bm
  local fs = tf + 1

  local function body(base)
    local L = common_style()
    L[#L + 1] = "set multiplot" .. (opts.title and (" title " .. q(opts.title) .. " font " ..
                                     P.gp_quote("," .. (fs + 3))) or "")
    for _, l in ipairs((palette_lines(op, pal_name))) do L[#L + 1] = l end
    for i, h in ipairs(heads) do
      local r, c = (i - 1) // cols, (i - 1) % cols
      local x0 = Lm + c * (pw + gx)
      local ytop = Tm + r * (ph + gy)
      L[#L + 1] = string.format("# head %d", h)
      L[#L + 1] = string.format("set lmargin at screen %.6f; set rmargin at screen %.6f",
                                x0 / W, (x0 + pw) / W)
      L[#L + 1] = string.format("set tmargin at screen %.6f; set bmargin at screen %.6f",
                                1 - ytop / H, 1 - (ytop + ph) / H)
      local has_below = i + cols <= nshow
      local last = i == nshow
      local cbox = false
      if last then -- one colour bar for the whole grid, right of the panels
        local top_px, bot_px = Tm, min(H - Bm, Tm + max(ph, min(rows * ph, 360)))
        cbox = string.format("set colorbox user origin screen %.6f, screen %.6f size screen %.6f, screen %.6f",
                             (W - Rm + 18) / W, 1 - bot_px / H, 14 / W, (bot_px - top_px) / H)
      end
      local panel = heat_panel{
        file = base .. ".dat", index = h, nr = nq, nc = nk, xlabels = klabels, ylabels = qlabels,
        xstep = step, ystep = step, xrot = true, lo = range[1], hi = range[2], pal = pal,
        mask_offset = mask and (nk - nq) or nil, title = names[i], title_fs = fs + 1,
        hide_xtics = not all and has_below, hide_ytics = not all and c > 0,
        colorbox = cbox, cb_px = last and 300 or nil, tick_fs = tf,
      }
      -- axis titles as screen labels placed from our label-width estimates (gnuplot's own placement
      -- overestimates rotated tick labels and pushes them off the canvas); removed after the panel
      -- so that later panels do not draw them again
      local axis = {}
      if all or not has_below then
        axis[#axis + 1] = string.format("set label 201 %s at screen %.6f, screen %.6f center font %s",
          q("Key (source)"), (x0 + pw / 2) / W, (H - ytop - ph - xlab - 16) / H, P.gp_quote("," .. fs))
      end
      if all or c == 0 then
        axis[#axis + 1] = string.format("set label 202 %s at screen %.6f, screen %.6f center rotate by 90 font %s",
          q("Query (destination)"), (x0 - ylab - 18) / W, (H - ytop - ph / 2) / H, P.gp_quote("," .. fs))
      end
      for _, l in ipairs(axis) do table.insert(panel, #panel, l) end -- before the plot command
      for _, l in ipairs(panel) do L[#L + 1] = l end
      if #axis > 0 then L[#L + 1] = "unset label 201; unset label 202" end
    end
    L[#L + 1] = "unset multiplot"
    return L
  end
  local text = {}
  for h = 1, nh do
    if h > 1 then text[#text + 1] = "\n\n" end
    matrix_text(pat[h], text)
  end
  -- the layout is in screen fractions: a requested size stretches it
  return render{kind = "attention_patterns", opts = opts, width = opts.width or W,
                height = opts.height or H, fontsize = fs,
                body = body, data = {{".dat", text}}}
end

---------------------------------------------------------------------------------------------------
-- line plots, histograms, scatter plots
---------------------------------------------------------------------------------------------------

-- matplotlib's default cycle (Tableau 10)
local COLORS = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"}
P.colors = COLORS

local function color_arg(op, c, default)
  if c == nil then return default end
  if type(c) ~= "string" or not (c:match("^#%x%x%x%x%x%x$") or c:match("^%a+$")) then
    error(op .. ": colours are \"#rrggbb\" or a gnuplot colour name, got " .. tostring(c), 0)
  end
  return c
end

local function number_list(op, what, v)
  local t, shape = as_dims(v, 1, op, what)
  return t, shape[1]
end

-- one or several series: a 1-D tensor/table, a 2-D tensor/table (rows are series), or a Lua list
-- of 1-D tensors/tables
local function series_list(op, ys)
  if type(ys) == "table" and (is_tensor(ys[1]) or (type(ys[1]) == "table" and #ys > 0 and
      (function() for i = 2, #ys do if type(ys[i]) ~= "table" and not is_tensor(ys[i]) then return false end end
                  return true end)())) then
    local ok, t, shape = pcall(to_nested, ys, op, "ys")
    if ok and #shape == 2 then return t end -- a rectangular 2-D table: rows are series
    local out = {}
    for i = 1, #ys do out[i] = (number_list(op, "series " .. i, ys[i])) end
    return out
  end
  local t, shape = to_nested(ys, op, "ys")
  t, shape = squeeze_to(t, shape, 1)
  if #shape == 1 then return {t} end
  if #shape == 2 then return t end
  error(string.format("%s: ys: expected 1-D or 2-D data, got shape %s", op, shape_str(shape)), 0)
end

-- markers: vertical/horizontal lines and shaded spans, shared by line and hist
-- each of opts.vline / opts.hline: a number, {x, label=, color=}, or a list of those
local function marker_list(v)
  if v == nil then return {} end
  if type(v) == "number" then return {{v}} end
  if type(v) == "table" and type(v[1]) == "number" then return {v} end
  return v
end

local function decorations(op, opts)
  local L = {"set style textbox opaque noborder margins 2,1"}
  local k = 10
  for _, m in ipairs(marker_list(opts.vline)) do
    local x = type(m) == "number" and m or m[1] or m.x
    if type(x) ~= "number" then error(op .. ": opts.vline entries need an x position", 0) end
    local c = color_arg(op, type(m) == "table" and m.color or nil, "#444444")
    k = k + 1
    L[#L + 1] = string.format("set arrow %d from %.10g, graph 0 to %.10g, graph 1 nohead dt 2 lw 1.5 lc rgb '%s' front",
                              k, x, x, c)
    if type(m) == "table" and m.label then
      -- successive labels step down so that neighbouring lines' labels do not collide
      L[#L + 1] = string.format("set label %d %s at %.10g, graph %.3f right offset -0.5,0 textcolor rgb '%s' front",
                                k, q(m.label), x, 0.97 - 0.06 * ((k - 11) % 4), c)
    end
  end
  for _, m in ipairs(marker_list(opts.hline)) do
    local y = type(m) == "number" and m or m[1] or m.y
    if type(y) ~= "number" then error(op .. ": opts.hline entries need a y position", 0) end
    local c = color_arg(op, type(m) == "table" and m.color or nil, "#444444")
    k = k + 1
    L[#L + 1] = string.format("set arrow %d from graph 0, first %.10g to graph 1, first %.10g nohead dt 2 lw 1.5 lc rgb '%s' front",
                              k, y, y, c)
    if type(m) == "table" and m.label then
      L[#L + 1] = string.format("set label %d %s at graph 0.01, first %.10g offset 0,0.6 textcolor rgb '%s' front",
                                k, q(m.label), y, c)
    end
  end
  local spans = opts.vrect or {}
  local labelled = false
  if type(spans[1]) == "number" then spans = {spans} end
  for i, r in ipairs(spans) do
    if type(r[1]) ~= "number" or type(r[2]) ~= "number" then
      error(op .. ": opts.vrect entries are {x0, x1, color=, label=}", 0)
    end
    local c = color_arg(op, r.color, COLORS[(i - 1) % #COLORS + 1])
    L[#L + 1] = string.format("set object %d rectangle from %.10g, graph 0 to %.10g, graph 1 behind "
                              .. "fillcolor rgb '%s' fillstyle transparent solid %g noborder",
                              10 + i, r[1], r[2], c, r.opacity or 0.15)
    if r.label then -- above the frame, in the span's colour: never over the data
      L[#L + 1] = string.format("set label %d %s at %.10g, graph 1 offset 0,0.8 center textcolor rgb '%s'",
                                40 + i, q(r.label), (r[1] + r[2]) / 2, c)
      labelled = true
    end
  end
  if labelled then -- room for the title above the span labels
    L[#L + 1] = "set tmargin 5"
    L[#L + 1] = "set title offset 0,1.2"
  end
  return L
end

local KEY_WORDS = {top = 1, bottom = 1, left = 1, right = 1, center = 1, inside = 1, outside = 1,
                   above = 1, below = 1, horizontal = 1, vertical = 1, box = 1, nobox = 1}

local function key_line(op, opts, show)
  local pos = opts.legend or "top right"
  if pos ~= false then -- the words go into the script: only gnuplot's placement words pass
    for w in tostring(pos):gmatch("%S+") do
      if not KEY_WORDS[w] then error(op .. ": opts.legend: unknown word " .. w, 0) end
    end
  end
  if pos == false or not show then return "unset key" end
  return "set key " .. pos .. " noautotitle samplen 2 spacing 1.1 box lc rgb '#cccccc'"
end

local function axis_lines(op, opts, defaults)
  defaults = defaults or {}
  local L = {}
  local t = opts.title or defaults.title
  local xl = opts.xlabel or (opts.labels and opts.labels.x) or defaults.xlabel
  local yl = opts.ylabel or (opts.labels and opts.labels.y) or defaults.ylabel
  if t then L[#L + 1] = "set title " .. q(t) .. " font " .. P.gp_quote("," .. ((opts.fontsize or 10) + 2)) end
  if xl then L[#L + 1] = "set xlabel " .. q(xl) end
  if yl then L[#L + 1] = "set ylabel " .. q(yl) end
  for _, ax in ipairs{"x", "y"} do
    local r = opts[ax .. "range"]
    if r then
      if type(r) ~= "table" or type(r[1]) ~= "number" or type(r[2]) ~= "number" then
        error(op .. ": opts." .. ax .. "range must be {lo, hi}", 0)
      end
      L[#L + 1] = string.format("set %srange [%.10g:%.10g]", ax, r[1], r[2])
    end
  end
  if opts.logy then L[#L + 1] = "set logscale y" end
  if opts.logx then L[#L + 1] = "set logscale x" end
  L[#L + 1] = "set grid lc rgb '#e6e6e6' lw 1 back"
  L[#L + 1] = "set tics nomirror out scale 0.5"
  L[#L + 1] = "set border 3 lw 0.8 lc rgb '#333333'"
  return L
end

local function list_of_names(op, what, names, n)
  if names == nil then return nil end
  if type(names) == "string" then names = {names} end
  if #names ~= n then error(string.format("%s: %d %s for %d series", op, #names, what, n), 0) end
  return names
end

-- line(ys, opts): one line per series; x = opts.x (shared) or 0, 1, 2, ...
-- opts: x, labels / names (series names, shown in a legend), markers (true), colors, title, xlabel,
--   ylabel, xticks (one label per x, thinned, rotated), vline, hline, vrect ({x0, x1, color=,
--   label=}), xrange, yrange, logy, legend ("top right", false), width, height, out, name, format
function P.line(ys, opts)
  check_opts("plot.line", opts, {"colors", "font", "fontsize", "format", "height", "hline", "labels", "legend", "logx", "logy", "markers", "max_label", "name", "names", "out", "range", "show", "title", "vline", "vrect", "width", "x", "xlabel", "xrange", "xticks", "ylabel", "yrange"})
  opts = opts or {}
  local op = "plot.line"
  local series = series_list(op, ys)
  local n = 0
  for _, sr in ipairs(series) do n = max(n, #sr) end
  local xs
  if opts.x ~= nil then
    local m
    xs, m = number_list(op, "opts.x", opts.x)
    if m < n then error(string.format("%s: opts.x has %d values for series of length %d", op, m, n), 0) end
    n = m
  else
    xs = {}
    for i = 1, n do xs[i] = i - 1 end
  end
  local names = list_of_names(op, "labels", opts.labels and opts.labels[1] and opts.labels or opts.names, #series)
  local rows = {}
  for i = 1, n do
    local row = {fmtnum(xs[i])}
    for j, sr in ipairs(series) do row[j + 1] = fmtnum(sr[i] or 0 / 0) end
    rows[i] = table.concat(row, " ") .. "\n"
  end
  local W, H = opts.width or 820, opts.height or 460
  local function body(base)
    local L = axis_lines(op, opts)
    for _, l in ipairs(decorations(op, opts)) do L[#L + 1] = l end
    if opts.xticks then
      local labs = str_list(op, "opts.xticks", opts.xticks)
      if #labs ~= n then error(string.format("%s: %d xticks for %d points", op, #labs, n), 0) end
      local cut, fs = opts.max_label or 16, 8
      local px = (W - 120) / max(1, n)
      local step = max(1, ceil(line_h(fs) / px))
      local parts = {}
      for i = 1, n, step do
        parts[#parts + 1] = P.gp_tic_quote(truncate(P.label_text(labs[i]), cut)) .. " " .. fmtnum(xs[i])
      end
      L[#L + 1] = "set xtics (" .. table.concat(parts, ", ") .. ") rotate by 90 right font " .. P.gp_quote(",8")
    end
    L[#L + 1] = key_line(op, opts, names ~= nil)
    local style = opts.markers and "linespoints pt 7 ps 0.55" or "lines"
    local colors = opts.colors or {}
    local parts = {}
    for j = 1, #series do
      parts[#parts + 1] = string.format("%s using 1:%d with %s lw 2 lc rgb '%s' %s",
        j == 1 and P.gp_quote(base .. ".dat") or "''", j + 1, style,
        color_arg(op, colors[j], COLORS[(j - 1) % #COLORS + 1]),
        names and ("title " .. q(names[j])) or "notitle")
    end
    L[#L + 1] = "plot " .. table.concat(parts, ", \\\n     ")
    return L
  end
  return render{kind = "line", opts = opts, width = W, height = H, body = body, data = {{".dat", rows}}}
end

-- hist(values, opts): histogram of all values of a tensor (any shape), or of several series (a Lua
-- list of tensors, or of tables with opts.labels), overlaid. The data file holds the raw values; the
-- script bins them (equal bins over opts.range or the data's range, the last bin closed).
-- opts: bins or nbins (default sqrt(n) in [10, 100]), range = {lo, hi}, density, labels (series
--   names; or {x = ..., y = ...} axis titles as plotly's), colors, mean (true:
--   a dashed line at each series' mean), vline, logy, title, xlabel, ylabel, width, height, out, ...
function P.hist(values, opts)
  check_opts("plot.hist", opts, {"bins", "colors", "density", "font", "fontsize", "format", "height", "hline", "labels", "legend", "logx", "logy", "mean", "name", "names", "nbins", "out", "range", "show", "title", "vline", "vrect", "width", "x", "xlabel", "xrange", "ylabel", "yrange"})
  opts = opts or {}
  local op = "plot.hist"
  local series = {}
  -- opts.labels is either series names (a list) or axis titles ({x = ...}, as plotly's labels)
  local series_names = type(opts.labels) == "table" and opts.labels[1] ~= nil and opts.labels or opts.names
  if type(values) == "table" and (is_tensor(values[1]) or (series_names and type(values[1]) == "table")) then
    for i = 1, #values do series[i] = flatten((to_nested(values[i], op, "series " .. i))) end
  else
    series[1] = flatten((to_nested(values, op, "values")))
  end
  local all = {}
  for _, sr in ipairs(series) do
    if #sr == 0 then error(op .. ": empty values", 0) end
    for _, x in ipairs(sr) do all[#all + 1] = x end
  end
  local names = list_of_names(op, "labels", series_names, #series)
  local lo, hi
  if opts.range then
    lo, hi = opts.range[1], opts.range[2]
    if type(lo) ~= "number" or type(hi) ~= "number" or not (lo < hi) then
      error(op .. ": opts.range must be {lo, hi} with lo < hi", 0)
    end
  else
    lo, hi = finite_range(all)
    if not lo then error(op .. ": no finite values to draw", 0) end
    -- as written in the data file (9 digits), so that the extreme values fall inside [LO, HI]
    lo, hi = tonumber(fmtnum(lo)), tonumber(fmtnum(hi))
    if lo == hi then lo, hi = lo - 0.5, hi + 0.5 end
  end
  local nfin = 0
  for _, x in ipairs(all) do if finite(x) then nfin = nfin + 1 end end
  local bins = opts.bins or opts.nbins or max(10, min(100, ceil(math.sqrt(nfin / #series))))
  if math.type(bins) ~= "integer" or bins < 1 then error(op .. ": opts.bins must be a positive integer", 0) end
  local text = {}
  local means = {}
  for i, sr in ipairs(series) do
    if i > 1 then text[#text + 1] = "\n\n" end
    local sum, cnt = 0, 0
    for _, x in ipairs(sr) do
      text[#text + 1] = fmtnum(x) .. "\n"
      if finite(x) then sum, cnt = sum + x, cnt + 1 end
    end
    means[i] = cnt > 0 and sum / cnt or 0 / 0
  end
  local W, H = opts.width or 760, opts.height or 440
  local marks = {}
  for _, m in ipairs(marker_list(opts.vline)) do marks[#marks + 1] = m end
  if opts.mean then
    for i, m in ipairs(means) do
      marks[#marks + 1] = {m, label = string.format("mean = %.3f", m),
                           color = #series > 1 and COLORS[(i - 1) % #COLORS + 1] or "#222222"}
    end
  end
  local function body(base)
    local L = axis_lines(op, opts, {xlabel = "value", ylabel = opts.density and "density" or "count"})
    local deco = {}
    for k, v in pairs(opts) do deco[k] = v end
    deco.vline = marks
    for _, l in ipairs(decorations(op, deco)) do L[#L + 1] = l end
    L[#L + 1] = key_line(op, opts, names ~= nil)
    L[#L + 1] = string.format("LO = %.17g; HI = %.17g; NBINS = %d; BINWIDTH = (HI - LO) / (1.0 * NBINS)", lo, hi, bins)
    -- bins [LO + i w, LO + (i+1) w), the last one closed. Values outside [LO, HI] count 0 in the
    -- first bin and NaN lines are skipped: an undefined point would split `smooth frequency` into
    -- separate sums.
    L[#L + 1] = "set datafile missing \"NaN\""
    L[#L + 1] = "in_range(x) = (x >= LO && x <= HI) ? 1.0 : 0.0"
    L[#L + 1] = "bin(x) = LO + BINWIDTH * ((in_range(x) == 0.0 ? 0 : x >= HI ? NBINS - 1 : floor((x - LO) / BINWIDTH)) + 0.5)"
    if not opts.xrange then L[#L + 1] = "set xrange [LO:HI]" end
    if not opts.yrange and not opts.logy then L[#L + 1] = "set yrange [0:*]" end
    L[#L + 1] = "set boxwidth BINWIDTH absolute"
    L[#L + 1] = string.format("set style fill transparent solid %g border lc rgb '#ffffff'", #series > 1 and 0.5 or 0.8)
    local colors = opts.colors or {}
    local parts = {}
    for i, sr in ipairs(series) do
      local nf = 0
      for _, x in ipairs(sr) do if x >= lo and x <= hi then nf = nf + 1 end end -- as numpy's density
      local ycol = opts.density and string.format("(in_range($1) / (%d * BINWIDTH))", max(1, nf)) or "(in_range($1))"
      parts[#parts + 1] = string.format("%s index %d using (bin($1)):%s smooth frequency with boxes lc rgb '%s' %s",
        i == 1 and P.gp_quote(base .. ".dat") or "''", i - 1, ycol,
        color_arg(op, colors[i], COLORS[(i - 1) % #COLORS + 1]),
        names and ("title " .. q(names[i])) or "notitle")
    end
    L[#L + 1] = "plot " .. table.concat(parts, ", \\\n     ")
    return L
  end
  return render{kind = "hist", opts = opts, width = W, height = H, body = body, data = {{".dat", text}}}
end

-- scatter(x, y, opts): points (x[i], y[i]).
-- opts: color (values -> a colour scale, with clabel), text (a label per point), diag (true: the
--   line y = x), title, xlabel, ylabel, xrange, yrange, palette, width, height, out, name, format
function P.scatter(x, y, opts)
  check_opts("plot.scatter", opts, {"clabel", "color", "diag", "font", "fontsize", "format", "height", "labels", "logx", "logy", "midpoint", "name", "out", "palette", "point_color", "range", "range_color", "show", "text", "title", "width", "xlabel", "xrange", "ylabel", "yrange"})
  opts = opts or {}
  local op = "plot.scatter"
  local xs, n = number_list(op, "x", x)
  local ys, m = number_list(op, "y", y)
  if n ~= m then error(string.format("%s: x has %d values, y has %d", op, n, m), 0) end
  local cs
  if opts.color ~= nil then
    local k
    cs, k = number_list(op, "opts.color", opts.color)
    if k ~= n then error(string.format("%s: opts.color has %d values for %d points", op, k, n), 0) end
  end
  local texts = opts.text and str_list(op, "opts.text", opts.text)
  if texts and #texts ~= n then error(string.format("%s: opts.text has %d labels for %d points", op, #texts, n), 0) end
  local rows = {}
  for i = 1, n do
    rows[i] = fmtnum(xs[i]) .. " " .. fmtnum(ys[i]) .. (cs and (" " .. fmtnum(cs[i])) or "") .. "\n"
  end
  local W, H = opts.width or 620, opts.height or 520
  local function body(base)
    local L = axis_lines(op, opts)
    L[#L + 1] = "unset key"
    local src = P.gp_quote(base .. ".dat")
    local parts = {}
    if cs then
      local pal_name, lo, hi = color_scale(op, cs, opts, {palette = opts.palette or "viridis"})
      for _, l in ipairs((palette_lines(op, pal_name))) do L[#L + 1] = l end
      L[#L + 1] = string.format("set cbrange [%s:%s]", fmtnum(lo), fmtnum(hi))
      if opts.clabel then L[#L + 1] = "set cblabel " .. q(opts.clabel) end
      parts[#parts + 1] = src .. " using 1:2:3 with points pt 7 ps 0.8 lc palette"
    else
      parts[#parts + 1] = src .. string.format(" using 1:2 with points pt 7 ps 0.8 lc rgb '%s'",
                                               color_arg(op, opts.point_color, COLORS[1]))
    end
    if opts.diag then
      local lo, hi = finite_range(xs)
      local lo2, hi2 = finite_range(ys)
      lo, hi = min(lo or 0, lo2 or 0), max(hi or 1, hi2 or 1)
      L[#L + 1] = string.format("set arrow 1 from %.10g,%.10g to %.10g,%.10g nohead dt 2 lc rgb '#888888' back",
                                lo, lo, hi, hi)
    end
    if texts then
      for i = 1, n do
        if finite(xs[i]) and finite(ys[i]) then
          L[#L + 1] = string.format("set label %d %s at %.10g,%.10g offset 0.6,0.4 font %s", 100 + i,
                                    q(texts[i]), xs[i], ys[i], P.gp_quote(",8"))
        end
      end
    end
    L[#L + 1] = "plot " .. table.concat(parts, ", ")
    return L
  end
  return render{kind = "scatter", opts = opts, width = W, height = H, body = body, data = {{".dat", rows}}}
end

---------------------------------------------------------------------------------------------------
-- the seed notebook's figures
---------------------------------------------------------------------------------------------------

-- defaults overridden by opts, leaving out the keys in drop (options of the caller only)
local function merge(defaults, opts, drop)
  local out = {}
  for k, v in pairs(defaults) do out[k] = v end
  for k, v in pairs(opts or {}) do out[k] = v end
  for _, k in ipairs(drop or {}) do out[k] = (defaults[k] ~= nil) and defaults[k] or nil end
  return out
end

-- loss_difference(log_probs, str_tokens, seq_len, opts): the log prob of the correct next token at
-- each position of a sequence repeated twice (as plot_loss_difference), the first half shaded red,
-- the repeat green, each labelled with its mean; the x axis shows the predicted tokens when there
-- are at most opts.token_ticks (default 40) positions. str_tokens may be nil.
function P.loss_difference(log_probs, str_tokens, seq_len, opts)
  check_opts("plot.loss_difference", opts, {"colors", "font", "fontsize", "format", "height", "hline", "labels", "legend", "logx", "logy", "markers", "max_label", "name", "names", "out", "range", "show", "title", "token_ticks", "vline", "vrect", "width", "x", "xlabel", "xrange", "xticks", "ylabel", "yrange"})
  opts = opts or {}
  local op = "plot.loss_difference"
  local lp, n = number_list(op, "log_probs", log_probs)
  if math.type(seq_len) ~= "integer" or seq_len < 1 or seq_len > n then
    error(string.format("%s: seq_len must be an integer in [1, %d], got %s", op, n, tostring(seq_len)), 0)
  end
  local function mean(a, b)
    local s, c = 0, 0
    for i = a, b do s, c = s + lp[i], c + 1 end
    return c > 0 and s / c or 0 / 0
  end
  local m1, m2 = mean(1, seq_len), mean(seq_len + 1, n)
  local o = merge({
    title = string.format("Per token log prob on correct token, for sequence of length %d*2 (repeated twice)", seq_len),
    xlabel = "Sequence position", ylabel = "Log prob", legend = false, width = 900, height = 460,
    vrect = {{-0.5, seq_len - 0.5, color = "#d62728", label = string.format("first half: mean %.3f", m1)},
             {seq_len - 0.5, n - 0.5, color = "#2ca02c", label = string.format("repeat: mean %.3f", m2)}},
    vline = {seq_len - 0.5},
    xrange = {-0.5, n - 0.5},
    name = opts.name or (not opts.title and not opts.out and "loss_difference" or nil),
  }, opts, {"token_ticks"})
  if str_tokens ~= nil and n <= (opts.token_ticks or 40) and o.xticks == nil then
    local toks = str_list(op, "str_tokens", str_tokens)
    if #toks == n + 1 then -- log_probs[i] is the log prob of token i+1
      local t = {}
      for i = 1, n do t[i] = toks[i + 1] end
      o.xticks = t
    elseif #toks == n then o.xticks = toks
    else error(string.format("%s: %d str_tokens for %d log probs", op, #toks, n), 0) end
  end
  return P.line(lp, o)
end

-- reads model.cfg.<field> from a table or a userdata model, or nil
local function cfg_field(model, field)
  local ok, v = pcall(function() return model.cfg[field] end)
  if ok then return v end
  return nil
end

-- logit_attribution(model | n_heads | {n_layers=, n_heads=} | component names, logit_attr, tokens,
--   title, opts): heatmap of a [seq-1, n_components] attribution (as plot_logit_attribution):
--   positions down (labelled |token|_i), components across (Direct, L0H0, L0H1, ...), RdBu at 0.
--   tokens: str_tokens, or token ids (shown as strings by model:to_str_tokens when the first
--   argument is a model, else as numbers); seq or seq-1 of them.
function P.logit_attribution(spec, logit_attr, tokens, title, opts)
  if type(title) == "table" and opts == nil then opts, title = title, nil end
  check_opts("plot.logit_attribution", opts, {"aspect", "clabel", "font", "fontsize", "format", "heads", "height", "labels", "layers", "max_label", "midpoint", "name", "out", "palette", "range", "range_color", "show", "text_auto", "title", "width", "x", "xlabel", "y", "ylabel"})
  opts = opts or {}
  local op = "plot.logit_attribution"
  local la, shape = as_dims(logit_attr, 2, op, "logit_attr")
  local npos, ncomp = shape[1], shape[2]
  local comps
  if type(spec) == "table" and type(spec[1]) == "string" then
    comps = str_list(op, "component names", spec)
  else
    local nl, nhd
    if type(spec) == "number" then
      nhd = spec
      if (ncomp - 1) % nhd ~= 0 then
        error(string.format("%s: %d components is not 1 + n_layers * %d heads", op, ncomp, nhd), 0)
      end
      nl = (ncomp - 1) // nhd
    elseif type(spec) == "table" and spec.n_heads then nl, nhd = spec.n_layers, spec.n_heads
    else nl, nhd = cfg_field(spec, "n_layers"), cfg_field(spec, "n_heads") end
    if type(nl) ~= "number" or type(nhd) ~= "number" then
      error(op .. ": first argument must be a model, n_heads, {n_layers=, n_heads=} or a list of component names", 0)
    end
    comps = {"Direct"}
    for l = 0, nl - 1 do for h = 0, nhd - 1 do comps[#comps + 1] = string.format("L%dH%d", l, h) end end
  end
  if #comps ~= ncomp then
    error(string.format("%s: logit_attr has %d components (shape %s), expected %d", op, ncomp, shape_str(shape), #comps), 0)
  end
  local toks
  if type(tokens) == "table" and type(tokens[1]) == "string" then
    toks = str_list(op, "tokens", tokens)
  else
    local ids = flatten((to_nested(tokens, op, "tokens")))
    local ok, strs = false, nil
    if spec ~= nil and type(spec) ~= "number" then
      ok, strs = pcall(function() return spec:to_str_tokens(tokens) end)
    end
    if ok and type(strs) == "table" then
      toks = str_list(op, "tokens", strs)
      if type(toks[1]) == "table" then toks = toks[1] end
    else
      toks = {}
      for i, v in ipairs(ids) do toks[i] = string.format("%d", v) end
    end
  end
  if #toks ~= npos and #toks ~= npos + 1 then
    error(string.format("%s: %d tokens for %d positions (expected %d or %d)", op, #toks, npos, npos, npos + 1), 0)
  end
  local ylabels = {}
  for i = 1, npos do ylabels[i] = "|" .. truncate(P.label_text(toks[i]), opts.max_label or 16) .. "|_" .. (i - 1) end
  return P.imshow(la, merge({x = comps, y = ylabels, labels = {x = "Term", y = "Position", color = "logit"},
                             title = title, midpoint = 0, max_label = 30,
                             name = opts.name or (not title and not opts.out and "logit_attribution" or nil)}, opts,
                            {"layers"}))
end

-- comp_scores(scores [H0, H1], title, baseline, opts), or comp_scores(model, scores, title, baseline,
--   opts) as plot_comp_scores: rows L0H*, columns L1H*; with a baseline, RdBu centred on it,
--   otherwise Blues from 0. opts.layers = {0, 1} names other layer pairs.
function P.comp_scores(a, b, c, d, e)
  local scores, title, baseline, opts
  if (type(a) == "table" or type(a) == "userdata") and cfg_field(a, "n_heads") then
    scores, title, baseline, opts = b, c, d, e
  else
    scores, title, baseline, opts = a, b, c, d
  end
  if type(title) == "table" then opts, title, baseline = title, nil, nil end
  if type(baseline) == "table" and not is_tensor(baseline) then opts, baseline = baseline, nil end
  check_opts("plot.comp_scores", opts, {"aspect", "clabel", "font", "fontsize", "format", "heads", "height", "labels", "layers", "max_label", "midpoint", "name", "out", "palette", "range", "range_color", "show", "text_auto", "title", "width", "x", "xlabel", "y", "ylabel"})
  opts = opts or {}
  local op = "plot.comp_scores"
  if is_tensor(baseline) then baseline = flatten(baseline:totable())[1] end
  if baseline ~= nil and type(baseline) ~= "number" then error(op .. ": baseline must be a number", 0) end
  local sc, shape = as_dims(scores, 2, op, "scores")
  local layers = opts.layers or {0, 1}
  local ylab, xlab = {}, {}
  for h = 0, shape[1] - 1 do ylab[#ylab + 1] = string.format("L%dH%d", layers[1], h) end
  for h = 0, shape[2] - 1 do xlab[#xlab + 1] = string.format("L%dH%d", layers[2], h) end
  local o = merge({x = xlab, y = ylab, title = title,
                   labels = {x = "Layer " .. layers[2], y = "Layer " .. layers[1], color = "score"},
                   name = opts.name or (not title and not opts.out and "comp_scores" or nil)}, opts, {"layers"})
  if baseline ~= nil then
    o.midpoint, o.palette = baseline, opts.palette or "RdBu"
    return P.imshow(sc, o)
  end
  o.palette = opts.palette or "Blues"
  if not o.range then
    local _, hi = finite_range(flatten(sc))
    o.range = {0, (hi and hi > 0) and hi or 1}
  end
  return P.imshow(sc, o)
end

---------------------------------------------------------------------------------------------------
-- showing a figure
---------------------------------------------------------------------------------------------------

local function have(prog)
  return os.execute("command -v " .. shq(prog) .. " >/dev/null 2>&1") == true
end

-- show(path): opens an image in a window when a display is available (DISPLAY or WAYLAND_DISPLAY):
-- with the first of xdg-open, display (ImageMagick), feh, eog found; without a viewer, by re-running the
-- figure's gnuplot script on an interactive terminal (qt, wxt or x11, absent from gnuplot-nox).
-- Returns path; raises when there is no display or no way to show it. P.autoshow = true (or
-- opts.show = true in one call) shows every figure as it is drawn (for the REPL).
function P.show(path)
  local op = "plot.show"
  if type(path) ~= "string" then error(op .. ": expected an image path", 0) end
  local fh = io.open(path, "rb")
  if not fh then error(op .. ": no such image: " .. path, 0) end
  fh:close()
  if not (os.getenv("DISPLAY") or os.getenv("WAYLAND_DISPLAY")) then
    error(op .. ": no display (DISPLAY is not set); the figure is at " .. path, 0)
  end
  for _, prog in ipairs{"xdg-open", "display", "feh", "eog"} do
    if have(prog) then
      os.execute(prog .. " " .. shq(path) .. " >/dev/null 2>&1 &")
      return path
    end
  end
  local script = path:gsub("%.%a+$", ".gp")
  local sf = io.open(script, "r")
  if sf and have(P.gnuplot) then
    local text = sf:read("a")
    sf:close()
    local terms = io.popen(shq(P.gnuplot) .. " -e 'set terminal' 2>&1"):read("a")
    for _, t in ipairs{"qt", "wxt", "x11"} do
      if terms:find("%s" .. t .. "%s") then
        text = text:gsub("\nset terminal [^\n]*", "\nset terminal " .. t .. " noenhanced", 1)
                   :gsub("\nset output [^\n]*", "", 1)
        local dir = path:match("^(.*)/") or "."
        local tmp = script:gsub("%.gp$", ".show.gp")
        write_file(op, tmp, text)
        os.execute(string.format("cd %s && %s -persist %s >/dev/null 2>&1 &", shq(dir), shq(P.gnuplot),
                                 shq(tmp:match("[^/]*$"))))
        return path
      end
    end
  elseif sf then sf:close() end
  error(op .. ": no image viewer (xdg-open, display, feh, eog) and no interactive gnuplot terminal; "
        .. "the figure is at " .. path, 0)
end

return P
