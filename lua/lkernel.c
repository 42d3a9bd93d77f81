/* lkernel.c - the transport under the Jupyter kernel (lua/miwb/kernel.lua): ZeroMQ sockets,
 * HMAC-SHA256 signed multipart messages (Jupyter messaging protocol 5.3), the heartbeat and
 * control threads, and interrupts. What the messages mean is kernel.lua's business; this file
 * only moves signed frames.
 *
 *   mi._kernel.open{transport=, ip=, shell_port=, control_port=, stdin_port=, iopub_port=,
 *                   hb_port=, key=}   -> kernel; binds the five sockets (port 0: any free port,
 *                                        k:ports() says which)
 *   k:poll(ms)            -> "shell" | "control" when a message waits, nil after ms (-1: forever)
 *   k:recv(channel)       -> {identities = {...}, header =, parent_header =, metadata =, content =
 *                             (JSON texts), buffers = {...}}, or nil, why when the message is
 *                             malformed or wrongly signed (the caller logs and drops it)
 *   k:send(channel, identities, header, parent_header, metadata, content)   signs and sends
 *                             (channel "shell", "control", "iopub"; for iopub identities = {topic})
 *   k:ports() -> {shell =, control =, stdin =, iopub =, hb =}     k:close()
 *   mi._kernel.split(frames, key)  -> what recv returns, from a list of frame strings
 *   mi._kernel.sign(key, header, parent_header, metadata, content) -> lower-case hex HMAC-SHA256
 *   mi._kernel.pcall(handler, f, ...) -> as xpcall, but an interrupt (SIGINT, or an
 *                             interrupt_request on control) raises "interrupted!" inside f at its
 *                             next Lua instruction, as Ctrl-C does in the REPL (lua/main.c); a
 *                             long C operation finishes first. Outside it interrupts do nothing.
 *   mi._kernel.now()      -> seconds on a monotonic clock
 *   mi._kernel.base64(s)  -> s in base64 (images in display_data)
 *   mi._kernel.exe()      -> the running program's path, for the kernelspec
 *
 * Wire format (one multipart message): identities..., "<IDS|MSG>", signature, header,
 * parent_header, metadata, content, buffers... The signature is the hex HMAC-SHA256 of the four
 * JSON frames with the connection file's key; an empty key means unsigned (Jupyter's rule).
 *
 * Threads: the heartbeat thread echoes on its own socket, so a client sees the kernel alive
 * during a long cell. The control thread owns the control socket and relays every message to the
 * main thread through an inproc pair (and replies back); it also reads an interrupt_request
 * itself (signature checked) and interrupts the running cell at once, since the main thread is
 * busy running it. SIGINT is blocked in both threads, so the main thread takes it.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <zmq.h>

#include "mwl.h"

#define KERNEL_MT "miwb.kernel"
#define FRAME_BOX "miwb.kernel.frame"
#define DELIM "<IDS|MSG>"
#define MAX_FRAMES 1024              /* identities + buffers: more is refused */
#define MAX_FRAME_BYTES (256L << 20) /* ZMQ_MAXMSGSIZE: a bigger frame drops the connection */
#define SIG_HEX 64

/* ------------------------------------------------------------ signing and splitting */

typedef struct { const char *p; size_t n; } kframe;

/* hex[65] = HMAC-SHA256(key, parts[0] .. parts[3]); returns 0, or -1 when OpenSSL fails */
static int kernel_sign(const char *key, size_t keylen, const kframe parts[4], char hex[SIG_HEX + 1]) {
    int rc = -1;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    unsigned char out[32];
    size_t outlen = 0;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (ctx && EVP_MAC_init(ctx, (const unsigned char *)key, keylen, params)) {
        int ok = 1;
        for (int i = 0; i < 4 && ok; i++) ok = EVP_MAC_update(ctx, (const unsigned char *)parts[i].p, parts[i].n);
        if (ok && EVP_MAC_final(ctx, out, &outlen, sizeof out) && outlen == sizeof out) {
            static const char digits[] = "0123456789abcdef";
            for (size_t i = 0; i < sizeof out; i++) {
                hex[2 * i] = digits[out[i] >> 4];
                hex[2 * i + 1] = digits[out[i] & 15];
            }
            hex[SIG_HEX] = '\0';
            rc = 0;
        }
    }
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return rc;
}

/* Finds the delimiter of a message of n frames and checks its signature. Returns the index of
 * the delimiter (signature at +1, the four JSON frames at +2..+5, buffers after), or -1 with *why. */
