-- test_sweep.lua: `miwb sweep` (lua/miwb/sweep.lua). A 12-item sweep (tests/lua/sweeps/tiny.lua)
-- runs under GNU parallel in 3 shards with one worker killed mid-way, is rerun with
-- --resume-failed and merged; the merged files must equal those of a one-process run byte for
-- byte, and the merged tensor must equal the tensors drawn here directly. A changed sweep file
-- or other arguments make the merge or a worker refuse; a failing item is reported, not fatal.
local T = require("testlib")
local mi = require("miwb")

local MIWB = arg[-1] or "build/miwb"
if MIWB:sub(1, 1) ~= "/" then MIWB = os.getenv("PWD") .. "/" .. MIWB end

local q, run = T.shq, T.sh

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path) return slurp(path) ~= nil end

local tmp = os.tmpname()
os.remove(tmp)
assert(mi.sys.mkdir(tmp))
-- the sweep file is copied, so that a test can change it
local SWEEP = tmp .. "/tiny.lua"
do
  local src = assert(slurp("tests/lua/sweeps/tiny.lua"))
  local f = assert(io.open(SWEEP, "w"))
  f:write(src)
  f:close()
end
local function sweep(args) return run(MIWB .. " sweep " .. args) end

-- the expected merged tensor, drawn here as the sweep's items draw theirs
local function expected_xs()
  local xs = {}
  for i = 0, 11 do xs[i + 1] = mi.randn({3, 4}, mi.Generator(i)) end
  return mi.stack(xs)
end

T.test("shard index from --shard and from Slurm, Kubernetes and GNU parallel variables", function()
  local S = mi.sweep
  local function env(t) return function(k) return t[k] end end
  local I, N = S.resolve_shard({shard = "2/5"}, env{})
  T.eq(I, 2); T.eq(N, 5)
  I, N = S.resolve_shard({}, env{SLURM_ARRAY_TASK_ID = "3", SLURM_ARRAY_TASK_COUNT = "4"})
  T.eq(I, 3); T.eq(N, 4)
  -- a resubmitted subset (--array=3,7 with --shards 8) keeps its indices
  I, N = S.resolve_shard({shards = 8}, env{SLURM_ARRAY_TASK_ID = "7", SLURM_ARRAY_TASK_MIN = "3", SLURM_ARRAY_TASK_COUNT = "2"})
  T.eq(I, 7); T.eq(N, 8)
  T.raises(function() S.resolve_shard({}, env{SLURM_ARRAY_TASK_ID = "4", SLURM_ARRAY_TASK_COUNT = "4"}) end,
    "shard 4 of 4 (from SLURM_ARRAY_TASK_ID): the index must be in 0 .. 3")
  I, N = S.resolve_shard({shards = 6}, env{JOB_COMPLETION_INDEX = "5"})
  T.eq(I, 5); T.eq(N, 6)
  I, N = S.resolve_shard({shards = 3}, env{PARALLEL_SEQ = "1"})
  T.eq(I, 0); T.eq(N, 3)
  I, N = S.resolve_shard({}, env{})
  T.eq(I, 0); T.eq(N, 1)
  T.raises(function() S.resolve_shard({}, env{JOB_COMPLETION_INDEX = "1"}) end, "add --shards N")
  T.raises(function() S.resolve_shard({}, env{PARALLEL_SEQ = "1"}) end, "--shards N")
  T.raises(function() S.resolve_shard({shard = "3/3"}, env{}) end, "must be in 0 .. 2")
  T.raises(function() S.resolve_shard({shard = "1-3"}, env{}) end, "--shard wants I/N")
  T.raises(function() S.resolve_shard({shards = 4}, env{}) end, "needs a shard index")
end)

