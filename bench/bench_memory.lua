-- bench_memory.lua: peak resident memory beyond the weights of a forward pass, GPT-2 small's shape
-- (random weights, 652 MB of float32 parameters) at 1 x 128, in fresh processes (each measurement
-- reads its own high-water mark, VmHWM of /proc/self/status). `make bench` runs it with build/miwb.
-- Issue 17's goal: at most 0.2x TransformerLens's (~310 MB measured beside it), i.e. <= 62 MB.
-- Reported: peak RSS - RSS before the model was built - the weights' bytes.
local mi = require("miwb")

local function status(key)
  for line in io.lines("/proc/self/status") do
    local v = line:match("^" .. key .. ":%s+(%d+) kB")
    if v then return tonumber(v) * 1024 end
  end
end

local mode = arg[1]
if mode then                                  -- a child: one measurement, printed as numbers
  local before = status("VmRSS")
  local model = mi.HookedTransformer({d_model = 768, d_head = 64, n_heads = 12, n_layers = 12, n_ctx = 1024,
    d_vocab = 50257, act_fn = "gelu_new", seed = 1})
  local weights = mi.live_tensor_bytes()
  local tokens = mi.randint(0, 50257, {1, 128}, mi.Generator(0))
  for _ = 1, 3 do
    if mode == "logits" then local l = model(tokens)
    elseif mode == "last_only" then local l = model(tokens, {last_only = true})
    elseif mode == "loss" then local l = model(tokens, {return_type = "loss"})
    elseif mode == "cache" then local l, c = model:run_with_cache(tokens) end
  end
  print(before, weights, status("VmHWM"))
  return
end

local exe = arg[-1] or "miwb"
for _, m in ipairs({"logits", "last_only", "loss", "cache"}) do
  local p = io.popen(mi.utils.shell_quote(exe) .. " " .. mi.utils.shell_quote(arg[0]) .. " " .. m)
  local out = p:read("a")
  p:close()
  local before, weights, hwm = out:match("(%d+)%s+(%d+)%s+(%d+)")
  if not before then
    print(string.format("gpt2-small 1 x 128, %-9s: failed (%s)", m, (out:match("[^\n]+") or "no output")))
  else print(string.format("gpt2-small 1 x 128, 3 calls of %-9s: peak RSS %.0f MB beyond the %.0f MB of weights" ..
                      " (%.2fx TransformerLens's ~310 MB; goal <= 0.2)", m,
                      (hwm - before - weights) / 1e6, weights / 1e6, (hwm - before - weights) / 310e6)) end
end