static int kernel_split(const kframe *f, int n, const char *key, size_t keylen, const char **why) {
    int d = 0;
    while (d < n && !(f[d].n == sizeof DELIM - 1 && memcmp(f[d].p, DELIM, f[d].n) == 0)) d++;
    if (d == n) { *why = "no <IDS|MSG> delimiter"; return -1; }
    if (n - d < 6) { *why = "fewer than 5 frames after the delimiter"; return -1; }
    if (keylen > 0) {
        char hex[SIG_HEX + 1];
        if (kernel_sign(key, keylen, f + d + 2, hex) != 0) { *why = "HMAC failed"; return -1; }
        if (f[d + 1].n != SIG_HEX || CRYPTO_memcmp(hex, f[d + 1].p, SIG_HEX) != 0) {
            *why = "bad signature";
            return -1;
        }
    }
    return d;
}

/* pushes the message table for frames split at delimiter d */
static void push_message(lua_State *L, const kframe *f, int n, int d) {
    static const char *const names[4] = {"header", "parent_header", "metadata", "content"};
    lua_createtable(L, 0, 6);
    lua_createtable(L, d, 0);
    for (int i = 0; i < d; i++) {
        lua_pushlstring(L, f[i].p, f[i].n);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "identities");
    for (int i = 0; i < 4; i++) {
        lua_pushlstring(L, f[d + 2 + i].p, f[d + 2 + i].n);
        lua_setfield(L, -2, names[i]);
    }
    lua_createtable(L, n - d - 6, 0);
    for (int i = d + 6; i < n; i++) {
        lua_pushlstring(L, f[i].p, f[i].n);
        lua_rawseti(L, -2, i - d - 5);
    }
    lua_setfield(L, -2, "buffers");
}

/* frames from the list at idx (strings); the array is a userdata left on the stack */
static kframe *frames_from_list(lua_State *L, int idx, int *n) {
    lua_Integer len = luaL_len(L, idx);
    if (len > MAX_FRAMES) luaL_error(L, "kernel.split: more than %d frames", MAX_FRAMES);
    kframe *f = (kframe *)lua_newuserdatauv(L, sizeof(kframe) * (size_t)(len + 1), 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "kernel.split: frame %d is not a string", (int)i);
        f[i - 1].p = lua_tolstring(L, -1, &f[i - 1].n); /* kept alive by the list */
        lua_pop(L, 1);
    }
    *n = (int)len;
    return f;
}

static int l_split(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t keylen;
    const char *key = luaL_optlstring(L, 2, "", &keylen);
    int n;
    kframe *f = frames_from_list(L, 1, &n);
    const char *why = NULL;
    int d = kernel_split(f, n, key, keylen, &why);
    if (d < 0) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    push_message(L, f, n, d);
    return 1;
}

static int l_sign(lua_State *L) {
    size_t keylen;
    const char *key = luaL_checklstring(L, 1, &keylen);
    kframe parts[4];
    for (int i = 0; i < 4; i++) parts[i].p = luaL_checklstring(L, i + 2, &parts[i].n);
    char hex[SIG_HEX + 1];
    if (kernel_sign(key, keylen, parts, hex) != 0) return luaL_error(L, "kernel.sign: HMAC failed");
    lua_pushstring(L, hex);
    return 1;
}

/* ------------------------------------------------------------ interrupts */

/* the state running a cell (mi._kernel.pcall), or NULL; read by the SIGINT handler and the
 * control thread, which set the hook that raises the error (lua_sethook is async-safe) */
static lua_State *volatile running_L = NULL;
static pthread_mutex_t running_mu = PTHREAD_MUTEX_INITIALIZER;

