/* main.c - the miwb program: a Lua 5.4 host with the miwb module preloaded, and its REPL.
 *
 *   miwb script.lua [args...]   run a script; args in the global `arg` (arg[0] = the script)
 *   miwb -e 'code'              run code (may be repeated; runs before a script)
 *   miwb -i [script.lua]        run the script (if any), then the REPL
 *   miwb -                      run standard input as a script
 *   miwb NAME [args...]         a subcommand: require("miwb").cli[NAME](args) (NAME has no ".lua")
 *   (a script path missing from the working directory is looked up in PREFIX/share/miwb)
 *   miwb --help | --version
 *   miwb                        the REPL
 *
 * The module is the global `mi` in every mode. The REPL follows lua.c: a line is first tried as
 * `return <line>` so bare expressions print; an incomplete chunk (syntax error at <eof>) asks for
 * more lines; errors print a traceback and the REPL goes on. Its Lua side (showing values, Tab
 * completion, help(f), compiling input with top-level locals kept) is lua/miwb/repl.lua. Ctrl-C during a computation installs a hook that raises "interrupted!" at the
 * next Lua instruction (a long C operation finishes first); Ctrl-C at the prompt drops the line.
 * With a terminal on stdin, input goes through GNU readline with history in ~/.miwb_history;
 * otherwise lines are read plainly (so tests can pipe input).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "mw_tensor.h"

int luaopen_miwb(lua_State *L);

#define PROGNAME "miwb"
#define PROMPT1 "> "
#define PROMPT2 ">> "
#define HISTORY_LINES 1000

static lua_State *globalL = NULL;
static volatile sig_atomic_t prompt_interrupted = 0;

static void usage(FILE *f) {
    fprintf(f,
            "usage: " PROGNAME " [options] [script.lua [args...]]\n"
            "       " PROGNAME " COMMAND [args...]\n"
            "Options:\n"
            "  -e CODE     run CODE (may be repeated; runs before the script)\n"
            "  -i          enter the REPL after running the script / -e code\n"
            "  -           run standard input as a script\n"
            "  --          stop handling options\n"
            "  -h, --help  show this help\n"
            "  -v, --version  show the version\n"
            "With no arguments, " PROGNAME " starts a REPL; help(f) there describes a function.\n"
            "A first argument without a .lua suffix names a command: require('miwb').cli[COMMAND].\n"
            "The module is the global `mi` in scripts, -e code and the REPL (scripts may also\n"
            "write local mi = require(\"miwb\")).\n");
}

/* ------------------------------------------------------------ running code (as lua.c) */

/* Ctrl-C while Lua runs: the handler only sets a hook, which raises the error at a safe point. */
static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void laction(int sig) {
    int flag = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
    signal(sig, SIG_DFL); /* a second Ctrl-C kills the process */
    lua_sethook(globalL, lstop, flag, 1);
    mw_interrupt(); /* and the tensor core's long loops stop with "op: interrupted" */
}

static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* calls the function below narg arguments with a traceback handler and SIGINT handling */
static int docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    globalL = L;
    void (*prev)(int) = signal(SIGINT, laction);
    mw_interrupt_clear();
    int status = lua_pcall(L, narg, nres, base);
    mw_interrupt_clear();
    signal(SIGINT, prev == SIG_ERR ? SIG_DFL : prev);
    lua_sethook(L, NULL, 0, 0); /* an interrupt that came too late must not fire later */
    lua_remove(L, base);
    return status;
}

static void report(lua_State *L, int status) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, PROGNAME ": %s\n", msg ? msg : "(error object is not a string)");
        fflush(stderr);
        lua_pop(L, 1);
    }
}

static int dochunk(lua_State *L, int status) {
    if (status == LUA_OK) status = docall(L, 0, 0);
    report(L, status);
    return status;
}

/* ------------------------------------------------------------ printing REPL results */

