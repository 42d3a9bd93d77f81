-- mi.plot.attention_html, mi.plot.tokens_html: interactive views as single self-contained HTML
-- files (their JavaScript and CSS are written here and inlined: no CDN, no network at view time),
-- shown inline when running in the Jupyter kernel (mi.display).
--
--   attention_html(str_tokens, pattern, opts) -> path
--       pattern [heads, q, k] (a leading batch dim of 1 is dropped; [q, k] is one head), queries
--       the last q positions, as mi.plot.attention_patterns. The page shows one thumbnail per
--       head (click one to zoom it), the zoomed head as a heat map (hover a cell for its value),
--       and the tokens twice: hover a destination (query) token to colour the source tokens by
--       how much it attends to each, hover a source token to colour the destinations that attend
--       to it. Keys after the query (the causal mask) are grey. 1 to ~500 tokens, a few dozen heads.
--       opts: head_names (one per head) or layer (names "L<layer>H<h>"), title, out (a file .html or
--       a folder; default plots/), name
--   tokens_html(str_tokens, values, opts) -> path
--       the tokens coloured by one value each (per-token loss, a neuron's or an SAE feature's
--       activation): red-white-blue centred on 0 for signed values, white to blue otherwise;
--       the value on hover. opts: title, range = {lo, hi}, out, name
--
-- Token text is shown as mi.plot.label_text shows it (control characters and invalid UTF-8 made
-- visible) and only ever reaches the page as JSON read by script and set as text, or HTML-escaped:
-- a token such as "</script><b>" shows as itself. Patterns are stored as 16-bit fractions (error
-- below 1e-5), only the causal triangle when nothing lies above it.
local H = {}

local mi

local function is_tensor(v) return mi.is_tensor and mi.is_tensor(v) end

local function html_escape(s)
  if type(s) ~= "string" and type(s) ~= "number" then
    error("html_escape: expected a string, got " .. mi.utils.typename(s), 2)
  end
  return (tostring(s):gsub("[&<>\"']", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                               ["'"] = "&#39;"}))
end
H.html_escape = html_escape

-- JSON safe inside <script>: "<" written as \u003c, so no "</script>" or "<!--" can appear
local function script_json(v)
  return (mi.json.encode(v):gsub("<", "\\u003c"))
end

local counters = {}

-- the path to write for a view of the given kind (opts.out a file .html or a folder, opts.name)
local function out_path(op, kind, opts)
  local out, dir, base = opts.out, nil, nil
  if out ~= nil then
    if type(out) ~= "string" or out == "" or out:find("%z") then
      error(op .. ": opts.out must be a file name ending in .html or a folder, got " .. tostring(out), 0)
    end
    local d, b = out:match("^(.-)([^/]+)%.html?$")
    if b then dir, base = d, b else dir = out end
  else
    dir = mi.plot and mi.plot.dir or "plots"
  end
  dir = dir:gsub("/+$", "")
  if dir == "" then dir = (out and out:sub(1, 1) == "/") and "/" or "." end
  if not base then
    if opts.name then
      base = tostring(opts.name)
      if base == "" or base:find("[/%z]") then error(op .. ": opts.name must be a plain file name", 0) end
    else
      counters[kind] = (counters[kind] or 0) + 1
      base = kind .. "-" .. counters[kind]
    end
  end
  H.mkdir_p(op, dir)
  return dir .. "/" .. base .. ".html"
end

function H.mkdir_p(op, dir)
  op = tostring(op)
  if type(dir) ~= "string" then error(op .. ": the folder must be a string, got " .. mi.utils.typename(dir), 0) end
  if dir:find("%z") then error(op .. ": the folder name holds a NUL byte", 0) end
  local ok, err = mi.sys.mkdir(dir)
  if not ok then error(op .. ": cannot create folder " .. dir .. ": " .. tostring(err), 0) end
end

