/* mwl.h - what the Lua binding files share: tensors as userdata, errors, registration.
 *
 * A tensor userdata (metatable MWL_TENSOR) holds one mw_tensor header and so one reference to
 * its storage; __gc and __close release it. Allocate the userdata first (mwl_newtensor), then
 * let the core fill it: an error in between leaves an empty, safely collectable object.
 */
#ifndef MWL_H
#define MWL_H

#include <lauxlib.h>
#include <lua.h>

#include "model.h"
#include "mw_tensor.h"

#define MWL_TENSOR "miwb.Tensor"

/* a new empty tensor userdata on the stack; returns its header for the core to fill */
mw_tensor *mwl_newtensor(lua_State *L);
/* pushes a tensor userdata that takes over *t's reference (t is zeroed) */
void mwl_pushtensor(lua_State *L, mw_tensor *t);
/* the tensor at idx, or a Lua error "bad argument #idx (tensor expected, got X)" */
mw_tensor *mwl_checktensor(lua_State *L, int idx);
/* the tensor at idx or NULL */
mw_tensor *mwl_totensor(lua_State *L, int idx);
/* raises a Lua error with the core's last message (mw_error()); never returns */
int mwl_coreerror(lua_State *L);
/* tells Lua's GC about tensor memory allocated since the last call (lua_gc LUA_GCSTEP) */
void mwl_account(lua_State *L);
/* The one check of an options table (Lua: mi.utils.check_opts): none/nil passes, a non-table
 * raises, and every key must be one of names (NULL-terminated), else
 * "op: unknown option 'sed' (options: dtype, generator, seed)". */
void mwl_check_opts(lua_State *L, int idx, const char *op, const char *const *names);
/* The one check of a string argument that names something (a path, a tensor or hook name, a
 * dtype, a key): C would see it cut at a zero byte, so one raises
 * "fname: what holds a zero byte (at byte N)". Returns the string (lio.c). */
const char *mwl_checkname(lua_State *L, int idx, const char *fname, const char *what);

/* Each binding file exports one opener that adds its functions to the module table at -1:
 *   mwl_open_tensor (ltensor.c), mwl_open_io (lio.c: safetensors, json, torch files),
 *   mwl_open_tokenizer (ltokenizer.c), mwl_open_model (lmodel.c), mwl_open_train (ltrain.c),
 *   mwl_open_config (lconfig.c), mwl_open_sys (lsys.c: sha256, mi.sys), mwl_open_kernel (lkernel.c:
 *   the Jupyter kernel's transport, mi._kernel). open_core (lmodule.c) calls each of them. */
/* pushes a model userdata over m, which the value at owner owns and outlives it (lmodel.c) */
void mwl_push_model_of(lua_State *L, mw_model *m, int owner);

void mwl_open_tensor(lua_State *L);
void mwl_open_io(lua_State *L);
void mwl_open_tokenizer(lua_State *L);
void mwl_open_model(lua_State *L);
void mwl_open_train(lua_State *L);
void mwl_open_config(lua_State *L);
void mwl_open_sys(lua_State *L);
void mwl_open_kernel(lua_State *L);

/* is the value at idx mi.json.null (ljson.c) */
int mwl_isjsonnull(lua_State *L, int idx);

/* HookedTransformerConfig tables (lconfig.c): the numeric fields of the table at idx into *c
 * (mw_config_default first; Lua errors name the field), and a new table of c's fields */
struct mw_config;
void mwl_toconfig(lua_State *L, int idx, struct mw_config *c);
void mwl_pushconfig(lua_State *L, const struct mw_config *c);

#endif