/* Bare results are shown by repl.show (lua/miwb/repl.lua): tensors with their __tostring, tables
 * one level deep, strings as they are at the top level. The REPL's Lua code (showing, completion,
 * help, compiling input) lives there, as plain functions other front ends reuse. */
static const char SHOW_KEY = 's'; /* registry key: the show function */

static void print_results(lua_State *L) {
    int n = lua_gettop(L);
    if (n == 0) return;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &SHOW_KEY);
    lua_insert(L, 1);
    if (docall(L, n, 1) == LUA_OK) {
        puts(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
        fflush(stdout);
    } else {
        report(L, LUA_ERRRUN);
        return;
    }
    lua_settop(L, 0);
}

/* ------------------------------------------------------------ Tab completion */

/* repl.complete(word) -> sorted list of completions of a dotted/colon path: "mi.ze" -> "mi.zeros";
 * "model:to_s" -> "model:to_str_tokens"; a bare word completes globals and keywords. */
static const char COMPLETE_KEY = 'c'; /* registry key: the complete function */
static lua_State *completeL = NULL;

/* readline asks for match number `state` (0 first); the list is computed at state 0 and kept in
 * the registry until the next completion */
static char *complete_generator(const char *text, int state) {
    lua_State *L = completeL;
    static const char LIST_KEY = 'l';
    if (state == 0) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &COMPLETE_KEY);
        lua_pushstring(L, text);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
        }
        lua_rawsetp(L, LUA_REGISTRYINDEX, &LIST_KEY);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LIST_KEY);
    lua_rawgeti(L, -1, state + 1);
    char *r = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) r = strdup(lua_tostring(L, -1));
    lua_pop(L, 2);
    return r;
}

static char **complete(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    rl_completion_append_character = '\0'; /* reset by readline before each completion */
    return rl_completion_matches(text, complete_generator);
}

/* ------------------------------------------------------------ reading lines */

static int use_readline = 0;
static char history_path[4096];

static void prompt_sigint(int sig) {
    (void)sig;
    prompt_interrupted = 1;
}

/* Ctrl-C at the prompt: readline's own signal handling is off and SIGINT only sets a flag,
 * which makes read() fail with EINTR; our getc then hands readline the key C-c (byte 3, never
 * typed as such while the terminal generates signals), bound to rl_ctrl_c: it shows "^C",
 * accepts the line, and read_line drops it. Plain readline() keeps typed-ahead input in its
 * buffer between lines, so pasting several lines works. */
static volatile sig_atomic_t line_interrupted = 0;

static int rl_getc_interruptible(FILE *stream) {
    for (;;) {
        if (prompt_interrupted) {
            prompt_interrupted = 0;
            return 3;
        }
        unsigned char c;
        ssize_t n = read(fileno(stream), &c, 1);
        if (n == 1) return c;
        if (n == 0) return EOF;
        if (errno != EINTR) return EOF;
    }
}

static int rl_ctrl_c(int count, int key) {
    (void)count;
    line_interrupted = 1;
    rl_point = rl_end;
    rl_insert_text("^C");
    rl_redisplay();
    return rl_newline(1, key);
}

static char *readline_interruptible(const char *prompt, int *interrupted) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = prompt_sigint; /* no SA_RESTART: read() must fail with EINTR */
    sigemptyset(&sa.sa_mask);
    prompt_interrupted = 0;
    line_interrupted = 0;
    sigaction(SIGINT, &sa, &old);
    char *line = readline(prompt);
    sigaction(SIGINT, &old, NULL);
    *interrupted = line_interrupted;
    return line;
}

/* one line without its newline, pushed on the stack; returns 1, or 0 at end of input, or 2
 * when Ctrl-C dropped the line */
