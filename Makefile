# Front door for people: wraps CMake/ctest. `make`, `make test`, `make demo`, `make install`.
# Each target first installs the Debian packages it needs (scripts/deps.sh, idempotent).

MAKEFLAGS += --no-print-directory
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX ?= /usr/local
CMAKE_FLAGS ?=
SECONDS ?= 30
# CI (CI=true) builds with warnings as errors.
ifeq ($(CI),true)
  WERROR := -DPKM_WERROR=ON
endif

.PHONY: all build test test-asan test-valgrind demo install bench fuzz soak format clean deps

all: build

deps:
	@bash scripts/deps.sh build

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(WERROR) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test:
	@bash scripts/deps.sh test
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(WERROR) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build tree.
test-asan:
	@bash scripts/deps.sh asan
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPKM_SANITIZE=ON -DPKM_BENCH=OFF $(WERROR) >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

# The whole suite under valgrind memcheck; any report fails the run.
test-valgrind:
	@bash scripts/deps.sh valgrind
	@cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Debug -DPKM_BENCH=OFF -DPKM_VALGRIND=ON $(WERROR) >/dev/null
	@cmake --build build-valgrind -j $(JOBS)
	@cd build-valgrind && ctest --output-on-failure -j $(JOBS)

demo: build
	@$(BUILD)/pkmcom demo

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	@bash scripts/deps.sh bench
	@bash bench/run.sh $(BUILD)

fuzz:
	@bash scripts/deps.sh fuzz
	@bash fuzz/run.sh $(SECONDS)

soak: build
	@bash tests/soak.sh $(BUILD)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-valgrind build-fuzz

# ---- The Wireshark plugin (wireshark/): make wireshark, make install-wireshark ----
# Wireshark loads personal plugins only when not run as root (nor set-id): use it as your user.
WS_PLUGIN_DIR ?= $(HOME)/.local/lib/wireshark/plugins/4.0/epan
.PHONY: wireshark install-wireshark
wireshark:
	@bash scripts/deps.sh wireshark
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPKM_WIRESHARK=ON $(WERROR) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target pkmcom_wireshark
	@echo "plugin: $(BUILD)/wireshark/plugins/4.0/epan/pkmcom.so (make install-wireshark copies it to $(WS_PLUGIN_DIR))"

install-wireshark: wireshark
	@mkdir -p $(WS_PLUGIN_DIR)
	@install -m 0644 $(BUILD)/wireshark/plugins/4.0/epan/pkmcom.so $(WS_PLUGIN_DIR)/pkmcom.so
	@echo "installed $(WS_PLUGIN_DIR)/pkmcom.so"