static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void interrupt_running(void) {
    lua_State *L = running_L;
    if (L) lua_sethook(L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static void on_sigint(int sig) {
    (void)sig;
    interrupt_running();
}

/* sets running_L with SIGINT blocked and the mutex held, so that neither the handler nor the
 * control thread can set the hook after a cell ended (it would fire in the kernel's own loop) */
static void set_running(lua_State *L, int on) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_mutex_lock(&running_mu);
    running_L = on ? L : NULL;
    if (!on) lua_sethook(L, NULL, 0, 0); /* an interrupt that came too late must not fire later */
    pthread_mutex_unlock(&running_mu);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static int l_pcall(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION); /* the message handler */
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 2;
    set_running(L, 1);
    int status = lua_pcall(L, nargs, LUA_MULTRET, 1);
    set_running(L, 0);
    lua_pushboolean(L, status == LUA_OK);
    lua_replace(L, 1);
    return lua_gettop(L);
}

/* base64(bytes) -> text (images in display_data) */
static int l_base64(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (n > (size_t)INT_MAX / 4 * 3 - 3) return luaL_error(L, "kernel.base64: input too large");
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, 4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    luaL_pushresultsize(&b, (size_t)len);
    return 1;
}

/* exe() -> the running program's path (/proc/self/exe), or nil: the kernelspec's argv[0] */
static int l_exe(lua_State *L) {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return 0;
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int l_now(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + ts.tv_nsec * 1e-9);
    return 1;
}

/* ------------------------------------------------------------ the kernel's sockets */

enum { CH_SHELL, CH_CONTROL, CH_STDIN, CH_IOPUB, CH_HB, CH_N };
static const char *const CH_NAMES[CH_N] = {"shell", "control", "stdin", "iopub", "hb"};

typedef struct {
    void *ctx;
    void *sock[CH_N];  /* main thread: shell, stdin, iopub; control and hb belong to the threads */
    void *pair_main;   /* main thread's end of the control relay */
    void *pair_ctl;    /* the control thread's end */
    pthread_t hb_thread, ctl_thread;
    int hb_started, ctl_started;
    char *key;
    size_t keylen;
    int ports[CH_N];
} kernel;

/* one zmq_msg_t in a userdata, closed by __gc: frames received into Lua survive a Lua error */
typedef struct { zmq_msg_t m; int live; } frame_box;

static int frame_gc(lua_State *L) {
    frame_box *b = (frame_box *)luaL_checkudata(L, 1, FRAME_BOX);
    if (b->live) zmq_msg_close(&b->m);
    b->live = 0;
    return 0;
}

/* receives every part of one multipart message from s into a C array (the caller closes them);
 * returns the number of parts (extra parts past max are read and dropped), or -1 on ETERM */
static int recv_parts(void *s, zmq_msg_t *msgs, int max, int *dropped) {
    int n = 0, more = 1;
    *dropped = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, s, 0) < 0) {
            if (errno != EINTR) {
                zmq_msg_close(&m);
                for (int i = 0; i < n; i++) zmq_msg_close(&msgs[i]);
                return -1;
            }
        }
        more = zmq_msg_more(&m);
        if (n < max) msgs[n++] = m;
        else { zmq_msg_close(&m); *dropped = 1; }
    }
    return n;
}

static void send_parts(void *s, zmq_msg_t *msgs, int n) {
    for (int i = 0; i < n; i++) {
        if (zmq_msg_send(&msgs[i], s, i + 1 < n ? ZMQ_SNDMORE : 0) < 0) {
            for (int j = i; j < n; j++) zmq_msg_close(&msgs[j]);
            return;
        }
    }
}

static void *heartbeat_main(void *arg) {
    void *s = arg;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            if (errno == EINTR) continue;
            break; /* ETERM: the kernel is closing */
        }
        if (zmq_msg_send(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            if (errno != EINTR) break;
        }
    }
    zmq_close(s);
    return NULL;
}

/* an interrupt_request, correctly signed: interrupt the running cell now */
static void peek_interrupt(const kernel *k, zmq_msg_t *msgs, int n) {
    kframe f[MAX_FRAMES];
    for (int i = 0; i < n; i++) {
        f[i].p = (const char *)zmq_msg_data(&msgs[i]);
        f[i].n = zmq_msg_size(&msgs[i]);
    }
    const char *why;
    int d = kernel_split(f, n, k->key, k->keylen, &why);
    if (d < 0) return;
    cJSON *h = cJSON_ParseWithLength(f[d + 2].p, f[d + 2].n);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(h, "msg_type");
    if (cJSON_IsString(t) && strcmp(t->valuestring, "interrupt_request") == 0) {
        pthread_mutex_lock(&running_mu);
        interrupt_running();
        pthread_mutex_unlock(&running_mu);
    }
    cJSON_Delete(h);
}