T.test("one process runs every item and merges; the merged tensor is the items' tensors", function()
  local out, code = sweep(q(SWEEP) .. " --out " .. q(tmp .. "/single"))
  T.eq(code, 0, out)
  T.truthy(out:find("12 items, 12 run, 0 already done, 0 failed", 1, true), out)
  local merged = mi.sweep.load(tmp .. "/single")
  T.truthy(merged.xs:equal(expected_xs()), "xs equals the tensors drawn directly")
  T.eq(merged.n, 12)
  T.eq(merged.first_label, "item 0")
  local total = 0
  for i = 0, 11 do total = total + mi.randn({3, 4}, mi.Generator(i)):sum():item() end
  T.near(merged.total, total, 0, "total")
  -- a rerun finds everything done
  out, code = sweep(q(SWEEP) .. " --out " .. q(tmp .. "/single"))
  T.eq(code, 0, out)
  T.truthy(out:find("12 items, 0 run, 12 already done", 1, true), out)
end)

T.test("GNU parallel, 3 shards, a worker killed mid-way, --resume-failed, merge: equal bit for bit", function()
  local _, has = run("command -v parallel")
  if has ~= 0 then error("GNU parallel is not installed (make deps installs Debian's parallel)") end
  local dir = tmp .. "/par"
  local joblog = tmp .. "/joblog"
  local cmd = ("parallel --joblog %s -j3 %s sweep %s --shard {}/3 --out %s ::: 0 1 2"):format(q(joblog), q(MIWB),
    q(SWEEP), q(dir))
  -- item 7 (shard 1, whose items are 1 4 7 10) hangs; the test kills its worker there
  local p = assert(io.popen("SWEEP_TEST_HANG=7 " .. cmd .. " 2>&1", "r"))
  local t0 = mi.monotonic()
  while not exists(dir .. "/hanging") and mi.monotonic() - t0 < 15 do os.execute("sleep 0.05") end
  local pid = slurp(dir .. "/hanging")
  T.truthy(pid and pid:match("^%d+$"), "the worker of shard 1 reached item 7")
  os.execute("kill -9 " .. pid)
  local first = p:read("a")
  local _, _, code = p:close()
  T.truthy(code ~= 0, "parallel reports the killed job")
  -- the killed shard kept items 1 and 4, lost 7 and never reached 10
  local status = sweep("status " .. q(dir))
  T.truthy(status:find("shard 1 .- 2 done, 0 failed, 2 missing  killed on "), status)
  T.truthy(status:find("shard 0 .- 4 done, 0 failed, 0 missing"), status)
  local out, mcode = sweep("merge " .. q(dir))
  T.eq(mcode, 1, "merge refuses while items are missing")
  T.truthy(out:find("missing items 7, 10", 1, true), out)
  local rec4 = slurp(dir .. "/items/000004.json")
  -- the same command with --resume-failed reruns only the failed job, which skips what it finished
  local again
  again, code = run(cmd:gsub("^parallel ", "parallel --resume-failed ") .. " 2>&1")
  T.eq(code, 0, first .. again)
  T.truthy(again:find("tiny shard 1/3: 4 items, 2 run, 2 already done, 0 failed", 1, true), again)
  T.truthy(not again:find("shard 0/3", 1, true), "finished jobs are not rerun: " .. again)
  T.eq(slurp(dir .. "/items/000004.json"), rec4, "item 4 was not run again")
  out, mcode = sweep("merge " .. q(dir))
  T.eq(mcode, 0, out)
  T.eq(slurp(dir .. "/merged.json"), slurp(tmp .. "/single/merged.json"), "merged.json equal to the one-process run")
  local a, b = slurp(dir .. "/merged.safetensors"), slurp(tmp .. "/single/merged.safetensors")
  T.truthy(a and a == b, "merged.safetensors equal to the one-process run")
end)

