# `make serve` and `make test` are all a newcomer needs; both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make serve` needs only the runtime set; `make test` (and check, bench) the dev extras too. A
# venv that `make serve` made gets the extras from `make test`; a pyproject.toml change redoes both.
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
MODEL ?= tiny

.PHONY: install install-serve browser js-sdk proxy serve test check bench bench-fixture clean gpu-wheels gpu-check

# pip prints what it collects, downloads and installs (no --quiet on the long steps): a first install takes
# minutes, and a silent one looks hung. tests/test_install.py runs this recipe's pip commands as written.
# A run stopped halfway (Ctrl-C while pip upgrades itself, or while the venv is made) can leave a python with
# no pip: the next run puts pip back (ensurepip), or makes the venv anew when even that fails. The stamps are
# touched last, so an interrupted install is redone, never taken for done.
$(SERVE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade --default-pip >/dev/null \
		|| $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU torch wheel first, by exact version, so nothing later resolves a CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e .
	touch $@

$(STAMP): $(SERVE_STAMP)
	$(BIN)/pip install -e '.[dev]'
	touch $@

install-serve: $(SERVE_STAMP)

# The first boto3/botocore that knew Bedrock (September 2023), beside the venv's own, for
# tests/e2e/test_old_botocore.py: its whole dependency set pinned, so nothing resolves against the venv.
OLD_BOTOCORE := $(VENV)/old-botocore
$(OLD_BOTOCORE)/.installed: $(STAMP)
	rm -rf $(OLD_BOTOCORE)
	$(BIN)/pip install --quiet --no-deps --target $(OLD_BOTOCORE) boto3==1.28.57 botocore==1.31.57 \
		s3transfer==0.7.0 jmespath==1.0.1 python-dateutil==2.9.0.post0 six==1.17.0 urllib3==1.26.20
	touch $@

# The AWS SDK for JavaScript v3 for tests/e2e/test_js_sdk.py, from its lock file (Debian's nodejs lacks npm).
JS_TESTS := tests/js
JS_STAMP := $(JS_TESTS)/node_modules/.package-lock.json
$(JS_STAMP): $(JS_TESTS)/package-lock.json
	(command -v node && command -v npm) >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --prefix $(JS_TESTS) --no-audit --no-fund
	touch $@

js-sdk: $(JS_STAMP)

install: $(STAMP) $(OLD_BOTOCORE)/.installed js-sdk

# Debian's chromium for the playground's browser test (Playwright drives it; never `playwright install`).
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

# Debian's nginx for tests/e2e/test_reverse_proxy.py, which runs docs/SECURITY.md's configuration on a port
# and in a folder of its own. (Where systemd runs, Debian also starts its own nginx on port 80 as it installs.)
proxy:
	test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx-light)

serve: $(SERVE_STAMP)
	$(BIN)/sdxl-bedrock serve --host $(HOST) --port $(PORT) --model $(MODEL)

test: install browser proxy
	$(BIN)/python -m pytest -q

check: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.checkpoints
	$(BIN)/python -m bench.loras
	$(BIN)/python -m bench.loras --layers attention
	$(BIN)/python -m bench.fixture

# The testing fixture alone: its start-up and one call per Bedrock body family (docs/TESTING.md).
bench-fixture: install
	$(BIN)/python -m bench.fixture

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# Wheels the GPU machine (Python 3.12, CUDA torch, no network) lacks, for bench/gpu/run.sh there: see
# bench/gpu/README.md. The set is derived from pyproject.toml's runtime dependencies at the venv's versions,
# which is why it needs the venv stamp: a dependency added to pyproject.toml is installed, then carried.
# Downloads, checks the set is complete, prints its size (carry [".gpu-wheels"]). Only the venv's python is
# needed (not the JS SDK or the old botocore that `install` also brings).
gpu-wheels: $(STAMP)
	$(BIN)/python bench/gpu/wheels.py --dest .gpu-wheels

# The CPU rehearsal of bench/gpu/run.sh: a 3.11 stand-in for the machine's python3 (its packages that the
# derived set relies on) with the set's wheels for cp311, every stage at tiny numbers (SDXL_GPU_DRYRUN=1),
# then the call cut during each stage in turn and one stage past its cap (bench/gpu/rehearse.py). Minutes;
# downloads from PyPI; writes to /tmp/sdxl-gpu-sim and bench/out/gpu-dryrun.
gpu-check: $(STAMP)
	bash bench/gpu/simulate.sh
