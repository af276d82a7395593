# miscause: two commands, `make serve` and `make test`; everything else is a helper target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The device image's Triton beside this one, for compile checks against both (tests/test_kernels_compile.py):
# its own site-packages first, then .venv's for everything else (torch, the project).
TRITON36 := .venv-triton36
TRITON36_STAMP := $(TRITON36)/.installed

.PHONY: setup serve test lint proto clean triton36

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/miscause serve

test: $(STAMP) triton36
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(TRITON36) build *.egg-info

triton36: $(STAMP)
	@$(MAKE) --no-print-directory $(TRITON36_STAMP) \
		|| echo "triton 3.6 environment not made: its compile checks will be skipped"

$(TRITON36_STAMP): $(STAMP)
	test -x $(TRITON36)/bin/python || $(BIN)/python -m venv $(TRITON36)
	$(TRITON36)/bin/python -m pip install -q triton==3.6.0
	$(TRITON36)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > $(TRITON36)/.site
	$(BIN)/python -c "import sysconfig; print('import site; site.addsitedir(%r)' % sysconfig.get_paths()['purelib'])" \
		> "$$(cat $(TRITON36)/.site)/miscause-venv.pth"
	$(TRITON36)/bin/python -c "import triton, torch, miscause.kernels; assert triton.__version__ == '3.6.0'"
	touch $(TRITON36_STAMP)

proto: $(STAMP)
	$(BIN)/python -m miscause.proto.generate