static void *control_main(void *arg) {
    kernel *k = arg;
    zmq_msg_t *msgs = malloc(sizeof(zmq_msg_t) * MAX_FRAMES);
    zmq_pollitem_t items[2] = {{k->sock[CH_CONTROL], 0, ZMQ_POLLIN, 0}, {k->pair_ctl, 0, ZMQ_POLLIN, 0}};
    if (!msgs) items[0].events = items[1].events = 0; /* cannot relay: only wait for ETERM */
    for (;;) {
        if (zmq_poll(items, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int dropped, n;
        if (items[0].revents & ZMQ_POLLIN) {
            if ((n = recv_parts(k->sock[CH_CONTROL], msgs, MAX_FRAMES, &dropped)) < 0) break;
            if (!dropped) peek_interrupt(k, msgs, n);
            send_parts(k->pair_ctl, msgs, n); /* the main thread logs what is malformed */
        }
        if (items[1].revents & ZMQ_POLLIN) {
            if ((n = recv_parts(k->pair_ctl, msgs, MAX_FRAMES, &dropped)) < 0) break;
            send_parts(k->sock[CH_CONTROL], msgs, n);
        }
    }
    free(msgs);
    zmq_close(k->sock[CH_CONTROL]);
    zmq_close(k->pair_ctl);
    return NULL;
}

static kernel *check_kernel(lua_State *L) {
    kernel *k = (kernel *)luaL_checkudata(L, 1, KERNEL_MT);
    if (!k->ctx) luaL_error(L, "kernel: closed");
    return k;
}

static void kernel_close(kernel *k) {
    if (!k->ctx) return;
    int linger = 2000; /* let the last replies and the final status reach the client */
    for (int c = 0; c < CH_N; c++) {
        int threaded = (c == CH_CONTROL && k->ctl_started) || (c == CH_HB && k->hb_started);
        if (k->sock[c] && !threaded) {
            zmq_setsockopt(k->sock[c], ZMQ_LINGER, &linger, sizeof linger);
            zmq_close(k->sock[c]);
        }
        k->sock[c] = NULL;
    }
    if (k->pair_main) zmq_close(k->pair_main);
    if (!k->ctl_started && k->pair_ctl) zmq_close(k->pair_ctl);
    k->pair_main = k->pair_ctl = NULL;
    zmq_ctx_shutdown(k->ctx); /* the threads' blocking calls return ETERM */
    if (k->hb_started) pthread_join(k->hb_thread, NULL);
    if (k->ctl_started) pthread_join(k->ctl_thread, NULL);
    k->hb_started = k->ctl_started = 0;
    zmq_ctx_term(k->ctx);
    k->ctx = NULL;
    if (k->key) {
        OPENSSL_cleanse(k->key, k->keylen);
        free(k->key);
        k->key = NULL;
    }
}

static int l_kernel_gc(lua_State *L) {
    kernel_close((kernel *)luaL_checkudata(L, 1, KERNEL_MT));
    return 0;
}

static int l_kernel_close(lua_State *L) {
    kernel *k = (kernel *)luaL_checkudata(L, 1, KERNEL_MT);
    kernel_close(k);
    return 0;
}

static const char *opt_string(lua_State *L, const char *field, const char *dflt, size_t *len) {
    lua_getfield(L, 1, field);
    const char *s = dflt;
    if (len) *len = strlen(dflt);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "kernel.open: %s must be a string", field);
        s = lua_tolstring(L, -1, len);
    }
    lua_pop(L, 1); /* the string stays alive in the table */
    return s;
}

/* binds socket c on transport://ip:port (port 0: a free port, read back) */
static void bind_channel(lua_State *L, kernel *k, int c, int type, const char *transport, const char *ip) {
    char field[32];
    snprintf(field, sizeof field, "%s_port", CH_NAMES[c]);
    lua_getfield(L, 1, field);
    int isnum;
    lua_Integer port = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || port < 0 || port > 65535)
        luaL_error(L, "kernel.open: %s must be a port number (0 to 65535)", field);
    k->sock[c] = zmq_socket(k->ctx, type);
    if (!k->sock[c]) luaL_error(L, "kernel.open: %s socket: %s", CH_NAMES[c], zmq_strerror(errno));
    int64_t maxsize = MAX_FRAME_BYTES;
    zmq_setsockopt(k->sock[c], ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
    int linger = 0;
    zmq_setsockopt(k->sock[c], ZMQ_LINGER, &linger, sizeof linger);
    char endpoint[512];
    if (strcmp(transport, "ipc") == 0) {
        if (port == 0) luaL_error(L, "kernel.open: ipc transport needs %s", field);
        snprintf(endpoint, sizeof endpoint, "ipc://%s-%d", ip, (int)port);
    } else if (port == 0) {
        snprintf(endpoint, sizeof endpoint, "%s://%s:*", transport, ip);
    } else {
        snprintf(endpoint, sizeof endpoint, "%s://%s:%d", transport, ip, (int)port);
    }
    if (zmq_bind(k->sock[c], endpoint) != 0)
        luaL_error(L, "kernel.open: cannot bind the %s socket to %s: %s", CH_NAMES[c], endpoint,
                   zmq_strerror(errno));
    char last[512];
    size_t len = sizeof last;
    k->ports[c] = (int)port;
    if (port == 0 && zmq_getsockopt(k->sock[c], ZMQ_LAST_ENDPOINT, last, &len) == 0) {
        const char *colon = strrchr(last, ':');
        if (colon) k->ports[c] = atoi(colon + 1);
    }
}

