-- mi.utils: TransformerLens's utils that scripts reach for (transformer_lens/utils.py).
--
--   utils.get_act_name(name, layer, layer_type)   full hook names from shorthands
--       ("pattern", 0) -> "blocks.0.attn.hook_pattern"; ("embed") -> "hook_embed";
--       ("scale", 4, "ln1") -> "blocks.4.ln1.hook_scale"; ("scale") -> "ln_final.hook_scale";
--       aliases attn -> pattern, attn_logits -> attn_scores, key/query/value -> k/q/v,
--       mlp_pre/mlp_post -> pre/post; compact forms "k6", "pre5", "scale4ln1" (letters, then the
--       layer; "resid_pre3" is not one: it gives "hook_resid_pre3", as in TransformerLens).
--       A name that already holds a "." or starts with "hook_" is returned as it is.
--   utils.lm_cross_entropy_loss(logits, tokens, attention_mask, per_token)
--   utils.get_attention_mask(lengths, P, padding_side)   [B, P] int64 from token counts
--   utils.is_square(x), utils.is_lower_triangular(x)   2-D square (and equal to its tril)
--   utils.calc_fan_in_and_fan_out(t)   TransformerLens's convention: [n] -> 1, n; [in, out];
--       [n_heads, d_model, d_head] -> d_model, n_heads * d_head
--   utils.init_xavier_uniform_(p, gain), init_xavier_normal_(p, gain),
--   utils.init_kaiming_uniform_(p, a, nonlinearity, gain, mode), init_kaiming_normal_(...)
--       fill p in place (and return it) as TransformerLens does; every argument also by name,
--       with {generator = G} or {seed = S} for the random numbers
--   utils.check_opts(fname, opts, allowed)   the one options-table check of the API: raises
--       "fname: unknown option 'sed' (options: dtype, seed)" for a key not in allowed (a list
--       of names or a set {name = true}); nil passes; returns opts
--   utils.write_file(path, data)   atomic (temporary file + rename); true, or nil + message naming
--       the step that failed (a full disk included); path unchanged then
--   utils.mkdir_p(path)   mkdir -p without a shell; true, or nil + message
--   utils.file_exists(path)   whether path names an existing file or directory
--   utils.read_file(path)   the whole file, or nil + message
--   utils.check_name(fname, what, s)   raises "fname: what holds a zero byte" for a path or name
--       with a NUL (C and the OS would see it cut); returns s
--   utils.shell_quote(s)   s as one POSIX shell word ('...'), for the few commands that need a shell
--   utils.sample_logits(final_logits [B,V], {top_k, top_p, temperature, freq_penalty, tokens, seed})
--       TransformerLens's sampler -> int64 [B] (set by model.lua: generate's C sampler)
local U = {}

local mi

-- x must be a tensor (of `dims` dims and dtype when given), else "fname: expected a tensor as
-- what, got number" raised at the caller of the function that asks (level 3)
local function want_tensor(fname, what, x, dims, dtype)
  local bad
  if not mi.is_tensor(x) then bad = "expected a tensor as " .. what .. ", got " .. U.typename(x)
  elseif dims and x:dim() ~= dims then
    bad = ("%s must have %d dims, got shape [%s]"):format(what, dims, table.concat(x:shape(), ","))
  elseif dtype and x:dtype() ~= dtype then bad = ("%s must be %s, got %s"):format(what, dtype, x:dtype())
  end
  if bad then error(fname .. ": " .. bad, 3) end
end

local layer_type_alias = {a = "attn", m = "mlp", b = "", block = "", blocks = "", attention = "attn"}
local act_name_alias = {attn = "pattern", attn_logits = "attn_scores", key = "k", query = "q", value = "v",
                        mlp_pre = "pre", mlp_mid = "mid", mlp_post = "post"}
local attn_names = {k = true, v = true, q = true, z = true, rot_k = true, rot_q = true, result = true,
                    pattern = true, attn_scores = true}
local mlp_names = {pre = true, post = true, mid = true, pre_linear = true}

