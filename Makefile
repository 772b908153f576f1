# The two commands of README.md: `make run` (a local cluster on embedded
# defaults) and `make test` (`make check`, then the whole test suite, as CI runs it).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run check test install proto bench clean

run: install
	$(BIN)/minkms cluster --dev

# Lint, formatting and types; settings in pyproject.toml.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install check
	$(BIN)/python -m twisted.trial -j2 tests

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --config-settings editable_mode=compat -e '.[test,check]'
	touch $@

# Regenerate minkms/wire/kms_pb2.py and its type stub kms_pb2.pyi from minkms/wire/kms.proto.
proto: install
	$(BIN)/pip install -q grpcio-tools
	cd minkms/wire && ../../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. kms.proto

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
