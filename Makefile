# Two entry points (see README "Quick start"): `make figure` and `make test`.
# Both create .venv on first use and install the package with its test extras.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: figure test lint bench clean clean-cache

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The main job: reproduce the CoPG toy bandit figure into results/copg_bandit/, replacing
# the committed copy (which a changed default would otherwise protect from overwriting).
figure: $(STAMP)
	$(BIN)/python -m experiments.copg_bandit --out results/copg_bandit --overwrite

# The whole test suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info

# The persistent XLA compilation cache of the CLIs (--compile_cache) grows with every new
# program; this empties it (results are unaffected; the next runs compile again).
clean-cache:
	rm -rf $${HOME}/.cache/copg_jax/xla
