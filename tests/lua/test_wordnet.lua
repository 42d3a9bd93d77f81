-- WordNet reader: a hand-made fixture whose pairs are worked out by hand, a malformed line,
-- and (where Debian's wordnet-base is installed) known synonyms in the real database.
local T = require("testlib")
local wn = require("miwb").wordnet

local FIX = "tests/fixtures/wordnet"

T.test("parse_line reads words of a synset and drops adjective markers", function()
  local s = wn.parse_line("00000010 00 s 03 fast 0 speedy(a) 0 quick(p) 0 000 | acting with speed")
  T.eq(s.offset, "00000010"); T.eq(s.pos, "s")
  T.eq(table.concat(s.words, ","), "fast,speedy,quick")
  T.eq(wn.parse_line("  1 header line"), nil)
end)

T.test("synonym pairs of the fixture, worked out by hand", function()
  local got = {}
  for _, p in ipairs(wn.synonym_pairs{dir = FIX}) do got[#got + 1] = p[1] .. "-" .. p[2] end
  -- noun synset 1: car auto automobile machine motorcar -> 10 pairs in order;
  -- synset 2: motor_vehicle is multi-word, "vehicle" alone -> none; synset 3 repeats car/auto.
  -- adj: fast speedy quick -> 3 pairs; lonely alone -> none. verb: run/Run fold to one word.
  local want = {"car-auto", "car-automobile", "car-machine", "car-motorcar", "auto-automobile",
                "auto-machine", "auto-motorcar", "automobile-machine", "automobile-motorcar",
                "machine-motorcar", "fast-speedy", "fast-quick", "speedy-quick"}
  T.eq(table.concat(got, " "), table.concat(want, " "))
end)

T.test("keep filter and part-of-speech selection", function()
  local pairs_ = wn.synonym_pairs{dir = FIX, pos = {"adj"},
                                  keep = function(w) return #w <= 5 end}
  T.eq(#pairs_, 1)
  T.eq(pairs_[1][1] .. "-" .. pairs_[1][2], "fast-quick")
end)

T.test("max_sense keeps a word only in its most frequent senses (ranks from the index)", function()
  local r = wn.sense_ranks(FIX, {"noun"})
  T.eq(r.noun.car["00000001"], 1); T.eq(r.noun.auto["00000001"], 2); T.eq(r.noun.machine["00000001"], 3)
  local got = {}
  for _, p in ipairs(wn.synonym_pairs{dir = FIX, max_sense = 2}) do got[#got + 1] = p[1] .. "-" .. p[2] end
  -- synset 1 without machine (its 3rd sense): car auto automobile motorcar -> 6 pairs; the adjectives
  -- are all first senses: 3 pairs
  T.eq(table.concat(got, " "), "car-auto car-automobile car-motorcar auto-automobile auto-motorcar " ..
       "automobile-motorcar fast-speedy fast-quick speedy-quick")
  T.eq(#wn.synonym_pairs{dir = FIX, max_sense = 1, pos = {"noun"}}, 3)   -- car automobile motorcar
end)

T.test("a malformed line is an error naming the file and line", function()
  T.raises(function() wn.parse_line("00000001 06 n 05 car 0 auto 0 000 | x", "f:1") end,
           "f:1: malformed synset line")
  T.raises(function() wn.synsets(FIX, {"pronoun"}) end, "unknown part of speech")
  T.raises(function() wn.synsets("/nonexistent-wordnet", {"noun"}) end, "cannot open")
end)

local dir = wn.find_dir()
if not dir then
  print("SKIP - real WordNet database not installed (Debian wordnet-base)")
else
  T.test("real WordNet: try/hear are synonyms only in a rare sense", function()
    local function has(pairs_, a, b)
      for _, p in ipairs(pairs_) do
        if (p[1] == a and p[2] == b) or (p[1] == b and p[2] == a) then return true end
      end
      return false
    end
    T.truthy(has(wn.synonym_pairs{dir = dir, pos = {"verb"}}, "try", "hear"))
    T.truthy(not has(wn.synonym_pairs{dir = dir, pos = {"verb"}, max_sense = 2}, "try", "hear"))
    T.truthy(has(wn.synonym_pairs{dir = dir, pos = {"noun"}, max_sense = 1}, "car", "automobile"))
  end)

  T.test("real WordNet: car/automobile and big/large are synonyms", function()
    local found = {}
    for _, p in ipairs(wn.synonym_pairs{dir = dir, pos = {"noun", "adj"}}) do
      found[p[1] .. " " .. p[2]] = true
      found[p[2] .. " " .. p[1]] = true
    end
    T.truthy(found["car automobile"], "car/automobile")
    T.truthy(found["big large"], "big/large")
    T.truthy(not found["car large"], "car/large are not synonyms")
  end)
end

T.done()
