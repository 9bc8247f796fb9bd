# Everything a fresh machine needs: `make book`, `make test`, `make lab`.
VENV    ?= .venv
PYTHON  ?= python3
BUDGET  ?=
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.labkit-installed

.PHONY: setup book test lab run clean

setup: $(STAMP) node_modules/.package-lock.json /usr/bin/chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[book,lab,test,cluster]'
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# The browser check needs Debian's chromium (root installs it; otherwise install it yourself).
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

book: setup
	$(VENV)/bin/labkit book $(if $(BUDGET),--budget $(BUDGET),)

test: setup
	$(PY) -m pytest

# Jupyter refuses to run as root (most containers) unless told to.
lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

# make run CHAPTER=03-svmax BUDGET=full
run: setup
	$(VENV)/bin/labkit run $(CHAPTER) --budget $(or $(BUDGET),quick)

clean:
	rm -rf build book/_build book/chapters book/_vendor book/_toc.yml book/scoreboard.md