static int read_line(lua_State *L, const char *prompt) {
    if (use_readline) {
        int interrupted;
        char *line = readline_interruptible(prompt, &interrupted);
        if (line == NULL) return 0;
        if (interrupted) {
            free(line);
            return 2;
        }
        lua_pushstring(L, line);
        free(line);
        return 1;
    }
    fputs(prompt, stdout);
    fflush(stdout);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int c, any = 0;
    while ((c = getchar()) != EOF && c != '\n') {
        luaL_addchar(&b, (char)c);
        any = 1;
    }
    luaL_pushresult(&b);
    if (c == EOF && !any) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

static void add_history_entry(const char *line) {
    if (!use_readline || line[0] == '\0') return;
    add_history(line);
    if (history_path[0]) append_history(1, history_path);
}

/* ------------------------------------------------------------ the REPL (as lua.c) */

static const char COMPILE_KEY = 'k'; /* registry key: repl.compile */
#define INCOMPLETE 100               /* compile_source: the chunk needs more lines */

/* compiles the source at index src with repl.compile (which tries `return <src>` first and keeps
 * top-level locals as globals); pushes the chunk and returns LUA_OK, or pushes the message and
 * returns LUA_ERRSYNTAX, or INCOMPLETE (message pushed too) when the chunk only lacks lines */
static int compile_source(lua_State *L, int src) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &COMPILE_KEY);
    lua_pushvalue(L, src);
    lua_pushliteral(L, "=stdin");
    if (lua_pcall(L, 2, 3, 0) != LUA_OK) return LUA_ERRSYNTAX;
    if (!lua_isnil(L, -3)) {
        lua_pop(L, 2);
        return LUA_OK;
    }
    int more = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_remove(L, -2);
    return more ? INCOMPLETE : LUA_ERRSYNTAX;
}

/* reads a whole statement, possibly over several lines; leaves the compiled chunk (or the error
 * message) on the stack. Returns -1 at end of input, -2 when Ctrl-C dropped the input, else a
 * load status. */
static int load_statement(lua_State *L) {
    lua_settop(L, 0);
    int r = read_line(L, PROMPT1);
    if (r == 0) return -1;
    if (r == 2) { lua_settop(L, 0); return -2; }
    int status;
    for (;;) {
        status = compile_source(L, 1);
        if (status != INCOMPLETE) break;
        r = read_line(L, PROMPT2);
        if (r == 0) { /* end of input inside a chunk: report why it is incomplete */
            status = LUA_ERRSYNTAX;
            break;
        }
        lua_remove(L, -2); /* the message */
        if (r == 2) { lua_settop(L, 0); return -2; }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
    add_history_entry(lua_tostring(L, 1));
    lua_remove(L, 1); /* the source; the chunk (or error message) stays */
    return status;
}

static void repl(lua_State *L) {
    /* between reading a line and running it, a Ctrl-C must not kill the REPL */
    signal(SIGINT, SIG_IGN);
    use_readline = isatty(STDIN_FILENO);
    if (use_readline) {
        const char *home = getenv("HOME");
        history_path[0] = '\0';
        if (home && *home) {
            snprintf(history_path, sizeof history_path, "%s/.miwb_history", home);
            if (read_history(history_path) != 0) write_history(history_path); /* create it */
        }
        rl_readline_name = PROGNAME;
        rl_catch_signals = 0;
        rl_getc_function = rl_getc_interruptible;
        rl_bind_key(3, rl_ctrl_c);
        completeL = L;
        rl_attempted_completion_function = complete;
        rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/^%~#[]";
    }
    int status;
    while ((status = load_statement(L)) != -1) {
        if (status == -2) continue;
        if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK) print_results(L);
        else report(L, status);
        lua_settop(L, 0);
    }
    lua_settop(L, 0);
    fputs("\n", stdout);
    fflush(stdout);
    if (use_readline && history_path[0]) history_truncate_file(history_path, HISTORY_LINES);
}

/* ------------------------------------------------------------ main */

/* arg table as lua.c: arg[0] = script, arg[1..] = its arguments, negative = what came before */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int push_module(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "miwb");
    return docall(L, 1, 1);
}

/* The share folder of an installed miwb (make install): PREFIX/share/miwb next to PREFIX/bin/miwb,
 * found from the executable's own path, so an install under DESTDIR or moved elsewhere works too.
 * A script path that does not exist here (scripts/induction.lua) is looked up there, so that the
 * scripts and the bundled model run from any working directory. Returns NULL when absent. */