-- write_atomic(op, path, text): through mi.utils.write_file (a temporary file and a rename, so that a
-- reader never sees half a file); raises naming op and the step that failed
function H.write_atomic(op, path, text)
  local ok, err = mi.utils.write_file(path, text)
  if not ok then error(op .. ": " .. tostring(err), 0) end
end

-- the API's one options check (mi.utils.check_opts); nil gives an empty table
local function check_opts(op, opts, known)
  return mi.utils.check_opts(op, opts, known) or {}
end

local function token_list(op, str_tokens)
  if type(str_tokens) ~= "table" then error(op .. ": str_tokens must be a list of strings", 0) end
  local toks = {}
  for i = 1, #str_tokens do
    local s = str_tokens[i]
    if type(s) ~= "string" and type(s) ~= "number" then
      error(string.format("%s: str_tokens[%d] is a %s, not a string", op, i, type(s)), 0)
    end
    toks[i] = mi.plot.label_text(tostring(s))
  end
  return toks
end

local _uid = 0
local function uid()
  _uid = _uid + 1
  local f = io.open("/dev/urandom", "rb")
  local r = f and f:read(4) or tostring(os.time())
  if f then f:close() end
  return "miwb" .. (r:gsub(".", function(c) return string.format("%02x", c:byte()) end)) .. _uid
end

local function page(title, fragment)
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>" ..
         html_escape(title) .. "</title>\n</head>\n<body style=\"margin:16px\">\n" .. fragment ..
         "\n</body></html>\n"
end

-- writes the page, shows the fragment inline when a kernel is serving, returns the path
local function finish(op, kind, opts, title, fragment)
  local path = out_path(op, kind, opts)
  H.write_atomic(op, path, page(title, fragment))
  if mi.kernel and mi.kernel.publish_display then mi.display(fragment, {mime = "text/html", text = path}) end
  return path
end

---------------------------------------------------------------------------------------------------
-- attention view
---------------------------------------------------------------------------------------------------

