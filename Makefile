# WAOOAW Platform Portal. `make run` serves it, `make test` tests it; both set themselves up.

PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
PY := $(VENV)/bin/python

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format check-deploy benchmarks bench-smoke clean-var

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python $(PYTHON)
	@touch $@

install: $(VENV)/.synced  ## Create .venv with the locked dependencies (uv)

run: install  ## Serve the portal on http://127.0.0.1:8000 with worker and beat (Ctrl-C stops all)
	$(PY) manage.py up

# Two workers (a 2-core machine); the browser tests keep to one of them, in order. Coverage of
# the apps is printed at the end; below the floor in pyproject.toml ([tool.coverage.report]
# fail_under) the run fails.
PYTEST_ARGS ?= -n 2 --dist loadgroup --cov --cov-report=term

test: install  ## Run the whole test suite on a real PostgreSQL and Redis
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install  ## ruff lint and format check, mypy on the modules pyproject.toml lists
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install  ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

benchmarks: install  ## Run every benchmark in benchmarks/ and print the figures
	@for bench in benchmarks/bench_*.py; do echo "== $$bench"; $(PY) $$bench || exit 1; done

# Docker's benchmarks take part only with CI=true (.ci/run starts the engine); else skipped, saying so.
bench-smoke: install  ## Every benchmark once at its smallest size (CI): fails if one crashes or measures nothing
	@began=$$(date +%s); for bench in benchmarks/bench_*.py; do \
		echo "== $$bench --smoke"; start=$$(date +%s); \
		$(PY) $$bench --smoke || { echo "$$bench --smoke failed" >&2; exit 1; }; \
		echo "($$bench --smoke took $$(( $$(date +%s) - start )) s)"; \
	done; echo "(bench-smoke took $$(( $$(date +%s) - began )) s)"

clean-var:  ## Delete local data (embedded PostgreSQL and Redis, secret key) after stopping them
	$(PY) -c "from portal import embedded; embedded.remove_data(embedded.var_dir())"
	rm -rf var