function U.get_act_name(name, layer, layer_type)
  if type(name) ~= "string" then error("get_act_name: name must be a string, got " .. type(name), 2) end
  if (name:find(".", 1, true) or name:sub(1, 5) == "hook_") and layer == nil and layer_type == nil then
    return name
  end
  -- compact forms: letters, digits, optional letters ("k6", "scale4ln1")
  -- TransformerLens's compact form: letters, digits, the rest ("k6", "scale4ln1"); no underscore
  -- before the digits, so "resid_pre3" stays a name of its own ("hook_resid_pre3")
  local base, num, rest = name:match("^([a-z]+)(%d+)(.*)$")
  if base then
    name, layer = base, math.tointeger(tonumber(num))
    layer_type = rest
  end
  name = act_name_alias[name] or name
  if layer_type ~= nil and type(layer_type) ~= "string" then
    error("get_act_name: layer_type must be a string, got " .. U.typename(layer_type), 2)
  end
  local full = ""
  if layer ~= nil then
    if math.type(layer) ~= "integer" then
      if type(layer) == "number" and layer == math.floor(layer) then layer = math.tointeger(layer)
      else error("get_act_name: layer must be an integer, got " .. tostring(layer), 2) end
    end
    full = "blocks." .. layer .. "."
  end
  if attn_names[name] then layer_type = "attn"
  elseif mlp_names[name] then layer_type = "mlp"
  elseif layer_type ~= nil and layer_type_alias[layer_type] then layer_type = layer_type_alias[layer_type] end
  if layer_type and layer_type ~= "" then full = full .. layer_type .. "." end
  full = full .. "hook_" .. name
  if (name == "scale" or name == "normalized") and layer == nil then full = "ln_final." .. full end
  return full
end

