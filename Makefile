# Kiln: the README's two commands are `make run` (whole pipeline locally) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One set of pins for `make install`, CI (.ci/run -> make test) and the images (images/Containerfile.*).
CONSTRAINTS := images/constraints.txt
# Images: `make images IMAGE_REGISTRY=quay.io/me IMAGE_TAG=0.1.0` (buildah if present, else docker).
IMAGE_REGISTRY ?= quay.io/kiln
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_SOURCE ?= $(or $(shell git config --get remote.origin.url 2>/dev/null),unknown)
IMAGE_REVISION ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILDER ?= $(shell command -v buildah >/dev/null 2>&1 && echo buildah || echo docker)

.PHONY: install run test lint format clean constraints images image-cpu image-gpu image-workbench

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
	$(PY) -m pip install -q torch==2.13.0 -c $(CONSTRAINTS)
	$(PY) -m pip install -q -e '.[dev]' -c $(CONSTRAINTS)
	touch $(STAMP)

# Re-pin from the working venv after changing dependencies (review the diff, commit it).
constraints:
	{ sed -n '/^#/p' $(CONSTRAINTS); $(PY) -m pip freeze --all --exclude-editable \
	  | sed -E 's/\+[A-Za-z0-9.]+$$//' | grep -v -E '^(kiln|pip)=='; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

images: image-cpu image-gpu image-workbench

# docker (BuildKit) finds images/Containerfile.*.dockerignore by itself; buildah is told.
image-cpu image-gpu image-workbench: image-%:
	$(BUILDER) build -f images/Containerfile.$* \
	  $(if $(filter buildah,$(notdir $(BUILDER))),--ignorefile images/Containerfile.$*.dockerignore) \
	  --build-arg VERSION=$(IMAGE_TAG) --build-arg SOURCE=$(IMAGE_SOURCE) \
	  --build-arg REVISION=$(IMAGE_REVISION) \
	  -t $(IMAGE_REGISTRY)/kiln-$*:$(IMAGE_TAG) .

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/kiln run $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