T.test("a changed sweep file or other arguments: merge and workers refuse", function()
  local dir = tmp .. "/par"
  local src = slurp(SWEEP)
  local f = assert(io.open(SWEEP, "w"))
  f:write(src, "-- edited\n")
  f:close()
  local out, code = sweep("merge " .. q(dir))
  T.eq(code, 1)
  T.truthy(out:find("refusing to merge", 1, true) and out:find("the sweep file has changed", 1, true), out)
  out, code = sweep(q(SWEEP) .. " --shard 0/3 --out " .. q(dir))
  T.eq(code, 1)
  T.truthy(out:find("refusing to run this worker", 1, true), out)
  f = assert(io.open(SWEEP, "w"))
  f:write(src)
  f:close()
  out, code = sweep(q(SWEEP) .. " --shard 0/3 --out " .. q(dir) .. " --args --scale 2")
  T.eq(code, 1)
  T.truthy(out:find("the arguments differ", 1, true), out)
  out, code = sweep("merge " .. q(dir) .. " --args --scale 2")
  T.eq(code, 1)
  T.truthy(out:find("the arguments differ", 1, true), out)
  out, code = sweep(q(SWEEP) .. " --shard 0/4 --out " .. q(dir))
  T.eq(code, 1)
  T.truthy(out:find("the number of shards is 4, the sweep started with 3", 1, true), out)
  out, code = sweep(q(SWEEP) .. " --shard 0/3 --out " .. q(dir) .. " --args --nope 1")
  T.eq(code, 1)
  T.truthy(out:find("unknown option --nope (it takes: --fail_at --scale)", 1, true), out)
  -- the original file and arguments merge again
  out, code = sweep("merge " .. q(dir))
  T.eq(code, 0, out)
end)

T.test("a failing item is recorded with its traceback; the other items go on", function()
  local dir = tmp .. "/fail"
  local out, code = sweep(q(SWEEP) .. " --shard 2/3 --out " .. q(dir) .. " --args --fail_at 5")
  T.eq(code, 1, out)
  T.truthy(out:find("item 5 failed: ", 1, true) and out:find("item 5 fails on purpose", 1, true), out)
  T.truthy(out:find("4 items, 3 run, 0 already done, 1 failed", 1, true), out)
  local rec = mi.json.read(dir .. "/items/000005.json")
  T.eq(rec.status, "failed")
  T.truthy(rec.traceback:find("stack traceback", 1, true) and rec.traceback:find("tiny.lua", 1, true), rec.traceback)
  T.eq(mi.json.read(dir .. "/items/000008.json").status, "ok")
  local status = sweep("status " .. q(dir))
  T.truthy(status:find("shard 2 .- 3 done, 1 failed, 0 missing"), status)
  T.truthy(status:find("item 5 failed: .-fails on purpose"), status)
  out, code = sweep("merge " .. q(dir) )
  T.eq(code, 1)
  T.truthy(out:find("failed items 5", 1, true), out)
end)