static int l_open(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t ipl, keylen;
    const char *transport = opt_string(L, "transport", "tcp", NULL);
    const char *ip = opt_string(L, "ip", "127.0.0.1", &ipl);
    const char *key = opt_string(L, "key", "", &keylen);
    if (strcmp(transport, "tcp") != 0 && strcmp(transport, "ipc") != 0)
        return luaL_error(L, "kernel.open: transport must be \"tcp\" or \"ipc\", got \"%s\"", transport);
    if (ipl > 400 || strlen(ip) != ipl) return luaL_error(L, "kernel.open: bad ip");
    /* the userdata first: an error below leaves an object that __gc closes */
    kernel *k = (kernel *)lua_newuserdatauv(L, sizeof *k, 0);
    memset(k, 0, sizeof *k);
    luaL_setmetatable(L, KERNEL_MT);
    k->ctx = zmq_ctx_new();
    if (!k->ctx) return luaL_error(L, "kernel.open: zmq_ctx_new: %s", zmq_strerror(errno));
    k->key = malloc(keylen + 1);
    if (!k->key) return luaL_error(L, "kernel.open: out of memory");
    memcpy(k->key, key, keylen + 1);
    k->keylen = keylen;
    bind_channel(L, k, CH_SHELL, ZMQ_ROUTER, transport, ip);
    bind_channel(L, k, CH_CONTROL, ZMQ_ROUTER, transport, ip);
    bind_channel(L, k, CH_STDIN, ZMQ_ROUTER, transport, ip);
    bind_channel(L, k, CH_IOPUB, ZMQ_PUB, transport, ip);
    bind_channel(L, k, CH_HB, ZMQ_REP, transport, ip);
    char inproc[64];
    snprintf(inproc, sizeof inproc, "inproc://miwb-control-%p", (void *)k);
    k->pair_main = zmq_socket(k->ctx, ZMQ_PAIR);
    k->pair_ctl = zmq_socket(k->ctx, ZMQ_PAIR);
    if (!k->pair_main || !k->pair_ctl || zmq_bind(k->pair_main, inproc) != 0 ||
        zmq_connect(k->pair_ctl, inproc) != 0)
        return luaL_error(L, "kernel.open: control relay: %s", zmq_strerror(errno));

    /* the threads never take SIGINT: the main thread's handler interrupts the cell */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    k->hb_started = pthread_create(&k->hb_thread, NULL, heartbeat_main, k->sock[CH_HB]) == 0;
    k->ctl_started = pthread_create(&k->ctl_thread, NULL, control_main, k) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!k->hb_started || !k->ctl_started) return luaL_error(L, "kernel.open: cannot start threads");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    return 1;
}

static int l_ports(lua_State *L) {
    kernel *k = check_kernel(L);
    lua_createtable(L, 0, CH_N);
    for (int c = 0; c < CH_N; c++) {
        lua_pushinteger(L, k->ports[c]);
        lua_setfield(L, -2, CH_NAMES[c]);
    }
    return 1;
}

static int l_poll(lua_State *L) {
    kernel *k = check_kernel(L);
    long ms = (long)luaL_optinteger(L, 2, -1);
    zmq_pollitem_t items[2] = {{k->pair_main, 0, ZMQ_POLLIN, 0}, {k->sock[CH_SHELL], 0, ZMQ_POLLIN, 0}};
    for (;;) {
        int rc = zmq_poll(items, 2, ms);
        if (rc < 0 && errno == EINTR) continue; /* SIGINT while idle: nothing to stop */
        if (rc < 0) return luaL_error(L, "kernel.poll: %s", zmq_strerror(errno));
        break;
    }
    if (items[0].revents & ZMQ_POLLIN) lua_pushliteral(L, "control"); /* control first */
    else if (items[1].revents & ZMQ_POLLIN) lua_pushliteral(L, "shell");
    else lua_pushnil(L);
    return 1;
}

