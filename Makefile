# miwb - mechanistic-interpretability workbench
#
#   make          build the core library, the Lua module (build/miwb.so) and the miwb program
#   make deps     install the Debian packages that are missing (says what it does)
#   make fixture-deps   the same plus PyTorch, to regenerate tests/fixtures with gen_*.py
#   make notebook-deps  the same plus Jupyter's client, nbconvert and Chromium (kernel and HTML tests)
#   make notebook       opens notebooks/intro_mech_interp.ipynb in Jupyter with the miwb kernel
#   make test     C unit tests + Lua tests; ends with "N passed, N failed"
#   make asan     the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz     libFuzzer targets (model files, pickle, config, tokenizer), a few seconds each
#   make fuzz-api random misuse of the whole Lua API under ASan + UBSan (FUZZ_API_CALLS, _SEEDS)
#   make bench    speed benchmarks (ratios against plain cblas_sgemm / C loops, same run; the
#                 sweep runner's overhead against its bounds)
#   make demo     the main experiment (scripts/induction.lua) on the bundled default model
#   make install  miwb, the Lua module, scripts, bundled model, man page under PREFIX (DESTDIR too)
#   make uninstall  removes what make install put there
#
# Layout: core/ is a C library with no Lua in it; lua/*.c binds it; lua/miwb/*.lua is the
# Lua-side library, compiled into the binary and the module; tests/ mirrors core/ and lua/.

DEB_PACKAGES := build-essential pkg-config lua5.4 liblua5.4-dev libopenblas-dev liblapacke-dev \
                libcjson-dev libreadline-dev libutf8proc-dev gnuplot-nox \
                python3-numpy python3-regex wordnet-base wamerican curl libssl-dev parallel \
                clang-14 libclang-rt-14-dev libpcre2-dev libsentencepiece-dev \
                libzmq3-dev
# Only to regenerate the committed test fixtures (tests/fixtures/gen_*.py): `make fixture-deps`.
# (tests/fixtures/gen_tokenizers.js also needs Node and the npm package `tokenizers`: see its header.)
FIXTURE_PACKAGES := python3-torch python3-sentencepiece
# The Jupyter client, nbconvert and headless Chromium that the kernel, notebook and HTML-view tests
# drive (several hundred MB with Chromium, so not in every `make deps`; CI installs them, the tests print
# SKIP without them): `make notebook-deps`. `make notebook` also needs jupyter-notebook.
NOTEBOOK_PACKAGES := python3-jupyter-client jupyter-nbconvert chromium

BUILD    ?= build
CC       ?= cc
CXX      ?= c++
OPT      ?= -O2
SANFLAGS ?=
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=gnu11 -Wall -Wextra -fPIC -pthread $(SANFLAGS) \
            -I/usr/include/lua5.4 -I/usr/include/x86_64-linux-gnu -Icore -Ivendor -Ilua
CXXFLAGS ?= $(OPT) -g
# -fno-sanitize=vptr: UBSan's C++ type checks need its C++ runtime, which the C linker leaves out
CXXFLAGS += -std=c++17 -Wall -Wextra -fPIC -pthread $(SANFLAGS) -fno-sanitize=vptr -Icore
# WERROR=1 turns warnings into errors (CI builds that way: .ci/run)
ifeq ($(WERROR),1)
CFLAGS   += -Werror
CXXFLAGS += -Werror
endif
LDLIBS   := -lopenblas -llapacke -lcjson -lutf8proc -lzmq -lcrypto -lpcre2-8 -lsentencepiece -lstdc++ -lm -pthread
LDFLAGS  += $(SANFLAGS)

