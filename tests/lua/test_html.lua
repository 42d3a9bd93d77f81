-- test_html.lua: mi.plot.attention_html and mi.plot.tokens_html (lua/miwb/html.lua), read back
-- from the page headless Chromium renders (SKIP without Chromium: `make notebook-deps`). A probe
-- script added to a copy of each file records console errors and, after synthetic hover events,
-- what the page shows; --dump-dom hands that back. Expected values come from the patterns and
-- values given, hostile token strings must show as their text and inject no element.
local T = require("testlib")
local mi = require("miwb")

local tmp = os.tmpname()
os.remove(tmp)
assert(mi.sys.mkdir(tmp))

local HOSTILE = {"<b>bold</b>", "</script><script>window.pwned=1</script>", "a\255b", "&amp;", "\"'`",
                 "é\n", "<!--", " x"}
-- what the page must show for each: mi.plot.label_text (control bytes and invalid UTF-8 visible)
local SHOWN = {"<b>bold</b>", "</script><script>window.pwned=1</script>", "a\\xFFb", "&amp;", "\"'`",
               "é\\n", "<!--", " x"}

local read = T.read_file

T.test("attention_html writes one self-contained file (no network, no external file)", function()
  local path = mi.plot.attention_html({"a", "b"}, mi.tensor{{1, 0}, {0.5, 0.5}}, {out = tmp .. "/one.html"})
  T.eq(path, tmp .. "/one.html")
  local s = read(path)
  T.truthy(not s:find("https?://") and not s:find("src%s*=%s*[\"']") and not s:find("<link"), "external reference")
  T.truthy(s:find("<style>", 1, true) and s:find("<script>", 1, true))
end)

T.test("bad arguments are refused with the function's name", function()
  local ok, err = pcall(mi.plot.attention_html, {"a"}, mi.ones(2, 2))
  T.truthy(not ok and err:find("plot.attention_html: 1 str_tokens for a pattern with 2 keys", 1, true), err)
  ok, err = pcall(mi.plot.attention_html, {"a"}, mi.ones(1, 1), {head_name = {"x"}})
  T.truthy(not ok and err:find("unknown option 'head_name'", 1, true), err)
  ok, err = pcall(mi.plot.tokens_html, {"a", "b"}, {1})
  T.truthy(not ok and err:find("plot.tokens_html: 1 values for 2 str_tokens", 1, true), err)
  ok, err = pcall(mi.plot.attention_html, {"a"}, mi.ones(1, 1), {out = "x\0y.html"})
  T.truthy(not ok and err:find("opts.out", 1, true), err)
end)

local chromium
for _, c in ipairs{"chromium", "chromium-browser"} do
  if os.execute("command -v " .. c .. " >/dev/null 2>&1") then chromium = c break end
end
if not chromium then
  print("SKIP - HTML views in a browser: chromium is not installed (make notebook-deps)")
  T.done()
  return
end

-- the probe: errors are recorded from the start; `body` (JS) fills `out`, which is dumped as JSON
local HEAD = [[<script>window.__errs=[];window.addEventListener("error",function(e){__errs.push(String(e.message))});
var __ce=console.error;console.error=function(){__errs.push([].join.call(arguments," "));__ce.apply(console,arguments)};</script>]]
local function probe(file, body)
  local s = read(file)
  local tail = "<script>(function(){var out={};try{" .. body .. "}catch(e){__errs.push('probe: '+e)}" ..
               "out.errs=__errs;var o=document.createElement('pre');o.id='miwb-probe';" ..
               "o.textContent=JSON.stringify(out);document.body.appendChild(o);})();</script>"
  s = s:gsub("<head>", function() return "<head>" .. HEAD end, 1):gsub("</body>", function() return tail .. "</body>" end, 1)
  local page = file:gsub("%.html$", ".probe.html")
  local f = assert(io.open(page, "wb"))
  f:write(s)
  f:close()
  local cmd = string.format("timeout 120 %s --headless=new --no-sandbox --disable-gpu --no-first-run " ..
                            "--user-data-dir=%s/profile --dump-dom 'file://%s' 2>%s/chromium.log", chromium, tmp, page, tmp)
  local p = io.popen(cmd)
  local dom = p:read("a")
  p:close()
  local text = dom:match('<pre id="miwb%-probe">(.-)</pre>')
  if not text then error("no probe output; chromium said: " .. read(tmp .. "/chromium.log"):sub(-1500)) end
  text = text:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&nbsp;", "\194\160"):gsub("&amp;", "&")
  return mi.json.decode(text), dom
end

