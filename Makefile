# switchboard - contact-center and notification gateway.
#
#   make            build the daemon and sbctl (build/)
#   make run        install missing packages, start a private Redis and the
#                   daemon on config/dev.conf
#   make test       install missing packages, build under ASan+UBSan, run unit,
#                   integration, systemd and valgrind checks
#   make bench      throughput benchmarks (tests/bench/)
#   make fuzz       build libFuzzer targets (clang) and run each briefly
#   make install    PREFIX=/usr/local DESTDIR=

PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
SAN ?= 0

PKGS := libuv libwebsockets hiredis libcurl jansson libsodium libsystemd \
        gmime-3.0 libesmtp-1.0 openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

ifeq ($(SAN),1)
B := build/asan
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
       -fno-sanitize-recover=undefined
else
B := build
OPT := -O2 -g
endif

WARN := -Wall -Wextra -Wpedantic -Werror -Wno-unused-parameter \
        -Wno-overlength-strings
CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) \
          -DSB_WWW_DIR='"$(PREFIX)/share/switchboard/www"' \
          -DSB_CHAT_DIR='"$(PREFIX)/share/switchboard/chat"' $(WARN) -Isrc -I$(B)/gen \
          $(PKG_CFLAGS) -MMD -MP
LDFLAGS := $(OPT)
LDLIBS := $(PKG_LIBS) -lm

CORE_SRC := $(filter-out src/main.c src/sbctl.c,$(wildcard src/*.c)) \
            $(wildcard channels/*/*.c)
CORE_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(CORE_SRC))
LUA_SRC := $(sort $(wildcard src/lua/lib/*.lua)) $(sort $(wildcard src/lua/*.lua))
GEN_LUA := $(B)/gen/lua_scripts.c
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))

.PHONY: all deps run test unit integration bench fuzz install clean check-tools

all: $(B)/switchboard $(B)/sbctl

deps:
	@sh scripts/deps.sh

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(GEN_LUA): $(LUA_SRC) scripts/embed-lua.sh
	@mkdir -p $(dir $@)
	sh scripts/embed-lua.sh $(LUA_SRC) > $@.tmp && mv $@.tmp $@

$(B)/obj/gen/lua_scripts.o: $(GEN_LUA)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/libsb.a: $(CORE_OBJ) $(B)/obj/gen/lua_scripts.o
	@rm -f $@
	ar rcs $@ $^

$(B)/switchboard: $(B)/obj/src/main.o $(B)/libsb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/sbctl: $(B)/obj/src/sbctl.o $(B)/libsb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: tests/unit/%.c $(B)/libsb.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(B)/libsb.a $(LDLIBS) $(CMOCKA_LIBS)

unit: $(UNIT_BIN)
	@sh tests/run-unit.sh $(UNIT_BIN)

run: deps
	@$(MAKE) --no-print-directory all
	@sh scripts/run-dev.sh

# make test: everything CI runs. The sanitizer build serves the unit and
# integration suites; the plain build serves valgrind and systemd checks.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory SAN=1 all $(patsubst build/%,build/asan/%,$(UNIT_BIN))
	@sh tests/run-all.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@sh tests/bench/bench.sh

fuzz:
	@sh tests/fuzz/build.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/switchboard
	install -m 0755 build/switchboard build/sbctl $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(PREFIX)/share/switchboard/www
	cp -R src/www/. $(DESTDIR)$(PREFIX)/share/switchboard/www/
	install -d $(DESTDIR)$(PREFIX)/share/switchboard/chat
	install -m 0644 channels/webchat/www/* $(DESTDIR)$(PREFIX)/share/switchboard/chat/
	install -d $(DESTDIR)/etc/switchboard
	install -m 0640 config/switchboard.conf $(DESTDIR)/etc/switchboard/switchboard.conf.example
	install -d $(DESTDIR)/etc/switchboard/templates
	cp -R config/templates/. $(DESTDIR)/etc/switchboard/templates/
	install -d $(DESTDIR)/lib/systemd/system $(DESTDIR)/usr/lib/sysusers.d $(DESTDIR)/usr/lib/tmpfiles.d
	install -m 0644 systemd/switchboard.service $(DESTDIR)/lib/systemd/system/
	install -m 0644 systemd/switchboard.sysusers $(DESTDIR)/usr/lib/sysusers.d/switchboard.conf
	install -m 0644 systemd/switchboard.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/switchboard.conf

clean:
	rm -rf build

-include $(shell find build -type f -name '*.d' 2>/dev/null)