-- mean (or per-token) next-token cross-entropy of logits [B, P, V] against tokens [B, P]; with
-- an attention mask, predictions whose position or next position is padding count 0 and are
-- left out of the mean (TransformerLens's lm_cross_entropy_loss)
function U.lm_cross_entropy_loss(logits, tokens, attention_mask, per_token)
  local fname = "lm_cross_entropy_loss"
  want_tensor(fname, "logits", logits, 3)
  want_tensor(fname, "tokens", tokens, 2, "int64")
  if attention_mask ~= nil then want_tensor(fname, "attention_mask", attention_mask, 2) end
  local P = logits:size(1)
  local lp = logits:narrow(1, 0, P - 1):log_softmax(-1)
  local tgt = tokens:narrow(1, 1, P - 1):unsqueeze(-1)
  local nll = -(lp:gather(-1, tgt):squeeze(-1))
  if attention_mask then
    local m = attention_mask:narrow(1, 0, P - 1):float() * attention_mask:narrow(1, 1, P - 1):float()
    nll = nll * m
    if per_token then return nll end
    return nll:sum() / m:sum()
  end
  if per_token then return nll end
  return nll:mean()
end

-- [B, P] int64 mask with lengths[b] ones on the right (padding_side "left") or the left
-- ("right", the default)
function U.get_attention_mask(lengths, P, padding_side)
  if type(lengths) ~= "table" or mi.is_tensor(lengths) then
    error("get_attention_mask: lengths must be a list of integers, got " .. U.typename(lengths), 2)
  end
  if math.type(P) ~= "integer" or P < 0 then
    error("get_attention_mask: P (the number of positions) must be a non-negative integer, got " .. tostring(P), 2)
  end
  if padding_side ~= nil and padding_side ~= "left" and padding_side ~= "right" then
    error("get_attention_mask: padding_side must be 'left' or 'right', got " .. tostring(padding_side), 2)
  end
  for b, n in ipairs(lengths) do
    if math.type(n) ~= "integer" or n < 0 or n > P then
      error(("get_attention_mask: lengths[%d] must be an integer in [0, %d], got %s"):format(b, P, tostring(n)), 2)
    end
  end
  local rows = {}
  for b, n in ipairs(lengths) do
    local r = {}
    for p = 1, P do
      if padding_side == "left" then r[p] = (p > P - n) and 1 or 0 else r[p] = (p <= n) and 1 or 0 end
    end
    rows[b] = r
  end
  return mi.tensor(rows, "int64")
end

-- TransformerLens's Slice (the pos_slice / batch_slice argument of the cache helpers):
--   utils.Slice(nil)                      everything (identity)
--   utils.Slice(i)                        one index: apply selects it, so the dim goes (as TL's int)
--   utils.Slice({start, stop, step})      a range, 0-based, half-open, negatives from the end; also
--                                         named {start = , stop = , step = } (a lone {a} raises: Python
--                                         reads it as a stop, miwb's indexing as a start)
--   utils.Slice(int64 tensor) or utils.Slice({indices = {0, 2, 5}})   these indices, in order
--   s:apply(t, dim)                       t sliced along dim (default 0)
--   s:indices(max_ctx)                    int64 tensor of the indices it takes out of max_ctx
--   utils.Slice.unwrap(x)                 a Slice, with an integer kept as a one-index list (the dim stays)
local SliceMT = {__name = "miwb.Slice"}
SliceMT.__index = SliceMT

local function is_slice(x) return getmetatable(x) == SliceMT end

local function make_slice(x)
  if is_slice(x) then return x end
  if x == nil then return setmetatable({mode = "identity"}, SliceMT) end
  if math.type(x) == "integer" then return setmetatable({mode = "int", index = x}, SliceMT) end
  if type(x) == "number" and x == math.floor(x) then
    return setmetatable({mode = "int", index = math.tointeger(x)}, SliceMT)
  end
  if mi.is_tensor(x) then
    if x:dtype() ~= "int64" then error("Slice: an index tensor must be int64, got " .. x:dtype(), 3) end
    if x:dim() == 0 then return setmetatable({mode = "int", index = x:item()}, SliceMT) end
    return setmetatable({mode = "array", index = x:reshape(-1)}, SliceMT)
  end
  if type(x) == "table" and getmetatable(x) == nil then
    if x.indices ~= nil then
      for k in pairs(x) do
        if k ~= "indices" then error("Slice: {indices = ...} takes no other key, got '" .. tostring(k) .. "'", 3) end
      end
      local idx = x.indices
      if type(idx) == "table" then idx = mi.tensor(idx, "int64") end
      return make_slice(idx)
    end
    if #x == 1 and x.start == nil and x.stop == nil then
      -- Python's slice(a) stops at a, miwb's {a} starts there: say which
      error("Slice: {" .. tostring(x[1]) .. "} is ambiguous: write {start = " .. tostring(x[1]) ..
            "} or {stop = " .. tostring(x[1]) .. "} (or {indices = {" .. tostring(x[1]) .. "}})", 3)
    end
    local start, stop, step = x.start, x.stop, x.step
    for k, v in pairs(x) do
      if k == 1 then start = v elseif k == 2 then stop = v elseif k == 3 then step = v
      elseif k ~= "start" and k ~= "stop" and k ~= "step" then
        error("Slice: a range is {start, stop, step} or {start = , stop = , step = }, got key '" .. tostring(k) ..
              "'; an index list is {indices = {...}} or an int64 tensor", 3)
      end
    end
    for name, v in pairs({start = start, stop = stop, step = step}) do
      if v ~= nil and math.type(v) ~= "integer" then error("Slice: " .. name .. " must be an integer, got " .. tostring(v), 3) end
    end
    if step ~= nil and step < 1 then error("Slice: step must be positive, got " .. step, 3) end
    return setmetatable({mode = "slice", start = start, stop = stop, step = step}, SliceMT)
  end
  error("Slice: expected nil, an integer, {start, stop, step}, {indices = ...} or an int64 tensor, got " .. type(x), 3)
end

function SliceMT:apply(t, dim)
  dim = dim or 0
  local nd = t:dim()
  if dim < 0 then dim = dim + nd end
  if self.mode == "identity" then return t end
  if self.mode == "int" then return t:select(dim, self.index) end
  if self.mode == "array" then return t:index_select(dim, self.index) end
  local key = {}
  for d = 1, dim do key[d] = {} end
  local n = t:size(dim)
  key[dim + 1] = {self.start or 0, self.stop or n, self.step or 1}
  return t[key]
end

function SliceMT:indices(max_ctx)
  if self.mode == "int" then return mi.tensor(self.index, "int64") end
  if max_ctx == nil then error("Slice:indices: max_ctx is needed unless the slice is one integer", 2) end
  return self:apply(mi.arange(max_ctx), 0)
end

function SliceMT:__tostring()
  if self.mode == "identity" then return "Slice(all)" end
  if self.mode == "int" then return "Slice(" .. self.index .. ")" end
  if self.mode == "array" then return "Slice(indices " .. tostring(#self.index) .. ")" end
  return ("Slice(%s:%s:%s)"):format(self.start or "", self.stop or "", self.step or 1)
end

U.Slice = setmetatable({
  unwrap = function(x)
    if math.type(x) == "integer" then return make_slice({indices = {x}}) end
    return make_slice(x)
  end,
  is_slice = is_slice,
}, {__call = function(_, x) return make_slice(x) end})

-- TransformerLens's override_or_use_default_value(default_flag, override): override unless nil
function U.override_or_use_default_value(default_flag, override)
  if override ~= nil then return override end
  return default_flag
end

-- Python's repr of a str ('it', "it's"), for output printed as TransformerLens prints it
local function py_repr(str)
  local q = (str:find("'", 1, true) and not str:find('"', 1, true)) and '"' or "'"
  local out = str:gsub("[%c\\" .. q .. "]", function(c)
    if c == "\\" then return "\\\\" end
    if c == q then return "\\" .. q end
    if c == "\n" then return "\\n" elseif c == "\t" then return "\\t" elseif c == "\r" then return "\\r" end
    return ("\\x%02x"):format(c:byte())
  end)
  return q .. out .. q
end

local function py_list(t, f)
  local parts = {}
  for i, v in ipairs(t) do parts[i] = (f or py_repr)(v) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

-- TransformerLens's test_prompt(prompt, answer, model, prepend_space_to_answer = true,
-- print_details = true, prepend_bos = default, top_k = 10), the options also as one table: prints
-- the tokenized prompt and answer, the answer token's rank, logit and probability, the top_k
-- tokens, and the ranks, as TransformerLens prints them. answer may be a list of one-token
-- answers. Returns the ranks ({{token, rank}, ...} per answer position).
function U.test_prompt(prompt, answer, model, ...)
  if type(prompt) ~= "string" then error("test_prompt: prompt must be a string, got " .. U.typename(prompt), 2) end
  local answer_ok = type(answer) == "string" or (type(answer) == "table" and #answer > 0 and not getmetatable(answer))
  for _, a in ipairs(type(answer) == "table" and answer or {}) do answer_ok = answer_ok and type(a) == "string" end
  if not answer_ok then
    error("test_prompt: answer must be a string or a list of strings, got " .. U.typename(answer), 2)
  end
  if U.typename(model) ~= "miwb.HookedTransformer" then
    error("test_prompt: expected a HookedTransformer as model, got " .. U.typename(model), 2)
  end
  local names = {"prepend_space_to_answer", "print_details", "prepend_bos", "top_k"}
  local space, details, prepend_bos, top_k
  local first = ...
  if type(first) == "table" and select("#", ...) == 1 then
    U.check_opts("test_prompt", first, names)
    space, details, prepend_bos, top_k = first.prepend_space_to_answer, first.print_details, first.prepend_bos,
                                         first.top_k
  else
    space, details, prepend_bos, top_k = ...
  end
  if space == nil then space = true end
  if details == nil then details = true end
  top_k = top_k or 10
  local answers = type(answer) == "table" and table.move(answer, 1, #answer, 1, {}) or {answer}   -- a copy: the spaces added below stay ours
  local n_answers, multiple = #answers, #answers > 1
  if space then
    for i, a in ipairs(answers) do if a:sub(1, 1) ~= " " then answers[i] = " " .. a end end
  end
  local function out(...) io.stdout:write(...) end
  local prompt_tokens = model:to_tokens(prompt, {prepend_bos = prepend_bos})           -- [1, P]
  local prompt_str = model:to_str_tokens(prompt, {prepend_bos = prepend_bos})
  local answer_strs = {}
  for i, a in ipairs(answers) do answer_strs[i] = model:to_str_tokens(a, {prepend_bos = false}) end
  local answer_len = multiple and 1 or #answer_strs[1]
  local rows = {}
  for i, a in ipairs(answers) do
    local ids = model:to_tokens(a, {prepend_bos = false})[0]:narrow(0, 0, answer_len)
    rows[i] = mi.cat({prompt_tokens[0], ids}, 0)
  end
  local tokens = mi.stack(rows, 0)                                                   -- [n, P + A]
  local P = #prompt_str
  if details then
    out("Tokenized prompt: ", py_list(prompt_str), "\n")
    if multiple then out("Tokenized answers: ", py_list(answer_strs, py_list), "\n")
    else out("Tokenized answer: ", py_list(answer_strs[1]), "\n") end
  end
  local logits = model(tokens)
  local probs = logits:softmax(-1)
  local ranks = {}
  for index = P, P + answer_len - 1 do
    local here = {}
    local lines = {}
    local sorted_probs, sorted_ids
    for i = 1, n_answers do
      local tok = tokens[{i - 1, index}]:item()
      local p = probs[{i - 1, index - 1}]
      local sp, si = p:sort(-1, true)
      if i == 1 then sorted_probs, sorted_ids = sp, si end
      local rank = si:eq(tok):to("int64"):argmax():item()
      here[i] = {answer_strs[i][index - P + 1], rank}
      lines[i] = ("Rank: %-8d Logit: %5.2f Prob: %6s Token: |%s|"):format(rank, logits[{i - 1, index - 1, tok}]:item(),
        ("%.2f%%"):format(100 * p[tok]:item()), answer_strs[i][index - P + 1])
    end
    ranks[#ranks + 1] = here
    if details then
      out("Performance on answer token", n_answers > 1 and "s" or "", ":\n", table.concat(lines, "\n"), "\n")
      for k = 0, math.min(top_k, sorted_ids:size(0)) - 1 do
        local id = sorted_ids[k]:item()
        out(("Top %dth token. Logit: %5.2f Prob: %6s Token: |%s|\n"):format(k, logits[{0, index - 1, id}]:item(),
          ("%.2f%%"):format(100 * sorted_probs[k]:item()), model:to_string(id)))
      end
    end
  end
  local function pair(r) return "(" .. py_repr(r[1]) .. ", " .. r[2] .. ")" end
  if not multiple then
    local single = {}
    for i, r in ipairs(ranks) do single[i] = r[1] end
    out("Ranks of the answer tokens: ", py_list(single, pair), "\n")
  else
    out("Ranks of the answer tokens: ", py_list(ranks, function(r) return py_list(r, pair) end), "\n")
  end
  return ranks
end

-- TransformerLens's logging.warning: utils.warn(msg) hands msg to utils.warn_handler, which
-- prints "miwb warning: msg" on stderr; set mi.utils.warn_handler to a function (or false, to
-- drop warnings) to change that.
function U.warn_handler(msg)
  io.stderr:write("miwb warning: ", tostring(msg), "\n")
end

function U.warn(msg)
  if U.warn_handler then U.warn_handler(msg) end
end

-- Errors name the function the user called. U.name_errors(f, call, check) returns a function
-- that runs f and re-raises its errors as errors of `call` (how the docs write the call:
-- "model:run_with_cache", "mi.analysis.induction_scores", "argsort"), at the caller's line:
--   - an error from the user's own code (a hook, a metric: a position outside lua/miwb/) passes
--     through unchanged;
--   - a message that names the call, maybe by a shorter name ("run_with_cache: ...",
--     "analysis.induction_scores: ..."), gets the call's full name;
--   - any other message (an inner function's "forward: empty input", or a bare "expected a
--     HookedTransformer as model, got nil" raised with level 0) gets "call: " in front;
--   - a Lua runtime error inside miwb ("attempt to index a nil value") also keeps its original
--     position and the traceback of where it happened.
-- check(...), when given, runs first on the arguments and returns a message to raise at the
-- caller as it is (the colon check below), or nil. The method tables of model, cache, hook point,
-- tokenizer and FactoredMatrix (colon_methods below), the Lua-written tensor functions
-- (tensor.lua) and mi.analysis are wrapped this way.
-- colon_target(w) returns the function a wrapper calls (help(w) reads its source).
local colon_target = setmetatable({}, {__mode = "k"})

-- what a value is, for messages: "nil", "number", "string", "tensor", "miwb.ActivationCache", ...
function U.typename(v)
  local mt = getmetatable(v)
  local n = type(mt) == "table" and rawget(mt, "__name")
  if n == "miwb.Tensor" then return "tensor" end
  return type(n) == "string" and n or type(v)
end

-- the error handler of a wrapped function: a Lua runtime error raised inside miwb gets the
-- traceback of where it happened (the wrapper's caller only sees its own frames)
local NAMED = "^[%w_%.:%[%]'\"]+: "   -- a message written for a user names what failed ("matmul: ...")
local function is_library_pos(pos) return pos ~= nil and pos:find("miwb/[%w_]+%.lua:%d+$") ~= nil end
local function keep_traceback(e)
  if type(e) ~= "string" then return e end
  local pos, rest = e:match("^([^\n]-:%d+): (.*)$")
  if is_library_pos(pos) and not rest:find(NAMED) then
    return e .. "\n(an unexpected error inside miwb; where it happened:" ..
           debug.traceback("", 2):gsub("^\n?stack traceback:", "") .. ")"
  end
  return e
end

-- whether `head` (the name a message starts with) is `call` spelt shorter ("run_with_cache" of
-- "model:run_with_cache", "analysis.detect_head" of "mi.analysis.detect_head"): 2, or spelt
-- otherwise with the same last part (the tokenizer's own "tokenizer:encode" of "tok:encode"): 1
local function names_call(head, call)
  local sep = call:sub(-#head - 1, -#head - 1)
  if head == call or (#head < #call and call:sub(-#head) == head and (sep == "." or sep == ":")) then return 2 end
  return head:match("[^.:]+$") == call:match("[^.:]+$") and 1 or nil
end

-- e raised inside `call` as the caller sees it; where = the caller's "file:line: " (or "")
local function call_error(e, call, where)
  if type(e) ~= "string" then return e end
  local pos, rest = e:match("^([^\n]-:%d+): (.*)$")
  local lib = is_library_pos(pos)
  if pos and not lib then return e end          -- the user's own error (a hook, a metric)
  if not pos then rest = e end
  -- a C function's argument error where Lua could not see its name ("bad argument #2 to '?'"):
  -- the call names it; a method's self is not counted, as Lua counts for x:f(...)
  local n, detail = rest:match("^bad argument #(%d+) to '%?' (%(.*)$")
  if n then
    n = tonumber(n) - (call:find(":", 1, true) and 1 or 0)
    return where .. call .. ": " .. (n >= 1 and ("bad argument #%d "):format(n) or "bad self ") .. detail
  end
  local head, tail = rest:match("^([%w_%.:]+): (.*)$")
  local named = head and names_call(head, call)
  if named == 2 then return where .. call .. ": " .. tail end
  -- a core message behind its subsystem's name ("train: induction: ..." of trainer:induction)
  local head2, tail2 = (tail or ""):match("^([%w_]+): (.*)$")
  if not named and head2 and names_call(head2, call) == 2 then return where .. call .. ": " .. tail2 end
  if named == 1 then return where .. rest end
  -- an inner function's message ("forward: empty input"), or an internal error with its position
  return where .. call .. ": " .. ((lib and not rest:find(NAMED)) and e or rest)
end

function U.name_errors(f, call, check)
  local function finish(ok, ...)
    if ok then return ... end
    local info = debug.getinfo(2, "Sl")   -- finish runs as a tail call: 2 is the caller
    local where = info and info.currentline > 0 and (info.short_src .. ":" .. info.currentline .. ": ") or ""
    error(call_error((...), call, where), 0)
  end
  local w
  if check then
    w = function(...)
      local msg = check(...)
      if msg then error(msg, 2) end
      return finish(xpcall(f, keep_traceback, ...))
    end
  else
    w = function(...) return finish(xpcall(f, keep_traceback, ...)) end
  end
  colon_target[w] = f
  return w
end

-- A module table's public functions (names not starting with "_") wrapped by name_errors as
-- prefix .. name ("mi.analysis."): a new table (other fields copied), so that the module's own
-- calls between its functions stay unwrapped.
function U.name_errors_table(t, prefix)
  local out = {}
  for k, v in pairs(t) do
    if type(v) == "function" and type(k) == "string" and k:sub(1, 1) ~= "_" then
      out[k] = U.name_errors(v, prefix .. k)
    else
      out[k] = v
    end
  end
  return out
end

-- Methods called with a dot (model.to_str_tokens(t), hook.layer(), cache.remove_batch_dim())
-- get `self` wrong; Lua would fail later with a confusing message. colon_methods wraps every
-- function of the table `methods` (in place; names starting with "__" are left alone) with
-- name_errors as var:name, with a check that a call whose first argument is not an object of
-- the class raises
--   "model.to_str_tokens: call it with a colon: model:to_str_tokens(...)"
-- (var is how the docs call such an object). is_instance(x) says whether x is one. The library's
-- own `_helpers` only get the colon check.
function U.colon_methods(methods, is_instance, var)
  for name, f in pairs(methods) do
    if type(f) == "function" and type(name) == "string" and name:sub(1, 2) ~= "__" and not colon_target[f] then
      local function check(self)
        if not is_instance(self) then
          return string.format("%s.%s: call it with a colon: %s:%s(...)", var, name, var, name)
        end
      end
      local method
      if name:sub(1, 1) == "_" then
        method = function(self, ...)
          local msg = check(self)
          if msg then error(msg, 2) end
          return f(self, ...)
        end
        colon_target[method] = f
      else
        method = U.name_errors(f, var .. ":" .. name, check)
      end
      methods[name] = method
    end
  end
  return methods
end

function U.colon_target(f) return colon_target[f] end

-- ------------------------------------------------------------------ tensor utils

function U.is_square(x)
  want_tensor("is_square", "x", x)
  return x:dim() == 2 and x:size(0) == x:size(1)
end

function U.is_lower_triangular(x)
  want_tensor("is_lower_triangular", "x", x)
  return U.is_square(x) and x:equal(x:tril())
end

-- TransformerLens's fans; fname names the function the user called, level where to raise
local function fans(fname, t, level)
  local s = t:shape()
  if #s == 1 then return 1, s[1] end
  if #s == 2 then return s[1], s[2] end
  if #s == 3 then return s[2], s[1] * s[3] end
  error(("%s: defined for 1, 2 or 3 dims, got shape [%s]"):format(fname, table.concat(s, ",")), level + 1)
end

function U.calc_fan_in_and_fan_out(t)
  want_tensor("calc_fan_in_and_fan_out", "tensor", t)
  return fans("calc_fan_in_and_fan_out", t, 2)
end

-- torch.nn.init.calculate_gain, which TransformerLens's kaiming inits use
local function calculate_gain(fname, nonlinearity, a)
  local unit = {linear = true, conv1d = true, conv2d = true, conv3d = true, conv_transpose1d = true,
                conv_transpose2d = true, conv_transpose3d = true, sigmoid = true}
  if unit[nonlinearity] then return 1 end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "leaky_relu" then return math.sqrt(2 / (1 + a * a)) end
  if nonlinearity == "selu" then return 3 / 4 end
  error(("%s: unsupported nonlinearity '%s' (linear, conv1d.., sigmoid, tanh, relu, leaky_relu, selu)")
        :format(fname, tostring(nonlinearity)), 3)
end

-- p filled in place with U(-bound, bound) or N(0, std^2) numbers from the generator or seed
local function fill_uniform(p, bound, generator, seed)
  return p:copy_(mi.rand(p:shape(), {generator = generator, seed = seed}) * (2 * bound) - bound)
end
local function fill_normal(p, std, generator, seed)
  return p:copy_(mi.randn(p:shape(), {generator = generator, seed = seed}) * std)
end

-- gain (and a) must be numbers, checked at the caller of the init function (level 3: init_* tail-calls)
local function want_number(fname, what, x)
  if type(x) ~= "number" then error(("%s: %s must be a number, got %s"):format(fname, what, U.typename(x)), 3) end
  return x
end

local function kaiming(fname, fill, scale, p, ...)
  want_tensor(fname, "tensor", p)
  local a, nonlinearity, gain, mode, generator, seed =
    mi._kwargs(fname, {"a", "nonlinearity", "gain", "mode", "generator", "seed"}, ...)
  a, nonlinearity, gain, mode = a or 0, nonlinearity or "relu", gain or 1, mode or "fan_in"
  want_number(fname, "a", a); want_number(fname, "gain", gain)
  if mode ~= "fan_in" and mode ~= "fan_out" then
    error(("%s: mode must be 'fan_in' or 'fan_out', got %s"):format(fname, tostring(mode)), 3)
  end
  local fan_in, fan_out = fans(fname, p, 2)
  gain = gain * calculate_gain(fname, nonlinearity, a)
  return fill(p, gain * math.sqrt(scale / (mode == "fan_in" and fan_in or fan_out)), generator, seed)
end

local function xavier(fname, fill, scale, p, ...)
  want_tensor(fname, "tensor", p)
  local gain, generator, seed = mi._kwargs(fname, {"gain", "generator", "seed"}, ...)
  want_number(fname, "gain", gain or 1)
  local fan_in, fan_out = fans(fname, p, 2)
  return fill(p, (gain or 1) * math.sqrt(scale / (fan_in + fan_out)), generator, seed)
end

-- uniform bounds are sqrt(3) standard deviations
function U.init_xavier_uniform_(p, ...) return xavier("init_xavier_uniform_", fill_uniform, 6, p, ...) end
function U.init_xavier_normal_(p, ...) return xavier("init_xavier_normal_", fill_normal, 2, p, ...) end
function U.init_kaiming_uniform_(p, ...) return kaiming("init_kaiming_uniform_", fill_uniform, 3, p, ...) end
function U.init_kaiming_normal_(p, ...) return kaiming("init_kaiming_normal_", fill_normal, 1, p, ...) end
-- their errors at the user's line, also those of the tensor code they run (rand: out of memory)
for _, name in ipairs({"init_xavier_uniform_", "init_xavier_normal_", "init_kaiming_uniform_", "init_kaiming_normal_"}) do
  U[name] = U.name_errors(U[name], name)
end

-- the whole file at path (bytes as they are), or nil + the system's message
function U.read_file(path)
  U.check_name("read_file", "path", path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s, rerr = f:read("a")
  f:close()
  if not s then return nil, path .. ": " .. tostring(rerr) end
  return s
end

-- The one quoting function for the few commands that need a shell (gnuplot, curl, a viewer):
-- s as one POSIX shell word. Inside '...' nothing is special but ' itself, written '\''.
-- A zero byte would cut the command short, so it is refused.
function U.shell_quote(s)
  s = tostring(s)
  if s:find("\0", 1, true) then error("shell_quote: string holds a zero byte", 2) end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function U._install(m)
  mi = m
  U.check_opts = m._check_opts -- written in C (lua/ltensor.c), shared with the C bindings
  -- files without a shell, written in C (lua/lio.c): see the top of this file
  U.check_name, U.write_file, U.file_exists = m._check_name, m._write_file, m._file_exists
  U.mkdir_p = m.sys.mkdir -- lua/lsys.c
  -- the tokenizer's and the trainer's methods are C functions in their metatable's __index table
  for class, var in pairs({["miwb.Tokenizer"] = "tok", ["miwb.Trainer"] = "trainer"}) do
    local mt = debug.getregistry()[class]
    if type(mt) == "table" and type(mt.__index) == "table" then
      U.colon_methods(mt.__index, function(x) return getmetatable(x) == mt end, var)
    end
  end
  -- the dataset's: in its metatable's methods table (its __index, in C, also serves n, vocab, eot)
  local ds = debug.getregistry()["miwb.Dataset"]
  if type(ds) == "table" and type(ds.methods) == "table" then
    U.colon_methods(ds.methods, function(x) return getmetatable(x) == ds end, "ds")
  end
end

return U
