# twigate — hand-written Makefile. `make` builds build/twigate and build/kaphila-sim.
# SANITIZE=address,undefined builds into build-san/ with the sanitizers on.
CC      ?= cc
PKGS    := libmicrohttpd libcurl jansson libxml-2.0 sqlite3 libpq libcrypto
BUILD   ?= build
OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wformat=2 -Wvla
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -Iinclude -MMD -MP \
           $(shell pkg-config --cflags $(PKGS))
# LAME (libmp3lame-dev) has no pkg-config file on Debian: linked by name.
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lmp3lame -lpthread -lm

ifneq ($(SANITIZE),)
BUILD   := build-san
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# One folder per layer (docs/architecture.md; scripts/check-layers.sh keeps the rules).
MAINS    := src/app/main.c src/sim/sim_main.c
# A layer may keep sub-folders (src/store/sqlite/): still one layer.
LIB_SRC  := $(filter-out $(MAINS),$(wildcard src/*/*.c src/*/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/console_assets.o
LIB      := $(BUILD)/libtwigate.a
UNIT_SRC := $(wildcard tests/unit/*/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# The unit tests' shared helpers (tests/unit/support/support.h), linked into each.
UNIT_SUPPORT := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/unit/support/*.c))
PYTHON   := /usr/bin/python3

.PHONY: all deps run check layers unit integration sanitize fuzz-replay fuzz bench install clean
all: $(BUILD)/twigate $(BUILD)/kaphila-sim

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The console's static files (console/) compiled in as C by tools/mkassets.c.
CONSOLE_ASSETS := $(sort $(wildcard console/*))
$(BUILD)/tools/mkassets: tools/mkassets.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -o $@ $<
$(BUILD)/gen/console_assets.c: $(BUILD)/tools/mkassets $(CONSOLE_ASSETS)
	@mkdir -p $(dir $@)
	$(BUILD)/tools/mkassets $(CONSOLE_ASSETS) > $@.tmp && mv $@.tmp $@
$(BUILD)/gen/console_assets.o: $(BUILD)/gen/console_assets.c
	$(CC) $(CFLAGS) -Isrc/console -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/twigate: $(BUILD)/src/app/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/kaphila-sim: $(BUILD)/src/sim/sim_main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(UNIT_SUPPORT) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

deps:
	@scripts/install-deps.sh build

# ARGS: more twigate arguments, e.g. make run ARGS='--set listen.port=9011'.
run: deps all
	@scripts/run-demo.sh $(BUILD)/twigate $(ARGS)

layers:
	scripts/check-layers.sh

# Each unit-test binary runs in its own process; cmocka prints its own summary.
unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)

# The suites mostly wait on events (a pass used ~1 min of CPU in 7), so their files
# run INTEGRATION_JOBS at a time (pytest-xdist, python3-pytest-xdist: each file on
# one worker, in order; harness/util.py splits the ports between workers); 0 runs
# them one by one, as without xdist. TWIGATE_TEST_DB=postgresql (on the command
# line or in the environment) puts every twigate on PostgreSQL (conftest.py).
INTEGRATION_JOBS ?= 3
XDIST = $(if $(shell $(PYTHON) -c 'import xdist' 2>/dev/null && echo y),\
           -n $(INTEGRATION_JOBS) --dist loadfile)
integration: all
	TWIGATE_BUILD=$(BUILD) $(PYTHON) -m pytest -q -p no:cacheprovider $(XDIST) tests/integration

check:
	@scripts/install-deps.sh build test
	scripts/check-layers.sh
	$(MAKE) all unit
	$(MAKE) integration
	$(MAKE) SANITIZE=address,undefined OPT="-O1 -g" all unit integration
	$(MAKE) SANITIZE=address,undefined OPT="-O1 -g" integration TWIGATE_TEST_DB=postgresql
	$(MAKE) fuzz-replay

# Replays the committed seed corpora through every libFuzzer target under ASan+UBSan.
fuzz-replay:
	@scripts/fuzz.sh replay

fuzz:
	@scripts/fuzz.sh run

bench:
	@scripts/install-deps.sh build bench
	$(MAKE) BUILD=build-bench OPT="-O2 -DNDEBUG" all
	@bench/run.sh build-bench

PREFIX  ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/twigate \
	           $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 755 $(BUILD)/twigate $(DESTDIR)$(PREFIX)/sbin/twigate
	install -m 755 $(BUILD)/kaphila-sim $(DESTDIR)$(PREFIX)/bin/kaphila-sim
	install -m 644 conf/twigate.conf $(DESTDIR)/etc/twigate/twigate.conf.sample
	install -m 644 docs/twigate.8 $(DESTDIR)$(PREFIX)/share/man/man8/twigate.8

clean:
	rm -rf build build-san build-bench build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
