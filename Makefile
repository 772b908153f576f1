# The two commands of README.md: `make run` (a local cluster on embedded
# defaults) and `make test` (the whole test suite, as CI runs it).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test install proto bench clean

run: install
	$(BIN)/minkms cluster --dev

test: install
	$(BIN)/python -m twisted.trial -j2 tests

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --config-settings editable_mode=compat -e '.[test]'
	touch $@

# Regenerate minkms/wire/kms_pb2.py from minkms/wire/kms.proto.
proto: install
	$(BIN)/pip install -q grpcio-tools
	cd minkms/wire && ../../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. kms.proto

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
