/* lsys.c - the few system services the Lua library needs beyond Lua's own io/os, done in C so
 * that no path ever goes through a shell.
 *
 *   mi.sha256(data)            -> 64 lowercase hex digits (OpenSSL libcrypto's SHA-256)
 *   mi.sha256_file(path)       -> hex digest of the file's bytes, or nil, message when it cannot be read
 *   mi.sys.getpid()            -> this process's id
 *   mi.sys.hostname()          -> the host's name
 *   mi.sys.alive(pid)          -> whether a process with this id exists on this host (kill(pid, 0))
 *   mi.sys.mkdir(path)         -> true; creates path and its missing parents (mkdir -p), or nil, message
 *   mi.sys.listdir(path)       -> a sorted list of the names in a folder (no "." / ".."), or nil, message
 *   mi.sys.link(old, new)      -> true, or nil, message, exists: a hard link; fails when new exists, so
 *                                 writing a temporary file and linking it creates a file whole and
 *                                 only once among racing processes
 *
 * Paths holding a zero byte are refused with an error (the C calls would see a shorter path).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "mwl.h"

static const char *check_path(lua_State *L, int idx, const char *fn) {
    const char *p = mwl_checkname(L, idx, fn, "path");
    if (*p == '\0') luaL_error(L, "%s: empty path", fn);
    return p;
}

static void push_hex(lua_State *L, const unsigned char *md, unsigned n) {
    static const char hex[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    lua_pushlstring(L, out, 2 * n);
}

/* The digest context lives in a userdata with __gc, so an error between new and free leaks nothing. */
#define MD_BOX "miwb.sys.md"
static int md_gc(lua_State *L) {
    EVP_MD_CTX **c = (EVP_MD_CTX **)luaL_checkudata(L, 1, MD_BOX);
    if (*c) EVP_MD_CTX_free(*c);
    *c = NULL;
    return 0;
}

static EVP_MD_CTX *new_md(lua_State *L, const char *fn) {
    EVP_MD_CTX **c = (EVP_MD_CTX **)lua_newuserdatauv(L, sizeof *c, 0);
    *c = NULL;
    if (luaL_newmetatable(L, MD_BOX)) {
        lua_pushcfunction(L, md_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *c = EVP_MD_CTX_new();
    if (!*c || EVP_DigestInit_ex(*c, EVP_sha256(), NULL) != 1) luaL_error(L, "%s: cannot start SHA-256", fn);
    return *c;
}

static int finish_md(lua_State *L, EVP_MD_CTX *c, const char *fn) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_DigestFinal_ex(c, md, &n) != 1) return luaL_error(L, "%s: SHA-256 failed", fn);
    push_hex(L, md, n);
    return 1;
}

static int l_sha256(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    EVP_MD_CTX *c = new_md(L, "mi.sha256");
    if (EVP_DigestUpdate(c, s, len) != 1) return luaL_error(L, "mi.sha256: SHA-256 failed");
    return finish_md(L, c, "mi.sha256");
}

static int l_sha256_file(lua_State *L) {
    const char *path = check_path(L, 1, "mi.sha256_file");
    EVP_MD_CTX *c = new_md(L, "mi.sha256_file");
    FILE *f = fopen(path, "rb");
    if (!f) {
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    unsigned char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (EVP_DigestUpdate(c, buf, got) != 1) {
            fclose(f);
            return luaL_error(L, "mi.sha256_file: SHA-256 failed");
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: read error", path);
        return 2;
    }
    return finish_md(L, c, "mi.sha256_file");
}

static int l_getpid(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

static int l_alive(lua_State *L) {
    lua_Integer pid = luaL_checkinteger(L, 1);
    if (pid <= 0 || pid != (lua_Integer)(pid_t)pid) return luaL_error(L, "mi.sys.alive: %d is not a process id", (int)pid);
    lua_pushboolean(L, kill((pid_t)pid, 0) == 0 || errno == EPERM);
    return 1;
}

static int l_hostname(lua_State *L) {
    char name[256];
    if (gethostname(name, sizeof name) != 0) return luaL_error(L, "mi.sys.hostname: %s", strerror(errno));
    name[sizeof name - 1] = 0;
    lua_pushstring(L, name);
    return 1;
}

static int l_mkdir(lua_State *L) {
    const char *path = check_path(L, 1, "mi.sys.mkdir");
    luaL_Buffer b;
    size_t len = strlen(path);
    char *p = luaL_buffinitsize(L, &b, len + 1);
    memcpy(p, path, len + 1);
    /* each prefix ending before a '/', then the whole path */
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char keep = p[i];
        p[i] = 0;
        struct stat st;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            luaL_pushfail(L);
            lua_pushfstring(L, "%s: %s", p, strerror(e));
            return 2;
        }
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
            luaL_pushfail(L);
            lua_pushfstring(L, "%s: exists and is not a folder", p);
            return 2;
        }
        p[i] = keep;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* The open folder lives in a userdata with __gc, so a Lua error while listing closes it. */
#define DIR_BOX "miwb.sys.dir"
static int dir_gc(lua_State *L) {
    DIR **d = (DIR **)luaL_checkudata(L, 1, DIR_BOX);
    if (*d) closedir(*d);
    *d = NULL;
    return 0;
}

static int l_listdir(lua_State *L) {
    const char *path = check_path(L, 1, "mi.sys.listdir");
    DIR **d = (DIR **)lua_newuserdatauv(L, sizeof *d, 0);
    *d = NULL;
    if (luaL_newmetatable(L, DIR_BOX)) {
        lua_pushcfunction(L, dir_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    *d = opendir(path);
    if (!*d) {
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_newtable(L);
    lua_Integer n = 0;
    struct dirent *e;
    while ((e = readdir(*d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(*d);
    *d = NULL;
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

static int l_link(lua_State *L) {
    const char *from = check_path(L, 1, "mi.sys.link");
    const char *to = check_path(L, 2, "mi.sys.link");
    if (link(from, to) != 0) {
        int e = errno;
        luaL_pushfail(L);
        lua_pushfstring(L, "%s: %s", to, strerror(e));
        lua_pushboolean(L, e == EEXIST);
        return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
}

void mwl_open_sys(lua_State *L) {
    static const luaL_Reg fns[] = {{"sha256", l_sha256}, {"sha256_file", l_sha256_file}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    static const luaL_Reg sys[] = {{"getpid", l_getpid}, {"hostname", l_hostname}, {"alive", l_alive}, {"mkdir", l_mkdir},
                                   {"listdir", l_listdir}, {"link", l_link}, {NULL, NULL}};
    luaL_newlib(L, sys);
    lua_setfield(L, -2, "sys");
}
