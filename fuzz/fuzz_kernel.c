/* fuzz_kernel.c - libFuzzer target for the Jupyter kernel's message path: frames are split and
 * their signature checked (mi._kernel.split, lua/lkernel.c), the JSON parts decoded
 * (mi.kernel.decode), and the message handled (Kernel:handle, lua/miwb/kernel.lua) over a
 * transport that only records replies, each of which must be valid JSON. execute_request and
 * shutdown_request are not handled (they run code / stop). The input's first byte chooses the
 * key (even: unsigned, odd: "k"); the rest is frames separated by "|F|". A refusal is a string;
 * a crash, a sanitizer report, a handler that raises or a reply that is not JSON is a bug.
 * Built and run by fuzz/run.sh; tests/lua/test_kernel.lua replays the kept corpus (tests/fuzz/kernel). */
#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_miwb(lua_State *L);

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
        luaL_requiref(L, "miwb", luaopen_miwb, 0);
        lua_getfield(L, -1, "kernel");
        lua_getfield(L, -1, "fuzz_one");
        if (!lua_isfunction(L, -1)) __builtin_trap();
        lua_setglobal(L, "fuzz_kernel");
        lua_settop(L, 0);
    }
    lua_getglobal(L, "fuzz_kernel");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) __builtin_trap(); /* an assert in fuzz_one failed */
    lua_settop(L, 0);
    return 0;
}
