# Entry points: `make demo` and `make test` work on a fresh Debian 12 + Python 3.11 machine.
VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
# Lint only the directories that exist.
LINT_DIRS := $(wildcard tools tests bench cats_ros)

.PHONY: setup host test lint demo clean distclean m4

setup:
	bash scripts/setup.sh

lint: setup
	$(RUFF) check $(LINT_DIRS)

host: setup
	cmake -S cats_zephyr_module/host -B build/host && cmake --build build/host -j2

test: setup host m4
	$(RUFF) check $(LINT_DIRS)
	$(PY) -m pytest -q tests

demo: setup
	$(VENV)/bin/cats demo

# Cortex-M4F cross build of the node core (cats_zephyr_module/m4, cmake/arm-none-eabi.cmake):
# static library, the kernel benchmark image, and node 0 of the untrained verytiny preset
# partitioned for D = 8 (build/m4) and D = 16 (build/m4-d16), sized by `cats size`.
M4_CMAKE := cmake -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/arm-none-eabi.cmake -DCATS_NODE_ID=0
M4_PART_DEPS := $(wildcard tools/cats/*.py tools/cats/*/*.py) proto/cats.proto

build/parts/verytiny-d%/partition.json: $(M4_PART_DEPS) | setup
	$(VENV)/bin/cats export --preset verytiny --nodes $* --out $(@D) >/dev/null

m4: setup build/parts/verytiny-d8/partition.json build/parts/verytiny-d16/partition.json
	$(M4_CMAKE) -S cats_zephyr_module/m4 -B build/m4 -DCATS_PARTITION_DIR=build/parts/verytiny-d8 >/dev/null
	cmake --build build/m4 -j 2
	$(M4_CMAKE) -S cats_zephyr_module/m4 -B build/m4-d16 -DCATS_PARTITION_DIR=build/parts/verytiny-d16 >/dev/null
	cmake --build build/m4-d16 -j 2 --target cats_m4_node cats_m4_node_qemu

clean:
	rm -rf build out runs tools/cats/_generated tools/*.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
