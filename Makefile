# lasync build. `make` builds the interpreter build/lasync, the C module build/lib/lasync/core.so
# and the static library build/liblasync.a; `make test` runs the spec suite; `make check` runs it
# under ASan+UBSan and under valgrind; `make bench` runs the benchmarks; `make install`.

PREFIX ?= /usr/local
LUA_VERSION ?= 5.4
LUA_PC ?= lua5.4
BUILD ?= build
LUADIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)
CMODDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
BINDIR ?= $(PREFIX)/bin
INCDIR ?= $(PREFIX)/include
LIBDIR ?= $(PREFIX)/lib

PKG_CFLAGS := $(shell pkg-config --cflags $(LUA_PC) libuv libcurl)
UV_LIBS := $(shell pkg-config --libs libuv libcurl)
LUA_LIBS := $(shell pkg-config --libs $(LUA_PC))

CC ?= cc
OPT ?= -O2 -g
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes
SAN ?=
CFLAGS_ALL := -std=c99 -D_GNU_SOURCE $(OPT) $(WARN) $(SAN) -fPIC -fvisibility=hidden \
  $(PKG_CFLAGS) -DLASYNC_LUADIR='"$(LUADIR)"' -DLASYNC_CMODDIR='"$(CMODDIR)"' $(CFLAGS)

CORE_SRC := csrc/error.c csrc/timer.c csrc/sched.c csrc/task.c csrc/scope.c csrc/waitset.c \
  csrc/ops.c csrc/req.c csrc/subsys.c csrc/context.c csrc/loop.c csrc/http.c
CORE_SRC += csrc/fs.c csrc/dns.c csrc/signal.c
CORE_SRC += csrc/stream.c csrc/process.c
CORE_SRC += csrc/thread.c
CORE_OBJ := $(CORE_SRC:csrc/%.c=$(BUILD)/obj/%.o)
HDRS := $(wildcard csrc/*.h)

LUA := lua5.4
BUSTED := $(LUA) /usr/bin/busted

.PHONY: all test check check-asan check-valgrind bench install uninstall clean demo lint \
  embed-example

all: $(BUILD)/lasync $(BUILD)/lib/lasync/core.so $(BUILD)/liblasync.a $(BUILD)/embed-host \
  $(BUILD)/close-early-host

$(BUILD)/obj/%.o: csrc/%.c $(HDRS) | $(BUILD)/obj
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj $(BUILD)/lib/lasync:
	mkdir -p $@

$(BUILD)/liblasync.a: $(CORE_OBJ)
	rm -f $@
	ar rcs $@ $^

# The C module leaves Lua's symbols to the interpreter that loads it.
$(BUILD)/lib/lasync/core.so: $(CORE_OBJ) | $(BUILD)/lib/lasync
	$(CC) -shared $(SAN) -o $@ $^ $(UV_LIBS) $(LDFLAGS)

$(BUILD)/lasync: $(BUILD)/obj/main.o $(BUILD)/liblasync.a
	$(CC) $(SAN) -Wl,-E -o $@ $^ $(UV_LIBS) $(LUA_LIBS) -lm $(LDFLAGS)

$(BUILD)/embed-host: examples/embed/host.c $(BUILD)/liblasync.a $(HDRS)
	$(CC) $(CFLAGS_ALL) -Icsrc -o $@ $< $(BUILD)/liblasync.a $(UV_LIBS) $(LUA_LIBS) -lm \
	  $(LDFLAGS)

# A test host for spec/embed_spec.lua: closes its Lua state while requests are in flight.
$(BUILD)/close-early-host: spec/support/close_early_host.c $(BUILD)/liblasync.a $(HDRS)
	$(CC) $(CFLAGS_ALL) -Icsrc -o $@ $< $(BUILD)/liblasync.a $(UV_LIBS) $(LUA_LIBS) -lm \
	  $(LDFLAGS)

embed-example: $(BUILD)/embed-host

# The demo: what README's first command runs.
demo: all
	$(BUILD)/lasync examples/tour.lua

test: all
	$(BUSTED)
	$(LUA) docs/check_examples.lua
	$(LUA) docs/check_links.lua

lint:
	luacheck lua spec bench examples

# Sanitizers: a separate build tree, loaded into lua5.4 with the ASan runtime preloaded.
# LeakSanitizer runs in lua5.4 (the spec suite) and in lasync's own programs only (lasync,
# close-early-host): the programs the specs start (sh, bash, python3, ...) inherit LD_PRELOAD
# and ASAN_OPTIONS, and their own leaks at exit are not lasync's; ASan reads
# spec/support/asan-<program name>.options (include_if_exists with %b), which turns leak
# detection on for lasync's.
ASAN_LIB := $(shell $(CC) -print-file-name=libasan.so)
check-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	  build-asan/lib/lasync/core.so build-asan/lasync build-asan/close-early-host
	LD_PRELOAD=$(ASAN_LIB) \
	  ASAN_OPTIONS=abort_on_error=1:detect_leaks=0:include_if_exists=$(CURDIR)/spec/support/asan-%b.options \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/spec/support/lsan.supp:print_suppressions=0 \
	  LASYNC_BUILD=build-asan UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(BUSTED) --cpath="build-asan/lib/?.so"

check-valgrind: all
	LASYNC_VALGRIND=1 valgrind --quiet --error-exitcode=99 --leak-check=full \
	  --errors-for-leak-kinds=definite --show-leak-kinds=definite --trace-children=no \
	  --suppressions=$(CURDIR)/spec/support/valgrind.supp \
	  $(BUSTED) --exclude-tags=slow

check: check-asan check-valgrind

bench: all
	bash .ci/deps.sh --bench
	$(LUA) bench/run.lua

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUADIR)/lasync $(DESTDIR)$(CMODDIR)/lasync \
	  $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR)
	install -m 755 $(BUILD)/lasync $(DESTDIR)$(BINDIR)/lasync
	install -m 644 lua/lasync/*.lua $(DESTDIR)$(LUADIR)/lasync/
	install -m 755 $(BUILD)/lib/lasync/core.so $(DESTDIR)$(CMODDIR)/lasync/core.so
	install -m 644 csrc/lasync.h $(DESTDIR)$(INCDIR)/lasync.h
	install -m 644 $(BUILD)/liblasync.a $(DESTDIR)$(LIBDIR)/liblasync.a

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/lasync $(DESTDIR)$(CMODDIR)/lasync/core.so \
	  $(DESTDIR)$(INCDIR)/lasync.h $(DESTDIR)$(LIBDIR)/liblasync.a
	rm -rf $(DESTDIR)$(LUADIR)/lasync

clean:
	rm -rf build build-asan