static void *channel_socket(lua_State *L, kernel *k, int arg, int sending) {
    static const char *const names[] = {"shell", "control", "iopub", "stdin", NULL};
    int c = luaL_checkoption(L, arg, NULL, names);
    if (c == 0) return k->sock[CH_SHELL];
    if (c == 1) return k->pair_main;
    if (c == 2) {
        if (!sending) luaL_error(L, "kernel.recv: iopub is send-only");
        return k->sock[CH_IOPUB];
    }
    return k->sock[CH_STDIN];
}

static int l_recv(lua_State *L) {
    kernel *k = check_kernel(L);
    void *s = channel_socket(L, k, 2, 0);
    /* frames go straight into Lua strings, each held by a box until copied */
    lua_newtable(L);
    int list = lua_gettop(L), n = 0, more = 1, too_many = 0;
    frame_box *b = (frame_box *)lua_newuserdatauv(L, sizeof *b, 0);
    b->live = 0;
    luaL_setmetatable(L, FRAME_BOX);
    while (more) {
        zmq_msg_init(&b->m);
        b->live = 1;
        while (zmq_msg_recv(&b->m, s, ZMQ_DONTWAIT) < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            zmq_msg_close(&b->m);
            b->live = 0;
            if (e == EAGAIN && n == 0) {
                lua_pushnil(L);
                lua_pushliteral(L, "no message");
                return 2;
            }
            return luaL_error(L, "kernel.recv: %s", zmq_strerror(e));
        }
        more = zmq_msg_more(&b->m);
        if (n < MAX_FRAMES) {
            lua_pushlstring(L, (const char *)zmq_msg_data(&b->m), zmq_msg_size(&b->m));
            lua_rawseti(L, list, ++n);
        } else {
            too_many = 1;
        }
        zmq_msg_close(&b->m);
        b->live = 0;
    }
    if (too_many) {
        lua_pushnil(L);
        lua_pushfstring(L, "more than %d frames", MAX_FRAMES);
        return 2;
    }
    lua_settop(L, list);
    lua_pushcfunction(L, l_split);
    lua_pushvalue(L, list);
    lua_pushlstring(L, k->key, k->keylen);
    lua_call(L, 2, 2);
    return 2;
}

static int l_send(lua_State *L) {
    kernel *k = check_kernel(L);
    void *s = channel_socket(L, k, 2, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    kframe parts[4];
    for (int i = 0; i < 4; i++) parts[i].p = luaL_checklstring(L, i + 4, &parts[i].n);
    char hex[SIG_HEX + 1] = "";
    if (k->keylen > 0 && kernel_sign(k->key, k->keylen, parts, hex) != 0)
        return luaL_error(L, "kernel.send: HMAC failed");
    lua_Integer nid = luaL_len(L, 3);
    for (lua_Integer i = 1; i <= nid; i++) {
        lua_geti(L, 3, i);
        size_t len;
        const char *id = lua_tolstring(L, -1, &len);
        if (!id) return luaL_error(L, "kernel.send: identity %d is not a string", (int)i);
        zmq_send(s, id, len, ZMQ_SNDMORE);
        lua_pop(L, 1);
    }
    zmq_send(s, DELIM, sizeof DELIM - 1, ZMQ_SNDMORE);
    zmq_send(s, hex, strlen(hex), ZMQ_SNDMORE);
    for (int i = 0; i < 4; i++) {
        if (zmq_send(s, parts[i].p, parts[i].n, i < 3 ? ZMQ_SNDMORE : 0) < 0 && errno != EAGAIN)
            return luaL_error(L, "kernel.send: %s", zmq_strerror(errno));
    }
    return 0;
}

void mwl_open_kernel(lua_State *L) {
    if (luaL_newmetatable(L, KERNEL_MT)) {
        static const luaL_Reg methods[] = {{"poll", l_poll}, {"recv", l_recv}, {"send", l_send},
                                           {"ports", l_ports}, {"close", l_kernel_close}, {NULL, NULL}};
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_kernel_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_kernel_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, FRAME_BOX)) {
        lua_pushcfunction(L, frame_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"open", l_open}, {"split", l_split}, {"sign", l_sign},
                                     {"pcall", l_pcall}, {"now", l_now},
                                     {"base64", l_base64}, {"exe", l_exe}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    lua_setfield(L, -2, "_kernel");
}
