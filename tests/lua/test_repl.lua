-- test_repl.lua: the REPL's Lua side (lua/miwb/repl.lua) as plain functions: showing values,
-- completion of object methods, help(f), compiling input with top-level locals kept; and the
-- one dot-instead-of-colon error for model, cache, hook, tokenizer and FactoredMatrix methods.
local T = require("testlib")
local mi = require("miwb")
local R = mi.repl

local dir = "models/attn_only_2L"
local model = mi.from_pretrained_no_processing(dir)
local _, cache = model:run_with_cache("one two", {names_filter = "blocks.0.attn.hook_pattern"})

T.test("show: lists of strings as a list, tensors inside tables summarized, several values tab-separated", function()
  T.eq(R.show({"a", "b c"}), '{"a", "b c"}')
  T.eq(R.show({w = mi.zeros(2, 3), n = 1}), "{n = 1, w = tensor(shape=[2,3], float32)}")
  T.eq(R.show("str", nil, 2.5), "str\tnil\t2.5")
  T.eq(R.show(mi.ones(2)), "tensor([1., 1.], shape=[2])")
  T.truthy(mi.print == R.print and mi.pp == R.print, "mi.print and mi.pp are the REPL's printer")
end)

T.test("complete: model: and cache: methods, hook points' methods, private names hidden", function()
  local env = {model = model, cache = cache, mi = mi}
  local c = R.complete("model:to_s", env)
  T.eq(table.concat(c, " "), "model:to_single_token model:to_str_tokens model:to_string")
  c = R.complete("cache:remove", env)
  T.eq(table.concat(c, " "), "cache:remove_batch_dim")
  c = R.complete("model:_", env)
  T.truthy(#c > 0, "a '_' prefix shows private names")
  for _, s in ipairs(R.complete("model:", env)) do
    T.truthy(s:sub(7, 7) ~= "_", "private name offered: " .. s)
  end
  T.eq(table.concat(R.complete("mi.zer", env), " "), "mi.zeros mi.zeros_like")
  local tok = model.tokenizer
  T.eq(table.concat(R.complete("tok:vocab", {tok = tok}), " "), "tok:vocab_size")
  T.eq(table.concat(R.complete("h:la", {h = setmetatable({name = "x"}, mi.HookPoint)}), " "), "h:layer")
end)

T.test("help: signature and first doc line of Lua functions and methods", function()
  local h = R.help(mi.utils.get_act_name)
  T.truthy(h:find("mi.utils.get_act_name(name, layer, layer_type)", 1, true), h)
  T.truthy(h:find("full hook names from shorthands", 1, true), h)
  h = R.help(model.to_tokens)
  T.truthy(h:find("Model:to_tokens(input, opts)", 1, true), h)
  T.truthy(h:find("string -> int64 [1, P]", 1, true), h)
  h = R.help(mi.zeros)
  T.truthy(h:find("mi.zeros(...): built-in C function", 1, true) and h:find("mi.empty = ", 1, true), h)
  T.truthy(R.help(42):find("not a function", 1, true))
  T.truthy(R.help(model):find("methods: ", 1, true))
end)

T.test("globalize_locals: top-level locals become globals, nested ones and <close> stay", function()
  T.eq(R.globalize_locals("local y = 5"), "y = 5")
  T.eq(R.globalize_locals("local a, b = 1, 2; local c"), "a, b = 1, 2; c = nil")
  T.eq(R.globalize_locals("local function f(x) local z = x return z end"),
       "function f(x) local z = x return z end")
  T.eq(R.globalize_locals("for i = 1, 2 do local q = i end"), "for i = 1, 2 do local q = i end")
  T.eq(R.globalize_locals("local t <close> = x"), "local t <close> = x")
  T.eq(R.globalize_locals("s = 'local x = 1' -- local y\nlocal w = [[local]]"),
       "s = 'local x = 1' -- local y\nw = [[local]]")
  T.eq(R.globalize_locals("f(function() local k = 1 end); local m = 2"),
       "f(function() local k = 1 end); m = 2")
end)

T.test("compile: expressions return their values, locals persist, incomplete input is flagged", function()
  local env = {}
  assert(R.compile("local y = 5", "=t", env))()
  T.eq(assert(R.compile("y", "=t", env))(), 5)
  T.eq(assert(R.compile("=y * 2", "=t", env))(), 10)
  local f, msg, more = R.compile("for i = 1, 3 do", "=t", env)
  T.eq(f, nil)
  T.truthy(more, msg)
  f, msg, more = R.compile("x = = 1", "=t", env)
  T.eq(f, nil)
  T.truthy(not more and msg:find("unexpected symbol", 1, true), msg)
end)

T.test("a method called with a dot says to call it with a colon (model, cache, hook, tokenizer, FactoredMatrix)", function()
  T.raises(function() return model.to_str_tokens("hi") end,
           "model.to_str_tokens: call it with a colon: model:to_str_tokens(...)")
  T.raises(function() return cache.remove_batch_dim() end,
           "cache.remove_batch_dim: call it with a colon: cache:remove_batch_dim(...)")
  local hook = setmetatable({name = "blocks.1.attn.hook_pattern", ctx = {}}, mi.HookPoint)
  T.raises(function() return hook.layer() end, "hook.layer: call it with a colon: hook:layer(...)")
  T.eq(hook:layer(), 1)
  T.raises(function() return model.tokenizer.encode("hi") end,
           "tok.encode: call it with a colon: tok:encode(...)")
  local fm = mi.FactoredMatrix(mi.ones(3, 2), mi.ones(2, 3))
  T.raises(function() return fm.norm() end, "fm.norm: call it with a colon: fm:norm(...)")
  -- the colon forms still work
  T.eq(model:to_str_tokens("hi")[1], "<|endoftext|>")
  T.near(fm:norm():item(), 6, 1e-5)
end)

T.done()