static const char *share_path(const char *rel) {
    static char exe[4096], out[8192];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = '\0'; /* the bin folder */
    if (snprintf(out, sizeof out, "%s/../share/" PROGNAME "/%s", exe, rel) >= (int)sizeof out) return NULL;
    return access(out, R_OK) == 0 ? out : NULL;
}

static int run_script(lua_State *L, const char *fname, int nargs_from, int argc, char **argv) {
    if (strcmp(fname, "-") == 0) fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        for (int i = nargs_from; i < argc; i++) lua_pushstring(L, argv[i]);
        status = docall(L, argc - nargs_from, 0);
    }
    report(L, status);
    return status;
}

/* `miwb NAME args...`: calls require("miwb").cli[NAME](args) (args: a Lua list of strings).
 * Returns the exit code: a number the command returns, 1 if it returns false or raises, else 0;
 * -1 when there is no such command and file_exists (the caller then runs the file). */
static int run_command(lua_State *L, int argc, char **argv, int file_exists) {
    const char *name = argv[1];
    if (push_module(L) != LUA_OK) {
        report(L, LUA_ERRRUN);
        return 1;
    }
    lua_getfield(L, -1, "cli");
    if (lua_istable(L, -1)) lua_getfield(L, -1, name);
    else lua_pushnil(L);
    if (lua_isnil(L, -1) && file_exists) return -1;
    if (lua_isnil(L, -1)) {
        fprintf(stderr, PROGNAME ": unknown command '%s'", name);
        if (lua_istable(L, -2)) {
            const char *sep = " (commands:";
            lua_pushnil(L);
            while (lua_next(L, -3)) {
                if (lua_type(L, -2) == LUA_TSTRING) {
                    fprintf(stderr, "%s %s", sep, lua_tostring(L, -2));
                    sep = ",";
                }
                lua_pop(L, 1);
            }
            if (sep[0] == ',') fputs(")", stderr);
        }
        fputs("; scripts end in .lua; see " PROGNAME " --help\n", stderr);
        return 2;
    }
    create_arg_table(L, argv, argc, 1);
    lua_createtable(L, argc - 2, 0);
    for (int i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    int status = docall(L, 1, 1);
    if (status != LUA_OK) {
        report(L, status);
        return 1;
    }
    if (lua_isinteger(L, -1)) return (int)lua_tointeger(L, -1);
    if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) return 1;
    return 0;
}

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int *result = (int *)lua_touserdata(L, 3);
    luaL_checkversion(L);
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_miwb);
    lua_setfield(L, -2, "miwb");
    lua_pop(L, 1);
    /* the module is the global `mi` in every mode (scripts may still require it) */
    if (push_module(L) != LUA_OK) {
        report(L, LUA_ERRRUN);
        *result = 1;
        return 0;
    }
    lua_setglobal(L, "mi");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "miwb.repl");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "show");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SHOW_KEY);
    lua_getfield(L, -1, "complete");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &COMPLETE_KEY);
    lua_getfield(L, -1, "compile");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &COMPILE_KEY);
    lua_settop(L, 3);

    /* a subcommand; a file of that name is run as a script when no such command exists */
    if (argc >= 2 && argv[1][0] != '-' && !has_suffix(argv[1], ".lua") &&
        strchr(argv[1], '/') == NULL) {
        int r = run_command(L, argc, argv, access(argv[1], R_OK) == 0);
        if (r != -1) {
            *result = r;
            return 0;
        }
        lua_settop(L, 3);
    }

    int interactive = 0, script = 0, ran_code = 0;
    /* first pass: options up to the script (the -e code runs after arg is set) */
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || strcmp(a, "-") == 0) { script = i; break; }
        if (strcmp(a, "--") == 0) { if (i + 1 < argc) script = i + 1; break; }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            /* the commands the module offers (mi.cli), when it loads */
            if (push_module(L) == LUA_OK && lua_istable(L, -1) &&
                lua_getfield(L, -1, "cli") == LUA_TTABLE) {
                lua_getglobal(L, "table");
                lua_getfield(L, -1, "sort");
                lua_newtable(L);
                int names = lua_gettop(L);
                lua_pushnil(L);
                while (lua_next(L, -5)) {
                    lua_pop(L, 1);
                    if (lua_type(L, -1) == LUA_TSTRING) {
                        lua_pushvalue(L, -1);
                        lua_rawseti(L, names, (lua_Integer)lua_rawlen(L, names) + 1);
                    }
                }
                lua_pushvalue(L, names - 1); /* table.sort */
                lua_pushvalue(L, names);
                lua_call(L, 1, 0);
                if (lua_rawlen(L, names) > 0) {
                    fputs("Commands:", stdout);
                    for (lua_Integer k = 1; k <= (lua_Integer)lua_rawlen(L, names); k++) {
                        lua_rawgeti(L, names, k);
                        printf(" %s", lua_tostring(L, -1));
                        lua_pop(L, 1);
                    }
                    fputs("\n", stdout);
                }
            }
            *result = 0;
            return 0;
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            if (push_module(L) != LUA_OK) { report(L, LUA_ERRRUN); *result = 1; return 0; }
            lua_getfield(L, -1, "version");
            printf(PROGNAME " %s (%s)\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?",
                   LUA_RELEASE);
            *result = 0;
            return 0;
        }
        if (strcmp(a, "-i") == 0) { interactive = 1; continue; }
        if (strcmp(a, "-e") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, PROGNAME ": '-e' needs an argument\n");
                usage(stderr);
                *result = 2;
                return 0;
            }
            i++;
            continue;
        }
        fprintf(stderr, PROGNAME ": unknown option '%s'\n", a);
        usage(stderr);
        *result = 2;
        return 0;
    }
    if (script && strcmp(argv[script], "-") != 0 && argv[script][0] != '/' && access(argv[script], R_OK) != 0) {
        const char *installed = share_path(argv[script]);
        if (installed) argv[script] = (char *)installed;
    }
    create_arg_table(L, argv, argc, script); /* no script: arg[0] = the program */
    /* second pass: run the -e code in order */
    int end = script ? script : argc;
    for (i = 1; i < end; i++) {
        if (strcmp(argv[i], "-e") == 0) {
            const char *code = argv[++i];
            ran_code = 1;
            if (dochunk(L, luaL_loadbuffer(L, code, strlen(code), "=(command line)")) != LUA_OK) {
                *result = 1;
                return 0;
            }
        }
    }
    if (script) {
        if (run_script(L, argv[script], script + 1, argc, argv) != LUA_OK) {
            *result = 1;
            return 0;
        }
    }
    if (interactive || (!script && !ran_code)) {
        lua_getglobal(L, "mi");
        lua_getfield(L, -1, "version");
        printf("miwb %s (%s), the mechanistic-interpretability workbench\n"
               "The module is the global `mi` (as local mi = require(\"miwb\")); help(f) describes a "
               "function. Ctrl-D exits, Ctrl-C interrupts.\n",
               lua_tostring(L, -1) ? lua_tostring(L, -1) : "?", LUA_RELEASE);
        fflush(stdout);
        lua_getfield(L, -2, "repl");
        lua_getfield(L, -1, "help_command");
        lua_setglobal(L, "help");
        lua_settop(L, 0);
        repl(L);
    }
    *result = 0;
    return 0;
}

int main(int argc, char **argv) {
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, PROGNAME ": cannot create the Lua state: not enough memory\n");
        return 1;
    }
    int result = 1;
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    lua_pushlightuserdata(L, &result);
    int status = lua_pcall(L, 3, 0, 0);
    if (status != LUA_OK) {
        fprintf(stderr, PROGNAME ": %s\n", lua_tostring(L, -1));
        result = 1;
    }
    lua_close(L);
    return result;
}
