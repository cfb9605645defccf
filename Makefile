# Two entry points (README.md): `make app` and `make test`. Both create the project-local virtualenv
# on first use. torch is installed alone first, pinned to the CPU build on this machine kind, so no
# multi-GB CUDA build is pulled in by the package's range.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: app test setup clean-venv bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# exec: the recipe's shell becomes the app, so a signal sent to the recipe (Ctrl-C, kill) reaches it.
# (A closed terminal hangs up make, not its children: the app notices the dead tty by itself.)
app: $(STAMP)
	exec $(VENV)/bin/tinylm-tui --workspace .

# Two workers (the CI machine has 2 cores; the suite is mostly one core waiting on subprocesses).
# --dist loadfile keeps a file's tests on one worker: the tmux journeys, the parity answers memoized
# per file and the session fixtures stay together. Firmware builds are serialized by a make lock.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean-venv:
	rm -rf $(VENV)
