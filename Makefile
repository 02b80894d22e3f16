# meshdesk — two set-up commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test install lint typecheck pytest clean lab-clean i18n

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
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

# Tear down every network lab (field-kit/lab) left on this machine; needs root.
lab-clean:
	field-kit/lab down --all

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Console catalogs: re-extract the messages of tui/, merge them into the ja and en
# catalogs, and compile the .mo files (committed; tests/unit/test_tui_i18n.py checks them).
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
