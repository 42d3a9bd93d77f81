-- steering.lua: a steering vector for the bundled model. The mean difference of the residual
-- stream entering block --layer between scripture-like and technical-dictionary prompts (last
-- token of each) is added, times --coeff, at every position of new prompts; the script prints
-- which next tokens gain and lose log-probability, the KL divergence, and a greedy continuation
-- with and without the vector, and draws the log-probs before against after.
--   miwb scripts/steering.lua [--model M] [--layer 1] [--coeff 1] [--tokens 16] [--out DIR]
local mi = require("miwb")
local E = mi.experiment

local args = E.parse_args(arg, "steering", {layer = 1, coeff = 1, tokens = 16}, {
  layer = "the layer whose residual stream (hook_resid_pre) is steered", coeff = "multiple of the steering vector added",
  tokens = "tokens generated per prompt"})
local model, model_name = E.load_model(args.model)
if not model.tokenizer then error("steering.lua: the model needs a tokenizer (not the toy model)", 0) end
print("model: " .. model_name)

local A = {"And the LORD spake unto Moses, saying", "In the beginning God created the heaven",
           "Blessed are the meek: for they shall", "And he said unto them, Verily I say",
           "Thou shalt love thy neighbour as", "The LORD is my shepherd; I shall"}
local B = {"A computer program that translates source code", "The network protocol sends a packet",
           "In computing, a file system is", "The compiler reports an error when the",
           "A variable in a programming language", "The operating system schedules each process"}
local hook_name = mi.utils.get_act_name("resid_pre", args.layer)
local v = mi.steering.mean_difference(model, A, B, hook_name)
print(("steering vector: %s, mean over %d prompts minus %d, norm %.2f, coeff %g"):format(hook_name, #A, #B,
      v:norm():item(), args.coeff))
local hooks = {{hook_name, mi.steering.add(v, args.coeff)}}

local tests = {"I saw that the", "It is", "The man who"}
local results = {vector_norm = v:norm():item(), hook = hook_name, coeff = args.coeff, prompts = {}}
local before_all, after_all, labels = {}, {}, {}
for _, prompt in ipairs(tests) do
  local tokens = model:to_tokens(prompt)
  local lp0 = model(tokens)[{0, -1}]:log_softmax(-1)                                     -- [V]
  local lp1 = model:run_with_hooks(tokens, {fwd_hooks = hooks})[{0, -1}]:log_softmax(-1)
  local shift = lp1 - lp0
  local kl = (lp1:exp() * shift):sum():item()
  local function top(t, k)
    local vals, idx = t:topk(k)
    local out = {}
    for i = 0, k - 1 do
      local id = idx[i]:item()
      out[#out + 1] = {token = model.tokenizer:decode({id}), shift = vals[i]:item(),
                       before = lp0[id]:item(), after = lp1[id]:item()}
    end
    return out
  end
  local up, down = top(shift, 8), top(-shift, 8)
  for _, d in ipairs(down) do d.shift = -d.shift end
  print(("\n%q   KL(steered || plain) = %.3f nats"):format(prompt, kl))
  print("  gains:  " .. table.concat((function()
    local t = {}
    for _, u in ipairs(up) do t[#t + 1] = ("%q %+.2f"):format(u.token, u.shift) end
    return t
  end)(), ", "))
  print("  losses: " .. table.concat((function()
    local t = {}
    for _, u in ipairs(down) do t[#t + 1] = ("%q %+.2f"):format(u.token, u.shift) end
    return t
  end)(), ", "))
  local plain = model:generate(prompt, {max_new_tokens = args.tokens, do_sample = false})
  local steered = model:generate(prompt, {max_new_tokens = args.tokens, do_sample = false, fwd_hooks = hooks})
  print(("  plain:   %q"):format(plain))
  print(("  steered: %q"):format(steered))
  results.prompts[#results.prompts + 1] = {prompt = prompt, kl = kl, gains = up, losses = down,
                                           plain = plain, steered = steered}
  if #before_all == 0 then
    before_all, after_all = lp0:totable(), lp1:totable()
    for _, u in ipairs(up) do labels[#labels + 1] = u end
  end
end

-- log-probs of every next token of the first prompt, before against after
local text = {}
for i = 1, #before_all do text[i] = "" end
for _, u in ipairs(labels) do
  for i = 1, #before_all do
    if math.abs(before_all[i] - u.before) < 1e-6 and math.abs(after_all[i] - u.after) < 1e-6 then text[i] = u.token end
  end
end
results.figures = {
  scatter = mi.plot.scatter(before_all, after_all, {text = text,
    title = ("Next-token log p after %q, coeff %g"):format(tests[1], args.coeff),
    xlabel = "log p, plain", ylabel = "log p, steered", out = args.out .. "/steering_logprobs.png"}),
}
E.write_results(args.out, results)
print("\nfigures and results.json in " .. args.out)