CORE_SRC := $(wildcard core/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o) $(patsubst %.cc,$(BUILD)/%.o,$(wildcard core/*.cc))
BIND_SRC := $(filter-out lua/main.c,$(wildcard lua/*.c))
BIND_OBJ := $(BIND_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/lua_embed.o
LUA_SRC  := $(wildcard lua/miwb/*.lua)
CTEST_SRC := $(wildcard tests/c/test_*.c)
CTESTS   := $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
TOOL_SRC := $(wildcard tools/*.c)
TOOLS    := $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%)
HEADERS  := $(wildcard core/*.h core/*.def vendor/*.h lua/*.h)

.PHONY: all deps fixture-deps notebook-deps notebook check-deps test asan bench demo clean fuzz install uninstall
all: check-deps $(BUILD)/libmwcore.a $(BUILD)/miwb.so $(BUILD)/miwb $(CTESTS) $(TOOLS)

# The other targets call this: when a header is missing, install the packages.
check-deps:
	@test -f /usr/include/lua5.4/lua.h -a -f /usr/include/cjson/cJSON.h \
	   -a -f /usr/include/x86_64-linux-gnu/cblas.h -a -f /usr/include/utf8proc.h \
	   -a -f /usr/include/readline/readline.h -a -f /usr/include/lapacke.h \
	   -a -f /usr/include/openssl/evp.h -a -f /usr/include/pcre2.h -a -f /usr/include/zmq.h \
	   -a -f /usr/include/sentencepiece_processor.h || $(MAKE) deps

fixture-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) $(FIXTURE_PACKAGES)"

notebook-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) $(NOTEBOOK_PACKAGES)"

# the kernelspec goes into build/jupyter-prefix, found through JUPYTER_PATH (nothing installed system-wide)
notebook: all
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES) jupyter-notebook"
	$(BUILD)/miwb kernel install --prefix $(BUILD)/jupyter-prefix
	JUPYTER_PATH=$(abspath $(BUILD))/jupyter-prefix/share/jupyter jupyter notebook notebooks/intro_mech_interp.ipynb

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	else echo "deps: installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; fi

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
# the normal fill vectorizes (no errno from sqrt) and gives the same bits everywhere (no fused
# multiply-add), see core/rng.c
$(BUILD)/core/rng.o: CFLAGS += -fno-math-errno -ffp-contract=off -ftree-vectorize -fvect-cost-model=dynamic

$(BUILD)/%.o: %.cc $(HEADERS)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/libmwcore.a: $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# Lua sources are embedded so that `require "miwb"` needs only LUA_CPATH.
$(BUILD)/gen/lua_embed.c: $(LUA_SRC) tools/embed.lua
	@mkdir -p $(dir $@)
	lua5.4 tools/embed.lua $@ $(LUA_SRC)

$(BUILD)/gen/lua_embed.o: $(BUILD)/gen/lua_embed.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/miwb.so: $(BIND_OBJ) $(BUILD)/libmwcore.a
	$(CC) -shared $(LDFLAGS) -o $@ $(BIND_OBJ) $(BUILD)/libmwcore.a $(LDLIBS)

$(BUILD)/miwb: $(BUILD)/lua/main.o $(BIND_OBJ) $(BUILD)/libmwcore.a
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/lua/main.o $(BIND_OBJ) $(BUILD)/libmwcore.a \
	    -llua5.4 -lreadline $(LDLIBS) -Wl,-E

$(BUILD)/tests/%: tests/c/%.c tests/c/mwtest.h $(BUILD)/libmwcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/c $(LDFLAGS) -o $@ $< $(BUILD)/libmwcore.a $(LDLIBS)

# stand-alone C programs (tools/NAME.c -> build/tools/NAME), e.g. the training driver mwtrain
$(BUILD)/tools/%: tools/%.c $(BUILD)/libmwcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmwcore.a $(LDLIBS)

test: all
	@BUILD=$(BUILD) sh tests/run.sh

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

bench: all
	@sh bench/run.sh

# libFuzzer targets (fuzz/fuzz_*.c), each run FUZZ_SECONDS (default 6); see fuzz/run.sh
fuzz:
	@sh fuzz/run.sh

# fuzz/api.lua through fuzz/api.sh on the sanitizer build; findings live in tests/fuzz/api/
.PHONY: fuzz-api
fuzz-api:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all
	@BUILD=build-asan sh fuzz/api.sh

demo: all
	$(BUILD)/miwb scripts/induction.lua

# make install [PREFIX=/usr/local] [DESTDIR=/staging]: the program on the PATH, the module where the
# stock lua5.4 looks ($(PREFIX)/lib/lua/5.4/?.so is on its package.cpath for /usr/local and /usr),
# the scripts and the bundled model in $(PREFIX)/share/miwb (miwb finds them from its own path),
# and the man page miwb(1).
PREFIX   ?= /usr/local
BINDIR   := $(DESTDIR)$(PREFIX)/bin
LUACDIR  := $(DESTDIR)$(PREFIX)/lib/lua/5.4
SHAREDIR := $(DESTDIR)$(PREFIX)/share/miwb
MANDIR   := $(DESTDIR)$(PREFIX)/share/man/man1

install: $(BUILD)/miwb $(BUILD)/miwb.so
	install -d $(BINDIR) $(LUACDIR) $(SHAREDIR)/scripts $(SHAREDIR)/models $(MANDIR)
	install -m 755 $(BUILD)/miwb $(BINDIR)/miwb
	install -m 644 $(BUILD)/miwb.so $(LUACDIR)/miwb.so
	cp -R scripts/. $(SHAREDIR)/scripts/
	if [ -d models/attn_only_2L ]; then cp -R models/attn_only_2L $(SHAREDIR)/models/; fi
	install -m 644 docs/miwb.1 $(MANDIR)/miwb.1

uninstall:
	rm -f $(BINDIR)/miwb $(LUACDIR)/miwb.so $(MANDIR)/miwb.1
	rm -rf $(SHAREDIR)

clean:
	rm -rf build build-asan
