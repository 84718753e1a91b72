# The two commands of the README: `make demo` and `make test`.
# Both create .venv if missing and (re)install the project when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_MODEL ?= resnet18
DEMO_TOPOLOGY ?= examples/topologies/default.yaml
DEMO_PLAN ?= examples/plans/resnet18-default.json
DEMO_REQUESTS ?= 20

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	command -v aarch64-linux-gnu-gcc >/dev/null || (apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu)
	# aarch64 parts are executed here under qemu-aarch64 with a runner built by the cross g++ (backends/qemu.py)
	(command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-g++ >/dev/null) || \
		(apt-get update -qq && apt-get install -y -qq qemu-user g++-aarch64-linux-gnu) || \
		echo "qemu-user or g++-aarch64-linux-gnu could not be installed: aarch64 parts will be checked structurally only"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m halocut.backends.qemu
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/halocut inspect $(DEMO_MODEL)
	$(BIN)/halocut compile $(DEMO_MODEL) --topology $(DEMO_TOPOLOGY) --plan $(DEMO_PLAN) -o build/demo --force
	# the same plan with artifacts this machine runs (the Pis' TVM libraries are aarch64), run on an embedded Ray cluster
	$(BIN)/halocut compile $(DEMO_MODEL) --topology $(DEMO_TOPOLOGY) --plan $(DEMO_PLAN) --backends onnx,torch -o build/demo-local --force
	$(BIN)/halocut run build/demo-local --random --requests $(DEMO_REQUESTS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