local ATTN_CSS = [[
.miwb-attn{font-family:system-ui,sans-serif;font-size:13px;color:#222}
.miwb-attn h3{margin:4px 0 8px 0;font-size:15px}
.miwb-attn .miwb-thumbs{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:10px}
.miwb-attn .miwb-thumb{cursor:pointer;border:2px solid transparent;padding:2px;text-align:center;font-size:11px}
.miwb-attn .miwb-thumb.miwb-sel{border-color:#d62728}
.miwb-attn canvas{image-rendering:pixelated;display:block;background:#fff}
.miwb-attn .miwb-main{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.miwb-attn .miwb-info{min-height:1.4em;margin:6px 0;font-family:monospace}
.miwb-attn .miwb-toks{line-height:1.9;margin-bottom:8px;max-height:260px;overflow-y:auto}
.miwb-attn .miwb-side{flex:1 1 320px;min-width:280px;max-width:640px}
.miwb-attn .miwb-tok{display:inline-block;line-height:1.3;font-family:monospace;white-space:pre;padding:1px 2px;margin:0 1px;border:1px solid #ccc;border-radius:3px;cursor:default}
.miwb-attn .miwb-tok.miwb-masked{background:#e6e6e6;color:#999}
.miwb-attn .miwb-tok.miwb-hover{outline:2px solid #d62728}
.miwb-attn .miwb-label{font-weight:600;margin:6px 0 2px 0}
.miwb-attn .miwb-zoomwrap{position:relative}
.miwb-attn .miwb-band{position:absolute;display:none;pointer-events:none;background:rgba(214,39,40,0.12);outline:1px solid #d62728}
]]

-- The script reads its data from the JSON block beside it; everything it writes into the page is
-- set with textContent or style, never as HTML.
local ATTN_JS = [[
(function(){
var root=document.getElementById(ROOT_ID);
var D=JSON.parse(root.querySelector('script.miwb-data').textContent);
var nh=D.heads.length,nq=D.nq,nk=D.nk,off0=nk-nq;
var raw=atob(D.data),bytes=new Uint8Array(raw.length);
for(var b=0;b<raw.length;b++)bytes[b]=raw.charCodeAt(b);
var rowStart=[],per=0;
for(var r=0;r<nq;r++){rowStart.push(per);per+=D.causal?(off0+r+1):nk;}
function val(h,r,j){
  if(j>off0+r&&D.causal)return 0;
  var k=2*(h*per+rowStart[r]+j);return (bytes[k]|(bytes[k+1]<<8))/65535;}
function masked(r,j){return j>off0+r;}
function blue(v){v=Math.max(0,Math.min(1,v));
  return 'rgb('+Math.round(255-v*(255-8))+','+Math.round(255-v*(255-81))+','+Math.round(255-v*(255-156))+')';}
function draw(canvas,h){
  var ctx=canvas.getContext('2d'),img=ctx.createImageData(nk,nq),p=img.data;
  for(var r=0;r<nq;r++)for(var j=0;j<nk;j++){var i4=4*(r*nk+j),c;
    if(masked(r,j)){p[i4]=p[i4+1]=p[i4+2]=225;}
    else{var v=Math.max(0,Math.min(1,val(h,r,j)));p[i4]=255-v*247;p[i4+1]=255-v*174;p[i4+2]=255-v*99;}
    p[i4+3]=255;}
  ctx.putImageData(img,0,0);}
var thumbs=root.querySelector('.miwb-thumbs'),zoom=root.querySelector('canvas.miwb-zoom');
var info=root.querySelector('.miwb-info'),zlabel=root.querySelector('.miwb-zoom-label');
var dstList=root.querySelector('.miwb-dst'),srcList=root.querySelector('.miwb-src');
var cur=0,tw=Math.max(40,Math.min(96,Math.round(480/Math.sqrt(nh))));
var zw=nk<=420?nk*Math.min(20,Math.floor(420/nk)):420;
zoom.width=nk;zoom.height=nq;zoom.style.width=zw+'px';zoom.style.height=Math.max(1,Math.round(zw*nq/nk))+'px';
function select(h){cur=h;draw(zoom,h);zlabel.textContent=D.heads[h];
  var all=thumbs.children;for(var t=0;t<all.length;t++)all[t].classList.toggle('miwb-sel',t===h);clear();}
D.heads.forEach(function(name,h){
  var d=document.createElement('div');d.className='miwb-thumb';d.title=name;
  var c=document.createElement('canvas');c.width=nk;c.height=nq;c.style.width=tw+'px';
  c.style.height=Math.max(1,Math.round(tw*nq/nk))+'px';draw(c,h);
  var l=document.createElement('div');l.textContent=name;d.appendChild(c);d.appendChild(l);
  d.addEventListener('click',function(){select(h);});thumbs.appendChild(d);});
function tok(list,i){var s=document.createElement('span');s.className='miwb-tok';s.textContent=D.tokens[i];
  s.dataset.pos=i;list.appendChild(s);return s;}
var dspans=[],sspans=[];
for(var r=0;r<nq;r++)dspans.push(tok(dstList,off0+r));
for(var j=0;j<nk;j++)sspans.push(tok(srcList,j));
var band=root.querySelector('.miwb-band');
function showBand(r,j){var w=zoom.offsetWidth,h=zoom.offsetHeight,st=band.style;st.display='block';
  if(r!==null){st.left='0px';st.width=w+'px';st.top=(r*h/nq)+'px';st.height=Math.max(1,h/nq)+'px';}
  else{st.top='0px';st.height=h+'px';st.left=(j*w/nk)+'px';st.width=Math.max(1,w/nk)+'px';}}
function clear(){dspans.concat(sspans).forEach(function(s){s.style.background='';s.classList.remove('miwb-masked','miwb-hover');
  delete s.dataset.v;});info.textContent='';band.style.display='none';}
function fmt(v){return v.toFixed(3);}
function showDst(r){clear();dspans[r].classList.add('miwb-hover');showBand(r,null);
  sspans.forEach(function(s,j){if(masked(r,j)){s.classList.add('miwb-masked');}
    else{var v=val(cur,r,j);s.style.background=blue(v);s.dataset.v=fmt(v);}});
  info.textContent=D.heads[cur]+': destination '+(off0+r)+' '+JSON.stringify(D.tokens[off0+r])+' attends to the source tokens below';}
function showSrc(j){clear();sspans[j].classList.add('miwb-hover');showBand(null,j);
  dspans.forEach(function(s,r){if(masked(r,j)){s.classList.add('miwb-masked');}
    else{var v=val(cur,r,j);s.style.background=blue(v);s.dataset.v=fmt(v);}});
  info.textContent=D.heads[cur]+': destinations attending to source '+j+' '+JSON.stringify(D.tokens[j]);}
dspans.forEach(function(s,r){s.addEventListener('mouseover',function(){showDst(r);});});
sspans.forEach(function(s,j){s.addEventListener('mouseover',function(){showSrc(j);});});
zoom.addEventListener('mousemove',function(e){var b=zoom.getBoundingClientRect();
  var j=Math.floor((e.clientX-b.left)/b.width*nk),r=Math.floor((e.clientY-b.top)/b.height*nq);
  if(r<0||r>=nq||j<0||j>=nk)return;
  info.textContent=D.heads[cur]+': '+(off0+r)+' '+JSON.stringify(D.tokens[off0+r])+' -> '+j+' '+
    JSON.stringify(D.tokens[j])+(masked(r,j)?': masked':': '+fmt(val(cur,r,j)));});
select(0);
root.dataset.ready='1';
})();
]]

-- pattern as a list of heads, each a list of rows (nested Lua tables), and its shape
local function pattern_heads(op, pattern)
  local p = pattern
  if is_tensor(p) then
    local shape = p:shape()
    if #shape == 4 and shape[1] == 1 then p = p[0]; shape = p:shape() end
    if #shape == 2 then p = p:unsqueeze(0); shape = p:shape() end
    if #shape ~= 3 then
      error(string.format("%s: pattern must be [heads, q, k] (or [q, k], or [1, heads, q, k]), got [%s]",
                          op, table.concat(shape, ",")), 0)
    end
    return function(h) return p[h]:float():totable() end, shape[1], shape[2], shape[3]
  end
  if type(p) ~= "table" or type(p[1]) ~= "table" then
    error(op .. ": pattern must be a tensor or a nested table [heads][q][k]", 0)
  end
  if type(p[1][1]) == "number" then p = {p} end
  if type(p[1][1]) == "table" and type(p[1][1][1]) == "table" and #p == 1 then p = p[1] end
  local nq, nk = #p[1], #p[1][1]
  for h = 1, #p do
    if type(p[h]) ~= "table" or #p[h] ~= nq then error(op .. ": ragged pattern (head " .. (h - 1) .. ")", 0) end
    for r = 1, nq do
      if type(p[h][r]) ~= "table" or #p[h][r] ~= nk then
        error(string.format("%s: ragged pattern (head %d, row %d)", op, h - 1, r - 1), 0)
      end
    end
  end
  return function(h) return p[h + 1] end, #p, nq, nk
end

local function quantize(v)
  if v ~= v or v <= 0 then return 0 end
  if v >= 1 then return 65535 end
  return math.floor(v * 65535 + 0.5)
end

function H.attention_html(str_tokens, pattern, opts)
  local op = "plot.attention_html"
  opts = check_opts(op, opts, {head_names = true, layer = true, title = true, out = true, name = true})
  local toks = token_list(op, str_tokens)
  local head, nh, nq, nk = pattern_heads(op, pattern)
  if #toks ~= nk then
    error(string.format("%s: %d str_tokens for a pattern with %d keys", op, #toks, nk), 0)
  end
  if nq > nk or nq == 0 or nh == 0 then
    error(string.format("%s: pattern [%d, %d, %d] needs 1 <= q <= k and at least one head", op, nh, nq, nk), 0)
  end
  local names = {}
  if opts.head_names then
    if type(opts.head_names) ~= "table" or #opts.head_names ~= nh then
      error(string.format("%s: head_names must list %d names (one per head)", op, nh), 0)
    end
    for h = 1, nh do names[h] = mi.plot.label_text(tostring(opts.head_names[h])) end
  else
    for h = 1, nh do
      names[h] = opts.layer and string.format("L%dH%d", opts.layer, h - 1) or ("Head " .. (h - 1))
    end
  end
  -- causal when nothing lies above the diagonal: then only the triangle is stored
  local rows = {}
  local causal = true
  for h = 0, nh - 1 do
    rows[h + 1] = head(h)
    for r = 1, nq do
      local row = rows[h + 1][r]
      for j = nk - nq + r + 1, nk do if row[j] ~= 0 then causal = false break end end
    end
  end
  local chunks, buf = {}, {}
  for h = 1, nh do
    for r = 1, nq do
      local row = rows[h][r]
      local last = causal and (nk - nq + r) or nk
      for j = 1, last do
        local q = quantize(row[j])
        buf[#buf + 1] = q & 255
        buf[#buf + 1] = q >> 8
        if #buf >= 4000 then chunks[#chunks + 1] = string.char(table.unpack(buf)); buf = {} end
      end
    end
    rows[h] = nil
  end
  if #buf > 0 then chunks[#chunks + 1] = string.char(table.unpack(buf)) end
  local data = {tokens = toks, heads = names, nq = nq, nk = nk, causal = causal,
                data = mi._kernel.base64(table.concat(chunks))}
  local id = uid()
  local title = opts.title and mi.plot.label_text(tostring(opts.title)) or "Attention patterns"
  local fragment = table.concat{
    "<div class=\"miwb-attn\" id=\"", id, "\">\n<style>", ATTN_CSS, "</style>\n",
    "<h3>", html_escape(title), "</h3>\n",
    "<div class=\"miwb-thumbs\"></div>\n<div class=\"miwb-main\"><div><div class=\"miwb-label miwb-zoom-label\"></div>",
    "<div class=\"miwb-zoomwrap\"><canvas class=\"miwb-zoom\"></canvas><div class=\"miwb-band\"></div></div></div>\n<div class=\"miwb-side\"><div class=\"miwb-label\">Destination (query) tokens: ",
    "hover one to see where it attends</div><div class=\"miwb-toks miwb-dst\"></div>\n",
    "<div class=\"miwb-label\">Source (key) tokens: hover one to see which destinations attend to it</div>",
    "<div class=\"miwb-toks miwb-src\"></div><div class=\"miwb-info\"></div></div></div>\n",
    "<script type=\"application/json\" class=\"miwb-data\">", script_json(data), "</script>\n",
    "<script>", (ATTN_JS:gsub("ROOT_ID", function() return "\"" .. id .. "\"" end)), "</script>\n</div>"}
  return finish(op, "attention", opts, title, fragment)
end

---------------------------------------------------------------------------------------------------
-- coloured tokens
---------------------------------------------------------------------------------------------------

local TOK_CSS = [[
.miwb-tokview{font-family:system-ui,sans-serif;font-size:13px;color:#222}
.miwb-tokview h3{margin:4px 0 8px 0;font-size:15px}
.miwb-tokview .miwb-toks{line-height:1.9;max-width:900px}
.miwb-tokview .miwb-tok{display:inline-block;line-height:1.3;font-family:monospace;white-space:pre;padding:1px 2px;margin:0 1px;border:1px solid #ddd;border-radius:3px}
.miwb-tokview .miwb-tok:hover{outline:2px solid #222}
.miwb-tokview .miwb-info{min-height:1.4em;margin:6px 0;font-family:monospace}
]]

local TOK_JS = [[
(function(){
var root=document.getElementById(ROOT_ID),info=root.querySelector('.miwb-info');
root.querySelectorAll('.miwb-tok').forEach(function(s){s.addEventListener('mouseover',function(){
  info.textContent='token '+s.dataset.pos+' '+JSON.stringify(s.textContent)+': '+s.dataset.v;});});
root.dataset.ready='1';
})();
]]

local function fmt_value(v)
  if v ~= v then return "nan" end
  return string.format("%.4g", v)
end

-- a CSS colour for v: signed data red (negative) - white - blue (positive) scaled by the larger
-- magnitude of lo and hi; non-negative data white to blue over [lo, hi]
local function colour(v, lo, hi)
  if v ~= v then return "#cccccc" end
  local r, g, b
  if lo < 0 then
    local m = math.max(-lo, hi, 1e-30)
    local t = math.max(-1, math.min(1, v / m))
    if t >= 0 then r, g, b = 255 - t * 222, 255 - t * 153, 255 - t * 83
    else t = -t; r, g, b = 255 - t * 41, 255 - t * 216, 255 - t * 215 end
  else
    local t = hi > lo and math.max(0, math.min(1, (v - lo) / (hi - lo))) or 0
    r, g, b = 255 - t * 247, 255 - t * 174, 255 - t * 99
  end
  return string.format("rgb(%d,%d,%d)", math.floor(r + 0.5), math.floor(g + 0.5), math.floor(b + 0.5))
end

function H.tokens_html(str_tokens, values, opts)
  local op = "plot.tokens_html"
  opts = check_opts(op, opts, {title = true, range = true, out = true, name = true})
  local toks = token_list(op, str_tokens)
  local vals = values
  if is_tensor(values) then
    if #values:shape() ~= 1 then
      error(string.format("%s: values must be 1-D (one per token), got [%s]", op, table.concat(values:shape(), ",")), 0)
    end
    vals = values:float():totable()
  end
  if type(vals) ~= "table" then error(op .. ": values must be a 1-D tensor or a list of numbers", 0) end
  if #vals ~= #toks then error(string.format("%s: %d values for %d str_tokens", op, #vals, #toks), 0) end
  local lo, hi = math.huge, -math.huge
  for i = 1, #vals do
    if type(vals[i]) ~= "number" then error(string.format("%s: values[%d] is not a number", op, i), 0) end
    if vals[i] == vals[i] then lo, hi = math.min(lo, vals[i]), math.max(hi, vals[i]) end
  end
  if lo == math.huge then lo, hi = 0, 1 end
  if lo > 0 then lo = 0 end
  if opts.range then
    if type(opts.range) ~= "table" or type(opts.range[1]) ~= "number" or type(opts.range[2]) ~= "number" then
      error(op .. ": opts.range must be {lo, hi}", 0)
    end
    lo, hi = opts.range[1], opts.range[2]
  end
  local id = uid()
  local title = opts.title and mi.plot.label_text(tostring(opts.title)) or "Tokens"
  local spans = {}
  for i = 1, #toks do
    local v = fmt_value(vals[i])
    spans[i] = string.format("<span class=\"miwb-tok\" data-pos=\"%d\" data-v=\"%s\" title=\"%s\" style=\"background:%s\">%s</span>",
                             i - 1, v, html_escape(toks[i]) .. ": " .. v, colour(vals[i], lo, hi), html_escape(toks[i]))
  end
  local fragment = table.concat{
    "<div class=\"miwb-tokview\" id=\"", id, "\">\n<style>", TOK_CSS, "</style>\n<h3>", html_escape(title),
    "</h3>\n<div class=\"miwb-toks\">", table.concat(spans), "</div>\n<div class=\"miwb-info\"></div>\n",
    "<script>", (TOK_JS:gsub("ROOT_ID", function() return "\"" .. id .. "\"" end)), "</script>\n</div>"}
  return finish(op, "tokens", opts, title, fragment)
end

function H._install(m)
  mi = m
  if m.plot then
    m.plot.attention_html = H.attention_html
    m.plot.tokens_html = H.tokens_html
  end
end

return H
