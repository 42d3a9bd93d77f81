-- mi.steering: steering vectors (activation addition).
--
--   local v = mi.steering.mean_difference(model, prompts_a, prompts_b, hook_name, pos)
--       [d]: mean over prompts_a of the activation at hook_name and position pos (default -1,
--       the last token of each prompt) minus the same over prompts_b. Prompts: a list of strings
--       (each run alone, so pos is that prompt's own position) or int64 tokens [B, P].
--   local hook = mi.steering.add(vector, coeff, opts)
--       a hook function adding coeff * vector ([d], coeff default 1) to the activation it is given,
--       at every position or at opts.pos (a position or a list of them)
--   model:run_with_hooks(tokens, {fwd_hooks = {{"blocks.1.hook_resid_pre", hook}}})
--   model:generate("The", {fwd_hooks = {{"blocks.1.hook_resid_pre", hook}}, max_new_tokens = 20})
--   local h <close> = model:hooks({{"blocks.1.hook_resid_pre", hook}})   -- for a whole scope
local M = {}

local mi

local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

function M.add(vector, coeff, opts)
  if not mi.is_tensor(vector) or vector:dim() ~= 1 then
    error("steering.add: vector must be a tensor [d_model], got " ..
          (mi.is_tensor(vector) and shape_str(vector) or type(vector)), 2)
  end
  if coeff == nil then coeff = 1 end
  if type(coeff) ~= "number" then error("steering.add: coeff must be a number, got " .. type(coeff), 2) end
  mi.utils.check_opts("steering.add", opts, {"pos"})
  local pos = opts and opts.pos
  if type(pos) == "number" then pos = {pos} end
  local delta = (vector:float() * coeff):contiguous()
  return function(act, hook)
    if act:size(-1) ~= delta:size(0) then
      error(string.format("steering.add: vector %s does not fit %s %s (last dim %d)", shape_str(delta),
                          hook and hook.name or "the activation", shape_str(act), act:size(-1)), 2)
    end
    if not pos then
      act:add_(delta)
    else
      local P = act:size(-2)
      for _, p in ipairs(pos) do
        local q = p < 0 and P + p or p
        if q >= 0 and q < P then
          local slot = act:select(-2, q)
          slot:add_(delta)
        end
      end
    end
  end
end

-- mean over prompts of the activation at `name`, position pos of each prompt -> [d]
local function mean_act(model, prompts, name, pos, what)
  local rows = {}
  local function take(tokens)
    local _, cache = model:run_with_cache(tokens, {names_filter = name, return_type = "none"})
    local a = cache[name]                                          -- [B, P, d]
    if a:dim() ~= 3 then
      error("steering.mean_difference: " .. name .. " is " .. shape_str(a) .. ", not a [batch, pos, d] stream", 4)
    end
    local P = a:size(1)
    local q = pos < 0 and P + pos or pos
    if q < 0 or q >= P then
      error(string.format("steering.mean_difference: pos %d is outside %s's %d positions", pos, what, P), 4)
    end
    rows[#rows + 1] = a:select(1, q)                               -- [B, d]
  end
  if mi.is_tensor(prompts) then
    if prompts:dtype() ~= "int64" or prompts:dim() ~= 2 then
      error("steering.mean_difference: " .. what .. " must be a list of strings or int64 tokens [batch, pos], got " ..
            prompts:dtype() .. " " .. shape_str(prompts), 3)
    end
    take(prompts)
  elseif type(prompts) == "table" and #prompts > 0 then
    for i, s in ipairs(prompts) do
      if type(s) ~= "string" then
        error("steering.mean_difference: " .. what .. "[" .. i .. "] is a " .. type(s) .. ", not a string", 3)
      end
      take(model:to_tokens(s))
    end
  else
    error("steering.mean_difference: " .. what .. " must be a non-empty list of strings or int64 tokens [batch, pos]", 3)
  end
  return mi.cat(rows, 0):mean(0)
end

function M.mean_difference(model, prompts_a, prompts_b, hook_name, pos)
  if type(model) ~= "table" or not model.cfg then
    error("steering.mean_difference: the first argument must be a HookedTransformer", 2)
  end
  if type(hook_name) ~= "string" then
    error("steering.mean_difference: hook_name must be a hook name such as 'blocks.1.hook_resid_pre', got " ..
          type(hook_name), 2)
  end
  local name = mi.utils.get_act_name(hook_name)
  if not model._has[name] then
    error("steering.mean_difference: '" .. name .. "' is not a hook point of this model", 2)
  end
  pos = pos or -1
  if math.type(pos) ~= "integer" then error("steering.mean_difference: pos must be an integer, got " .. tostring(pos), 2) end
  return mean_act(model, prompts_a, name, pos, "prompts_a") - mean_act(model, prompts_b, name, pos, "prompts_b")
end

function M._install(m)
  mi = m
end

return M
