# SPDX-License-Identifier: MIT
# Front door for people: wraps CMake/ctest. `make`, `make test`, `make demo`, `make install`.
# The build and test targets first install the Debian packages they need (scripts/deps.sh,
# idempotent), as does `make package` (dpkg-dev); `make install` and `make uninstall` never run
# apt-get.

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
# Configuring prints only what matters (notices, warnings, errors such as a missing package).
CONFIGURE = cmake -S . -B $(BUILD) --log-level=NOTICE -DCMAKE_BUILD_TYPE=RelWithDebInfo $(WERROR)

.PHONY: all build test test-asan test-valgrind test-cluster demo install uninstall package bench \
        fuzz soak format clean deps

all: build

deps:
	@bash scripts/deps.sh build

# The library and the tool need only the build group; the tests are built too when cmocka is
# there (PKM_TESTS=AUTO).
build: deps
	@$(CONFIGURE) $(CMAKE_FLAGS)
	@cmake --build $(BUILD) -j $(JOBS)

test:
	@bash scripts/deps.sh test
	@$(CONFIGURE) -DPKM_TESTS=ON $(CMAKE_FLAGS)
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Two `pkmcom serve --relay --redis` instances behind HAProxy with a real redis-server, on
# loopback (tests/cluster.sh: PASS/FAIL/SKIPPED per check, bounded in time; docs/DEPLOYMENT.md).
test-cluster:
	@bash scripts/deps.sh cluster
	@$(CONFIGURE) $(CMAKE_FLAGS)
	@cmake --build $(BUILD) -j $(JOBS) --target pkmcom
	@bash tests/cluster.sh $(BUILD)/pkmcom

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build tree.
test-asan:
	@bash scripts/deps.sh asan
	@cmake -S . -B build-asan --log-level=NOTICE -DCMAKE_BUILD_TYPE=Debug -DPKM_SANITIZE=ON \
	  -DPKM_TESTS=ON -DPKM_BENCH=OFF $(WERROR)
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

# The whole suite under valgrind memcheck; any report fails the run.
test-valgrind:
	@bash scripts/deps.sh valgrind
	@cmake -S . -B build-valgrind --log-level=NOTICE -DCMAKE_BUILD_TYPE=Debug -DPKM_TESTS=ON \
	  -DPKM_BENCH=OFF -DPKM_VALGRIND=ON $(WERROR)
	@cmake --build build-valgrind -j $(JOBS)
	@cd build-valgrind && ctest --output-on-failure -j $(JOBS)

demo: build
	@$(BUILD)/pkmcom demo

# Installs what `make` built (building it first if needed) under PREFIX; no apt-get: a missing
# package stops the configuration with its name. `sudo make install` for a system prefix.
install:
	@$(CONFIGURE) -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)
	@cmake --build $(BUILD) -j $(JOBS)
	@cmake --install $(BUILD) --prefix $(PREFIX)

# Removes every file the last `make install` from $(BUILD) installed (its install_manifest.txt),
# then the directories of ours it leaves empty.
uninstall:
	@test -f $(BUILD)/install_manifest.txt || { echo "make uninstall: no $(BUILD)/install_manifest.txt (nothing installed from $(BUILD))" >&2; exit 1; }
	@while IFS= read -r f || [ -n "$$f" ]; do \
	  if [ -e "$$f" ] || [ -L "$$f" ]; then rm -f "$$f" && echo "removed $$f"; fi; \
	done < $(BUILD)/install_manifest.txt
	@for d in $$(sed -n 's,/\(pkmcom\)/[^/]*$$,/\1,p' $(BUILD)/install_manifest.txt | sort -u); do \
	  rmdir "$$d" 2>/dev/null && echo "removed $$d/" || true; \
	done

# Debian packages (CPack) in build-package/: libpkmcom0, libpkmcom-server0, libpkmcom-dev, pkmcom. Install them with
# `sudo apt-get install ./build-package/*.deb`.
package:
	@bash scripts/deps.sh package
	@cmake -S . -B build-package --log-level=NOTICE -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_INSTALL_PREFIX=/usr -DPKM_DEBIAN=ON -DPKM_TESTS=OFF -DPKM_BENCH=OFF $(WERROR)
	@cmake --build build-package -j $(JOBS)
	@cd build-package && cpack -G DEB
	@ls build-package/*.deb

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
	rm -rf build build-asan build-valgrind build-fuzz build-package

# ---- The Wireshark plugin (wireshark/): make wireshark, make install-wireshark ----
# Wireshark loads personal plugins only when not run as root (nor set-id): use it as your user.
WS_PLUGIN_DIR ?= $(HOME)/.local/lib/wireshark/plugins/4.0/epan
.PHONY: wireshark install-wireshark
wireshark:
	@bash scripts/deps.sh wireshark
	@$(CONFIGURE) -DPKM_WIRESHARK=ON $(CMAKE_FLAGS)
	@cmake --build $(BUILD) -j $(JOBS) --target pkmcom_wireshark
	@echo "plugin: $(BUILD)/wireshark/plugins/4.0/epan/pkmcom.so (make install-wireshark copies it to $(WS_PLUGIN_DIR))"

install-wireshark: wireshark
	@mkdir -p $(WS_PLUGIN_DIR)
	@install -m 0644 $(BUILD)/wireshark/plugins/4.0/epan/pkmcom.so $(WS_PLUGIN_DIR)/pkmcom.so
	@echo "installed $(WS_PLUGIN_DIR)/pkmcom.so"
