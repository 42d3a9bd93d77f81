-- miwb.json: file helpers over the C codec (lua/ljson.c provides mi.json.decode/encode/null).
--   mi.json.read(path)                 -> value, or nil + message when the file cannot be read;
--                                         invalid JSON raises, naming the file, line and column
--   mi.json.write(path, value [, opts]) -> true, or nil + message when the file cannot be written
--                                         (atomic: the old file stays whole on any failure);
--                                         values JSON cannot hold raise (as encode does)
local M = {}

function M._install(mi)
  local json = mi.json
  if not json then return end
  -- Lua's argument errors name a C function it cannot see called by name (pcall(mi.json.decode, t))
  -- by looking for it in package.loaded: "bad argument #1 to 'miwb.json.decode'"
  package.loaded["miwb.json"] = json

  function json.read(path)
    mi._check_name("json.read", "path", path)
    local text, err = mi.utils.read_file(path)
    if not text then return nil, err end
    local ok, v = pcall(json.decode, text)
    if not ok then
      error(path .. ": " .. tostring(v):gsub("^.-(json%.decode:)", "%1"), 2)
    end
    return v
  end

  local function write(path, value, opts)
    mi._check_name("json.write", "path", path)
    mi._check_opts("json.write", opts, {"indent"})
    local text = json.encode(value, opts) -- raises before the file is touched
    -- atomic: a temporary file renamed over path; a full disk gives nil + message, path unchanged
    return mi._write_file(path, text .. "\n")
  end
  -- encode's errors ("json.encode: cannot encode an infinity ...") at the user's line, named
  json.write = require("miwb.utils").name_errors(write, "json.write")
end

return M