T.test("results keep NaN, infinities, nested tables and int64/bool tensors", function()
  local file = tmp .. "/kinds.lua"
  local f = assert(io.open(file, "w"))
  f:write([[
local mi = require("miwb")
return {name = "kinds", items = function() return {"a", "bb"} end,
  run = function(item, ctx)
    return {nan = 0 / 0, inf = -math.huge, nested = {word = item, ids = mi.tensor({1, 2}, "int64")},
            mask = mi.tensor({true, false}, "bool"), index = ctx.index}
  end}
]])
  f:close()
  local out, code = sweep(q(file) .. " --out " .. q(tmp .. "/kinds"))
  T.eq(code, 0, out)
  local m = mi.sweep.load(tmp .. "/kinds")
  T.eq(#m.items, 2)
  local r = m.items[2]
  T.truthy(r.nan ~= r.nan, "NaN")
  T.eq(r.inf, -math.huge)
  T.eq(r.nested.word, "bb")
  T.eq(r.index, 1)
  T.eq(r.nested.ids:dtype(), "int64")
  T.eq(r.nested.ids[1]:item(), 2)
  T.eq(r.mask:dtype(), "bool")
end)

T.test("misuse: clear messages", function()
  local out, code = sweep(q(SWEEP))
  T.eq(code, 1)
  T.truthy(out:find("--out DIR is needed", 1, true), out)
  out, code = sweep(q(SWEEP) .. " --out " .. q(tmp .. "/x") .. " --scale 2")
  T.eq(code, 1)
  T.truthy(out:find("unknown option --scale (the sweep's own options go after --args", 1, true), out)
  out, code = sweep("status " .. q(tmp))
  T.eq(code, 1)
  T.truthy(out:find("has no manifest.json", 1, true), out)
  local bad = tmp .. "/bad.lua"
  local f = assert(io.open(bad, "w"))
  f:write("return {name = 'bad', items = 3, run = function() end, redcue = function() end}\n")
  f:close()
  out, code = sweep(q(bad) .. " --out " .. q(tmp .. "/bad"))
  T.eq(code, 1)
  T.truthy(out:find("unknown field 'redcue'", 1, true), out)
end)

-- the example sweeps of scripts/sweeps, at small sizes
T.test("ablation_grid on the toy model, 2 shards: the planted heads 0.1 and 1.2 rank first", function()
  local dir = tmp .. "/abl"
  local args = " --out " .. q(dir) .. " --args --model toy --n_prompts 8 --batch 4 --seq_len 10"
  for s = 0, 1 do
    local out, code = sweep("scripts/sweeps/ablation_grid.lua --shard " .. s .. "/2" .. args)
    T.eq(code, 0, out)
  end
  local out, code = sweep("merge " .. q(dir))
  T.eq(code, 0, out)
  local m = mi.sweep.load(dir)
  local top = {m.ranked[1].name, m.ranked[2].name}
  table.sort(top)
  T.eq(table.concat(top, " "), "0.1 1.2", "the two heads of the hand-built circuit")
  T.truthy(m.ranked[2].score > 1 and m.ranked[3].score < 0.5 * m.ranked[2].score, "far above the rest")
  T.eq(table.concat(m.scores:shape(), ","), "2,2,4")
  -- the mean is the mean of the two items' scores
  local a, b = m.scores[0]:totable(), m.scores[1]:totable()
  local mean = m.mean:totable()
  for l = 1, 2 do for h = 1, 4 do T.near(mean[l][h], (a[l][h] + b[l][h]) / 2, 1e-6) end end
  T.truthy(exists(dir .. "/figures/ablation_mean.png"), "figure")
end)

T.test("max_activating on the bundled model: the previous-token head 0.7 attends to the previous token", function()
  if not exists("models/attn_only_2L/model.safetensors") then
    print("SKIP - max_activating: the bundled model models/attn_only_2L is absent")
    return
  end
  local dir = tmp .. "/maxact"
  local out, code = sweep("scripts/sweeps/max_activating.lua --out " .. q(dir) ..
    " --args --model models/attn_only_2L --text README.md --batch 2 --n_ctx 32 --max_items 3 --k 5 --figures 8")
  T.eq(code, 0, out)
  local m = mi.sweep.load(dir)
  T.eq(#m.units, 16)
  T.eq(m.units[8], "0.7")
  T.eq(table.concat(m.values:shape(), ","), "16,5")
  local pos, att = m.position[7]:totable(), m.attended[7]:totable()
  for j = 1, 5 do T.eq(att[j], pos[j] % 32 - 1, "head 0.7, context " .. j) end
  -- the values are sorted and are attention weights
  local v = m.values[7]:totable()
  for j = 2, 5 do T.truthy(v[j] <= v[j - 1] and v[j] <= 1, "sorted") end
  T.truthy(exists(dir .. "/figures/unit_0.7.png"), "figure of head 0.7")
  local tsv = slurp(dir .. "/figures/top_contexts.tsv")
  local lines = select(2, tsv:gsub("\n", ""))
  T.eq(lines, 1 + 16 * 5, "the table: a header and k lines per unit")
  out, code = sweep("scripts/sweeps/max_activating.lua --out " .. q(tmp .. "/maxmlp") ..
    " --args --model models/attn_only_2L --text README.md --unit mlp")
  T.eq(code, 1)
  T.truthy(out:find("attention-only: it has no MLP neurons", 1, true), out)
end)

T.test("induction_seeds: one seed per item, the same numbers whichever shard ran it", function()
  if not exists("models/attn_only_2L/tokenizer.json") then
    print("SKIP - induction_seeds: the bundled tokenizer models/attn_only_2L/tokenizer.json is absent")
    return
  end
  local small = " --args --n_seeds 2 --steps 20 --every 10"
  local out, code = sweep("scripts/sweeps/induction_seeds.lua --out " .. q(tmp .. "/seeds") .. small)
  T.eq(code, 0, out)
  local m = mi.sweep.load(tmp .. "/seeds")
  T.eq(#m.formed_step, 2)
  T.eq(table.concat(m.final_scores:shape(), ","), "2,2,4")
  T.eq(#m.per_seed[1].curve_steps, 2)
  T.truthy(not m.final_scores[0]:equal(m.final_scores[1]), "two seeds, two models")
  out, code = sweep("scripts/sweeps/induction_seeds.lua --shard 1/2 --out " .. q(tmp .. "/seeds2") .. small)
  T.eq(code, 0, out)
  local r1 = mi.json.read(tmp .. "/seeds/items/000001.json").result
  local r2 = mi.json.read(tmp .. "/seeds2/items/000001.json").result
  T.eq(mi.json.encode(r1), mi.json.encode(r2), "seed 1 alone in shard 1/2")
  T.eq(slurp(tmp .. "/seeds/items/000001.safetensors"), slurp(tmp .. "/seeds2/items/000001.safetensors"))
end)

T.test("max_activating --unit mlp: each neuron's top values are the largest of all positions", function()
  if not exists("models/attn_only_2L/tokenizer.json") then
    print("SKIP - max_activating mlp: the bundled tokenizer is absent")
    return
  end
  -- a model with an MLP, saved as a folder with the bundled tokenizer
  local cfg = mi.HookedTransformerConfig{d_model = 32, d_head = 8, n_heads = 4, n_layers = 1, n_ctx = 32,
    d_vocab = 1024, d_mlp = 48, act_fn = "gelu_new", normalization_type = "LN", seed = 3}
  local model = mi.HookedTransformer(cfg, {tokenizer = "models/attn_only_2L/tokenizer.json"})
  mi.save_pretrained(model, tmp .. "/mlpmodel", {tokenizer = "models/attn_only_2L/tokenizer.json"})
  local dir = tmp .. "/maxmlp2"
  local args = " --out " .. q(dir) .. " --args --model " .. q(tmp .. "/mlpmodel") ..
    " --unit mlp --layer 0 --text README.md --batch 2 --n_ctx 32 --max_items 3 --k 4 --figures 1"
  for s = 0, 2 do
    local out, code = sweep("scripts/sweeps/max_activating.lua --shard " .. s .. "/3" .. args)
    T.eq(code, 0, out)
  end
  local out, code = sweep("merge " .. q(dir))
  T.eq(code, 0, out)
  local m = mi.sweep.load(dir)
  -- all 6 rows at once: BOS + 31 ids each, the README's tokens in order
  local loaded = mi.experiment.load_model(tmp .. "/mlpmodel")
  local ids = loaded.tokenizer:encode(slurp("README.md")):narrow(0, 0, 6 * 31):view(6, 31)
  local tokens = mi.cat({mi.full({6, 1}, loaded.tokenizer:bos_token_id(), {dtype = "int64"}), ids}, 1)
  local _, cache = loaded:run_with_cache(tokens, {names_filter = function(n) return n == "blocks.0.mlp.hook_post" end})
  local post = cache["blocks.0.mlp.hook_post"]:narrow(1, 1, 31):reshape(6 * 31, 48)   -- not BOS
  local top = post:transpose(0, 1):sort(1, true):narrow(1, 0, 4)                     -- [48, 4]
  T.eq(#m.units, 48)
  T.eq(m.units[1], "mlp0.0")
  T.near_table(m.values:totable(), top:totable(), 1e-5, "top values")
end)

os.execute("rm -rf " .. q(tmp))
T.done()
