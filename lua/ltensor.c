/* ltensor.c - tensors in Lua (placeholder until the core lands): registers mi.json. */
#include "mwl.h"

void mwl_open_json(lua_State *L);

void mwl_open_tensor(lua_State *L) {
    mwl_open_json(L);
}
