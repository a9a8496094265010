# The two commands of README.md: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

demo: $(VENV)/.installed azurite/node_modules/.package-lock.json
	$(BIN)/cdp demo

test: $(VENV)/.installed-test azurite/node_modules/.package-lock.json
	$(BIN)/pytest $(PYTEST_ARGS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(VENV)/.installed $@

# Azurite from npm, exactly as the committed lock file says.
azurite/node_modules/.package-lock.json: azurite/package.json azurite/package-lock.json
	cd azurite && npm ci --no-audit --no-fund --loglevel=error

clean:
	rm -rf $(VENV) azurite/node_modules .cdp