T.test("attention view in Chromium: thumbnails, tokens as text, hover both ways, causal mask", function()
  local n, nh = #HOSTILE, 12
  mi.manual_seed(3)
  local scores = mi.randn(nh, n, n):masked_fill(mi.ones(n, n):triu(1):bool(), -math.huge)
  local pattern = scores:softmax(-1)
  local names = {}
  for h = 1, nh do names[h] = "H<" .. (h - 1) .. ">" end
  local path = mi.plot.attention_html(HOSTILE, pattern, {head_names = names, out = tmp .. "/attn.html"})
  local r = probe(path, [[
    var root=document.querySelector('.miwb-attn');
    out.ready=root.dataset.ready; out.thumbs=root.querySelectorAll('.miwb-thumb').length;
    out.names=[].map.call(root.querySelectorAll('.miwb-thumb div'),function(x){return x.textContent});
    out.injected=document.querySelectorAll('b').length+(window.pwned?100:0);
    root.querySelectorAll('.miwb-thumb')[2].dispatchEvent(new MouseEvent('click',{bubbles:true}));
    function read(sel){return [].map.call(root.querySelectorAll(sel),function(x){
      return {t:x.textContent,v:x.dataset.v===undefined?null:Number(x.dataset.v),m:x.classList.contains('miwb-masked')}})}
    root.querySelectorAll('.miwb-dst .miwb-tok')[4].dispatchEvent(new MouseEvent('mouseover',{bubbles:true}));
    out.dst4=read('.miwb-src .miwb-tok');
    var band=root.querySelector('.miwb-band'),zc=root.querySelector('canvas.miwb-zoom');
    out.band=[band.style.display,parseFloat(band.style.top),parseFloat(band.style.height),zc.offsetHeight];
    root.querySelectorAll('.miwb-src .miwb-tok')[3].dispatchEvent(new MouseEvent('mouseover',{bubbles:true}));
    out.src3=read('.miwb-dst .miwb-tok');
    var z=root.querySelector('canvas.miwb-zoom').getContext('2d');
    out.masked_px=[].slice.call(z.getImageData(5,1,1,1).data); out.first_px=[].slice.call(z.getImageData(0,0,1,1).data);
  ]])
  T.eq(#r.errs, 0, "console errors: " .. table.concat(r.errs, "; "))
  T.eq(r.ready, "1"); T.eq(r.thumbs, nh); T.eq(r.names[3], "H<2>")
  T.eq(r.injected, 0, "elements injected by token strings")
  local p = pattern[2]:totable()   -- head 2 was clicked
  for j = 1, n do
    T.eq(r.dst4[j].t, SHOWN[j], "source token text")
    if j <= 5 then
      T.truthy(not r.dst4[j].m, "unmasked"); T.near(r.dst4[j].v, p[5][j], 6e-4, "dest 4 -> src " .. (j - 1))
    else
      T.truthy(r.dst4[j].m and r.dst4[j].v == mi.json.null, "key after the query is masked")
    end
  end
  for i = 1, n do
    if i >= 4 then T.near(r.src3[i].v, p[i][4], 6e-4, "dest " .. (i - 1) .. " -> src 3")
    else T.truthy(r.src3[i].m, "destination before the source is masked") end
  end
  T.eq(r.band[1], "block", "the hovered destination's row is marked on the zoomed head")
  T.near(r.band[2], 4 * r.band[4] / n, 0.01); T.near(r.band[3], r.band[4] / n, 0.01)
  T.eq(r.masked_px[1], 225, "the causal mask is grey in the zoomed head")
  T.eq(r.first_px[1], 8, "position 0 attends to itself with weight 1 (darkest blue)")
end)

T.test("attention view of 500 tokens and 2 heads loads in Chromium", function()
  local n = 500
  local scores = mi.randn(2, n, n):masked_fill(mi.ones(n, n):triu(1):bool(), -math.huge)
  local toks = {}
  for i = 1, n do toks[i] = "t" .. (i - 1) end
  local path = mi.plot.attention_html(toks, scores:softmax(-1), {out = tmp .. "/big.html", layer = 3})
  local r = probe(path, [[var root=document.querySelector('.miwb-attn');out.ready=root.dataset.ready;
    out.n=root.querySelectorAll('.miwb-src .miwb-tok').length;out.last=root.querySelectorAll('.miwb-src .miwb-tok')[499].textContent;
    out.name=root.querySelector('.miwb-thumb div').textContent;]])
  T.eq(#r.errs, 0, table.concat(r.errs, "; "))
  T.eq(r.ready, "1"); T.eq(r.n, 500); T.eq(r.last, "t499"); T.eq(r.name, "L3H0")
end)

T.test("tokens view in Chromium: colours, values on hover, hostile tokens as text", function()
  local vals = {-2, -0.5, 0, 0.25, 1, 3, 0.125, -1e-3}
  local path = mi.plot.tokens_html(HOSTILE, mi.tensor(vals), {out = tmp .. "/tok.html", title = "<i>loss</i>"})
  local r = probe(path, [[var root=document.querySelector('.miwb-tokview');out.ready=root.dataset.ready;
    out.toks=[].map.call(root.querySelectorAll('.miwb-tok'),function(x){return {t:x.textContent,v:Number(x.dataset.v),
      bg:getComputedStyle(x).backgroundColor}});
    out.injected=document.querySelectorAll('b, i').length+(window.pwned?100:0);out.title=root.querySelector('h3').textContent;
    root.querySelectorAll('.miwb-tok')[5].dispatchEvent(new MouseEvent('mouseover',{bubbles:true}));
    out.info=root.querySelector('.miwb-info').textContent;]])
  T.eq(#r.errs, 0, table.concat(r.errs, "; "))
  T.eq(r.ready, "1"); T.eq(r.injected, 0); T.eq(r.title, "<i>loss</i>")
  for i = 1, #vals do
    T.eq(r.toks[i].t, SHOWN[i]); T.near(r.toks[i].v, vals[i], 1e-6)
  end
  T.eq(r.toks[6].bg, "rgb(33, 102, 172)", "the largest magnitude is the full blue")
  T.eq(r.toks[3].bg, "rgb(255, 255, 255)", "zero is white")
  T.truthy(r.toks[1].bg:match("^rgb%(2%d%d, %d+, %d+%)") and r.toks[1].bg ~= "rgb(255, 255, 255)", "negative is red: " .. r.toks[1].bg)
  T.truthy(r.info:find("3", 1, true) and r.info:find("token 5", 1, true), r.info)
end)

T.sh("rm -rf " .. T.shq(tmp))
T.done()
