-- miwb.json: file helpers over the C codec (lua/ljson.c provides mi.json.decode/encode/null).
--   mi.json.read(path)                 -> value, or nil + message when the file cannot be read;
--                                         invalid JSON raises, naming the file, line and column
--   mi.json.write(path, value [, opts]) -> true, or nil + message when the file cannot be written;
--                                         values JSON cannot hold raise (as encode does)
local M = {}

function M._install(mi)
  local json = mi.json
  if not json then return end

  function json.read(path)
    local f, err = io.open(path, "rb")
    if not f then return nil, err end
    local text = f:read("a")
    f:close()
    local ok, v = pcall(json.decode, text)
    if not ok then
      error(path .. ": " .. tostring(v):gsub("^.-(json%.decode:)", "%1"), 2)
    end
    return v
  end

  function json.write(path, value, opts)
    local text = json.encode(value, opts) -- raises before the file is touched
    local f, err = io.open(path, "wb")
    if not f then return nil, err end
    local ok, werr = f:write(text, "\n")
    f:close()
    if not ok then return nil, werr end
    return true
  end
end

return M
