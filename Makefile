# Everything builds its own environment from nothing: python3 and make are all a machine needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint typecheck unit meltano sandbox demo bench bench-domains bench-scaling clean chromium

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Meltano has its own venv: it pins SQLAlchemy < 2.1, which the plugins' dev install does not.
MELTANO_VENV ?= .venv-meltano
MELTANO := $(MELTANO_VENV)/bin/meltano
MELTANO_VERSION ?= 4.4.1

# The postgres extra (psycopg) lets Meltano keep its system database, and so its state, in
# PostgreSQL (MELTANO_DATABASE_URI=postgresql+psycopg://...), as several machines need.
$(MELTANO_VENV)/.installed-$(MELTANO_VERSION):
	$(PYTHON) -m venv $(MELTANO_VENV)
	$(MELTANO_VENV)/bin/python -m pip install --quiet 'meltano[postgres]==$(MELTANO_VERSION)'
	touch $@

# One venv per plugin under .meltano/ (Meltano uses uv: seconds); redone when plugins change.
.meltano/.installed: $(MELTANO_VENV)/.installed-$(MELTANO_VERSION) meltano.yml pyproject.toml
	$(MELTANO) install
	touch $@

meltano: .meltano/.installed

# The Quick start: the sandbox's fakes, one `meltano run tap-mailgun target-brevo`, a summary.
demo: $(BIN)/.installed .meltano/.installed
	$(BIN)/python -m fakes.sandbox demo

# The sandbox's fakes on their fixed ports until Ctrl-C, for running meltano by hand.
sandbox: $(BIN)/.installed .meltano/.installed
	$(BIN)/python -m fakes.sandbox serve

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# The health report's browser test runs Debian's Chromium: installed here when missing (as root,
# or through sudo), so a fresh Debian machine still needs nothing but python3 and make.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

unit: $(BIN)/.installed chromium
	$(BIN)/pytest

test: lint typecheck unit

# Benchmarks are not part of `make test`: see README "Benchmarks". BENCH_ARGS passes options.
bench: $(BIN)/.installed
	$(BIN)/python -m bench.run --repeat 3 $(BENCH_ARGS)

# Accounts of 10, 100 and 1,000 sending domains at 250 ms a request: requests by endpoint, a
# first and an incremental run against their floor (~10 minutes; see bench/README.md).
bench-domains: $(BIN)/.installed
	$(BIN)/python -m bench.domains $(BENCH_ARGS)

# 100k and 1M events side by side (memory must stay flat), with py-spy profiles; ~10 minutes.
bench-scaling: $(BIN)/.installed
	$(BIN)/python -m bench.run --events 100000 1000000 --profile $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	rm -rf $(MELTANO_VENV) .meltano/extractors .meltano/loaders .meltano/utilities .meltano/.installed

.PHONY: bench-events
bench-events: $(BIN)/.installed  ## events/s from the Logs API and the Events API at 250 ms latency
	$(BIN)/python -m bench.events_rate $(BENCH_ARGS)

.PHONY: bench-fastlane
bench-fastlane: $(BIN)/.installed .meltano/.installed  ## webhook suppression to Brevo's blocklist, ~12 min
	$(BIN)/python -m bench.fastlane_latency $(BENCH_ARGS)

.PHONY: bench-webhooks
bench-webhooks: $(BIN)/.installed  ## the webhook receiver under load, killed and restarted
	$(BIN)/python -m bench.webhooks_load
