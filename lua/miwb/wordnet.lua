-- miwb.wordnet: synonyms from the WordNet database files (Debian's wordnet-base), read directly.
--
-- A data file (data.noun, data.verb, data.adj, data.adv) holds one synset per line:
--   offset lex_filenum ss_type w_cnt(2 hex digits) word lex_id(1 hex digit) [word lex_id ...]
--   p_cnt [pointers ...] [frames ...] | gloss
-- Lines that begin with a space are the licence header. Words that share a synset are
-- synonyms in one sense. Multi-word lemmas are joined with '_'; adjectives may carry a
-- syntactic marker such as "(a)", "(p)" or "(ip)", removed here.
local M = {}

local POS_FILES = {noun = "data.noun", verb = "data.verb", adj = "data.adj", adv = "data.adv"}
M.POS = {"noun", "verb", "adj", "adv"}

-- The folder holding the database: $WNSEARCHDIR, $WNHOME/dict, or Debian's /usr/share/wordnet.
function M.find_dir()
  local candidates = {os.getenv("WNSEARCHDIR"),
                      os.getenv("WNHOME") and (os.getenv("WNHOME") .. "/dict"),
                      "/usr/share/wordnet"}
  for _, dir in pairs(candidates) do
    local f = dir and io.open(dir .. "/data.noun", "r")
    if f then f:close(); return dir end
  end
  return nil, "wordnet: database not found (install Debian's wordnet-base, or set WNSEARCHDIR)"
end

-- Parses one data-file line into {offset=, pos=, words={...}} or nil for header lines.
-- Errors name the file and line number for malformed lines.
function M.parse_line(line, where)
  if line:sub(1, 1) == " " or line == "" then return nil end
  local fields = {}
  for f in line:gmatch("%S+") do
    if f == "|" then break end
    fields[#fields + 1] = f
  end
  local offset, ss_type, w_cnt_hex = fields[1], fields[3], fields[4]
  local w_cnt = w_cnt_hex and tonumber(w_cnt_hex, 16)
  if not (offset and offset:match("^%d+$") and ss_type and w_cnt and #fields >= 4 + 2 * w_cnt) then
    error(("wordnet: %s: malformed synset line"):format(where or "?"), 0)
  end
  local words = {}
  for i = 1, w_cnt do
    local w = fields[3 + 2 * i]
    w = w:gsub("%(%a+%)$", "")
    words[#words + 1] = w
  end
  return {offset = offset, pos = ss_type, words = words}
end

-- Every synset of the given parts of speech (default all four), in file order.
function M.synsets(dir, pos_list)
  dir = dir or assert(M.find_dir())
  local out = {}
  for _, pos in ipairs(pos_list or M.POS) do
    local file = POS_FILES[pos] or error("wordnet: unknown part of speech '" .. tostring(pos) .. "'", 2)
    local path = dir .. "/" .. file
    local f, err = io.open(path, "r")
    if not f then error("wordnet: cannot open " .. path .. ": " .. tostring(err), 2) end
    local n = 0
    for line in f:lines() do
      n = n + 1
      local ok, s = pcall(M.parse_line, line, path .. ":" .. n)
      if not ok then f:close(); error(s, 2) end
      if s then s.pos_name = pos; out[#out + 1] = s end
    end
    f:close()
  end
  return out
end

-- Sense ranks from the index files (index.noun, ...): rank[pos][lemma][offset] = k when the
-- synset at that offset is the lemma's k-th sense (WordNet lists senses by how often they were
-- tagged in its corpus, most frequent first). Lemmas are lower-cased, as in the index.
local INDEX_FILES = {noun = "index.noun", verb = "index.verb", adj = "index.adj", adv = "index.adv"}

function M.sense_ranks(dir, pos_list)
  dir = dir or assert(M.find_dir())
  local ranks = {}
  for _, pos in ipairs(pos_list or M.POS) do
    local path = dir .. "/" .. (INDEX_FILES[pos] or error("wordnet: unknown part of speech '" .. tostring(pos) .. "'", 2))
    local f, err = io.open(path, "r")
    if not f then error("wordnet: cannot open " .. path .. ": " .. tostring(err), 2) end
    local r = {}
    local n = 0
    for line in f:lines() do
      n = n + 1
      if line:sub(1, 1) ~= " " and line ~= "" then
        local fields = {}
        for w in line:gmatch("%S+") do fields[#fields + 1] = w end
        -- lemma pos synset_cnt p_cnt [ptr_symbol x p_cnt] sense_cnt tagsense_cnt offsets...
        local synset_cnt, p_cnt = tonumber(fields[3]), tonumber(fields[4])
        if not (synset_cnt and p_cnt and #fields >= 6 + p_cnt + synset_cnt) then
          f:close()
          error(("wordnet: %s:%d: malformed index line"):format(path, n), 2)
        end
        local lemma = fields[1]
        local t = {}
        for k = 1, synset_cnt do t[fields[6 + p_cnt + k]] = k end
        r[lemma] = t
      end
    end
    f:close()
    ranks[pos] = r
  end
  return ranks
end

-- Reads a word list (one word a line, e.g. /usr/share/dict/words) into a set; possessives
-- ("dog's") are left out.
function M.load_wordlist(path)
  path = path or "/usr/share/dict/american-english"
  local f, err = io.open(path, "r")
  if not f then return nil, "wordnet: cannot open word list " .. path .. ": " .. tostring(err) end
  local set = {}
  for w in f:lines() do
    if not w:find("'", 1, true) then set[w] = true end
  end
  f:close()
  return set
end

-- Synonym pairs {a, b}: two different single-word lemmas of one synset, both accepted by
-- opts.keep(word) (default: all lower-case letters). Each unordered pair appears once, in the
-- order first met (files in M.POS order, synsets in file order, words in synset order), so the
-- list is the same on every machine. opts.pos limits the parts of speech. opts.max_sense = k
-- keeps a word only where the synset is among its k most frequent senses (so "try" and "hear",
-- synonyms in a legal sense, are not paired at k = 2).
function M.synonym_pairs(opts)
  opts = opts or {}
  local keep = opts.keep or function(w) return w:match("^%l+$") ~= nil end
  local ranks = opts.max_sense and M.sense_ranks(opts.dir, opts.pos)
  local seen, pairs_out = {}, {}
  for _, s in ipairs(M.synsets(opts.dir, opts.pos)) do
    local ws, wset = {}, {}
    for _, w in ipairs(s.words) do
      local lw = w:lower()
      local common = true
      if ranks then
        local r = ranks[s.pos_name][lw]
        local k = r and r[s.offset]
        common = k ~= nil and k <= opts.max_sense
      end
      if common and not wset[lw] and not lw:find("_", 1, true) and keep(lw) then
        wset[lw] = true
        ws[#ws + 1] = lw
      end
    end
    for i = 1, #ws do
      for j = i + 1, #ws do
        local a, b = ws[i], ws[j]
        local key = a < b and (a .. " " .. b) or (b .. " " .. a)
        if not seen[key] then
          seen[key] = true
          pairs_out[#pairs_out + 1] = {a, b}
        end
      end
    end
  end
  return pairs_out
end

return M
