"""Helpers the load, fault and fuzz tests share (no tests here): the model to serve, the in-process answer a
request must get, the server's metrics and its resident memory."""

from __future__ import annotations

import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_server_support import normalise

from miscause import repository
from miscause.server.settings import default_repository


def served_repository() -> Path:
    """The repository the server serves by default (`MISCAUSE_MODEL_REPOSITORY`, else the embedded one);
    skips visibly when it holds no model."""
    root = default_repository()
    if not (root.is_dir() and repository.model_names(root)):
        pytest.skip(f"no model in {root}: set MISCAUSE_MODEL_REPOSITORY to an exported repository")
    return root


def first_model(root: Path) -> tuple[str, repository.ModelConfig]:
    """(name, config) of the repository's first model."""
    name = repository.model_names(root)[0]
    return name, repository.read_config(root / name)


def random_images(count: int, config: repository.ModelConfig, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, config.height, config.width, 3), dtype=np.uint8)


class Oracle:
    """The answers a model must give, computed in-process with ONNX Runtime."""

    def __init__(self, model_dir: Path) -> None:
        self.config = repository.read_config(model_dir)
        self.model = repository.OnnxModel(model_dir, threads=1)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits for uint8 [N,H,W,3] or normalised float32 [N,3,H,W] images."""
        return self.model(normalise(images, self.config) if images.dtype == np.uint8 else images)

    def labels(self, images: np.ndarray) -> np.ndarray:
        return self.logits(images).argmax(1)

    def check(self, images: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        """The answered LOGITS, PROBS and LABEL agree with the in-process computation (labels only where
        the top two logits are not a near tie, which batch composition may flip)."""
        logits = self.logits(images)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        if "LOGITS" in outputs:
            np.testing.assert_allclose(outputs["LOGITS"], logits, rtol=1e-4, atol=1e-4)
        if "PROBS" in outputs:
            np.testing.assert_allclose(outputs["PROBS"], probs, rtol=1e-4, atol=1e-5)
        if "LABEL" in outputs:
            top2 = np.sort(logits, axis=1)[:, -2:]
            clear = np.isfinite(logits).all(1) & (top2[:, 1] - top2[:, 0] > 1e-3)
            np.testing.assert_array_equal(outputs["LABEL"][clear], logits.argmax(1)[clear])


def metric_samples(url: str) -> Counter:
    """Every sample of the server's Prometheus endpoint, summed over labels other than `status`, keyed by
    (name, status) where it has a status label, else (name, "")."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, sample.labels.get("status", ""))] += sample.value
    return samples


def requests_by_status(samples: Counter) -> Counter:
    """Inference requests the server counted, by final status."""
    return Counter({status: int(value) for (name, status), value in samples.items()
                    if name == "miscause_inference_request_total" and value})


def resident_mib(pid: int) -> float:
    """A process's resident memory in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")

