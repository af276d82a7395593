# miscause: two commands, `make serve` and `make test`; everything else is a helper target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The device image's Triton beside this one, for compile checks against both (tests/test_kernels_compile.py):
# its own site-packages first, then .venv's for everything else (torch, the project).
TRITON36 := .venv-triton36
TRITON36_STAMP := $(TRITON36)/.installed

# The GPU machines' package versions on Python 3.12 (benchmarks/gpu/device-image.txt), the wheels a call carries
# (the service's grpcio, protobuf and aiohttp with its dependencies; scikit-image and what it needs beyond the image,
# for the stage's SSIM),
# and the rehearsal of the device scripts with them (docs/device.md).
DEVICE_ENV := .venv-device
# The first Python 3.12 that runs (a pyenv shim for a version not selected is found but fails).
PYTHON312 ?= $(firstword $(foreach p,$(shell command -v python3.12) $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python),\
	$(shell $(p) -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && echo $(p))))
WHEELS := carry/wheels
CARRIED := grpcio|grpcio-health-checking|grpcio-reflection|protobuf|aiohttp|aiohappyeyeballs|aiosignal|attrs|frozenlist
CARRIED := $(CARRIED)|multidict|propcache|yarl|idna|scikit-image|imageio|tifffile|lazy-loader|packaging
WHEEL_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64,--platform $(p))

.PHONY: setup serve test lint proto clean triton36 device-env wheelhouse carry-data device-rehearsal

setup: $(STAMP)

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock -r requirements-dev.lock
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

device-env:
	test -x $(DEVICE_ENV)/bin/python || $(PYTHON312) -m venv $(DEVICE_ENV)
	$(DEVICE_ENV)/bin/python -m pip uninstall -q -y miscause grpcio-health-checking grpcio-reflection
	$(DEVICE_ENV)/bin/python -m pip install -q -r benchmarks/gpu/device-image.txt

wheelhouse:
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(WHEEL_PLATFORMS) -d $(WHEELS) \
		$$(grep -E "^($(CARRIED))==" requirements.lock)

carry-data:
	mkdir -p carry
	cp ../shared/data/cifar10.pack.npz ../shared/tools/cifar10_pack.py carry/

device-rehearsal: device-env wheelhouse carry-data
	benchmarks/gpu/rehearsal.sh

# Build the Docker image with buildah, run it with podman and check it end to end (docs/deploy.md).
.PHONY: docker-check
docker-check: $(STAMP)
	$(BIN)/python deploy/docker_check.py
