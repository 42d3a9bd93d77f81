/* fuzz_config.c - libFuzzer target for config.json reading: the text goes through mi.json.decode
 * (cJSON) and mi.pretrained.read_config (Hugging Face GPT-2 or HookedTransformerConfig fields),
 * inside one Lua state with the miwb module. Lua errors are the expected refusals; a crash, a
 * sanitizer report or an error that is not a string is a bug. Built and run by fuzz/run.sh;
 * tests/lua/test_pretrained.lua replays the kept corpus (tests/fuzz/config). */
#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_miwb(lua_State *L);

static const char *const SCRIPT =
    "local mi = require('miwb')\n"
    "return function(s)\n"
    "  local ok, conf = pcall(mi.json.decode, s)\n"
    "  if not ok then assert(type(conf) == 'string') return end\n"
    "  if type(conf) ~= 'table' then return end\n"
    "  local ok2, cfg = pcall(mi.pretrained.read_config, conf, 'fuzz', 'fuzz.json')\n"
    "  if ok2 then assert(type(cfg) == 'table' and cfg.d_model > 0) else assert(type(cfg) == 'string') end\n"
    "end\n";

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
        luaL_requiref(L, "miwb", luaopen_miwb, 0);
        lua_pop(L, 1);
        if (luaL_dostring(L, SCRIPT) != LUA_OK) __builtin_trap();
        lua_setglobal(L, "fuzz_config");
    }
    lua_getglobal(L, "fuzz_config");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) __builtin_trap(); /* an assert above failed */
    lua_settop(L, 0);
    return 0;
}
