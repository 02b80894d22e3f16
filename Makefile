# meshdesk — two set-up commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test install upgrade lint typecheck pytest clean lab-clean i18n

# Installs are reproducible: every package, pip and setuptools included, comes from
# requirements/lock.txt at the tested version and hash. The project itself is then
# installed editable with no further dependencies and no isolated build (its build
# backend is the locked setuptools). `make upgrade` is the one way to move versions.
LOCK := requirements/lock.txt
PIP_COMPILE_FLAGS := --quiet --extra test --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/meshdesk demo

lint: install
	$(BIN)/ruff check meshdesk sync tui tests
	$(BIN)/ruff format --check meshdesk sync tui tests

# sync/ and tui/ become meshdesk.sync and meshdesk.tui only when installed; mypy does
# not follow setuptools' editable import hook, so it checks a tree of symlinks laid
# out the way the package is installed.
typecheck: install
	@rm -rf .typecheck && mkdir -p .typecheck/meshdesk
	@for f in meshdesk/*; do ln -s "$(CURDIR)/$$f" .typecheck/meshdesk/; done
	@ln -s "$(CURDIR)/sync" .typecheck/meshdesk/sync
	@ln -s "$(CURDIR)/tui" .typecheck/meshdesk/tui
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p meshdesk

pytest: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Move to the newest releases the registry offers (within pyproject.toml's bounds),
# reinstall from the new lock and run the whole suite. Review the lock's diff; after a
# Textual upgrade, snapshot changes are reviewed and accepted with
# `make pytest PYTEST_ARGS="tests/tui/test_snapshots.py --snapshot-update"`.
upgrade: install
	CUSTOM_COMPILE_COMMAND='make upgrade' $(BIN)/pip-compile --upgrade $(PIP_COMPILE_FLAGS) -o $(LOCK) pyproject.toml requirements/tools.in
	$(MAKE) install
	$(MAKE) test

# Tear down every network lab (field-kit/lab) left on this machine; needs root.
lab-clean:
	field-kit/lab down --all

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Console catalogs: re-extract the messages of tui/, merge them into the ja and en
# catalogs, and compile the .mo files (committed; tests/tui/test_i18n.py checks them).
i18n: install
	$(BIN)/pybabel extract -k tr -k N_ --no-location --sort-output --omit-header \
		-o tui/locale/meshdesk.pot tui
	for lang in ja en; do \
		if [ -f tui/locale/$$lang/LC_MESSAGES/meshdesk.po ]; then \
			$(BIN)/pybabel update --no-fuzzy-matching --ignore-pot-creation-date -D meshdesk -l $$lang \
				-i tui/locale/meshdesk.pot -d tui/locale; \
		else \
			$(BIN)/pybabel init -D meshdesk -l $$lang -i tui/locale/meshdesk.pot -d tui/locale; \
		fi; \
	done
	$(BIN)/pybabel compile --use-fuzzy -D meshdesk -d tui/locale
