"""Helpers the server and client tests share (no tests here): a served test repository, settings on
loopback, a gate that holds a model's worker, self-signed certificates, metric reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from miscause import repository
from miscause.server.app import Server
from miscause.server.settings import Batching, Settings, default_repository

WAIT = 300  # seconds: a bound on waits, generous for a loaded machine, never a timing assertion
POLICY = {"version": 1, "top_percent": 10, "box": 5, "fill": [0.0, 0.0, 0.0], "saliency_method": "gradient"}


def source_model() -> Path:
    """The embedded default model (or MISCAUSE_MODEL_REPOSITORY's first); skips when there is none."""
    root = default_repository()
    names = repository.model_names(root) if root.is_dir() else []
    if not names:
        pytest.skip(f"no model in {root}: set MISCAUSE_MODEL_REPOSITORY to an exported repository")
    return root / names[0]


def make_repository(root: Path, names: tuple[str, ...] = ("alpha", "beta")) -> Path:
    """Models from the source model: `alpha` without a policy, `beta` (if named) with a rule for every class."""
    source = source_model()
    config = repository.read_config(source)
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        (folder / repository.VERSION).symlink_to((source / repository.VERSION).resolve())
        (folder / repository.CONFIG).write_text(json.dumps({**config.to_json(), "name": name}))
    if "beta" in names:
        rules = [{"pred": c, "max_confidence": 1.0} for c in config.classes]
        (root / "beta" / repository.POLICY).write_text(json.dumps({**POLICY, "rules": rules}))
    return root


def loopback(repository_path: Path, **overrides) -> Settings:
    """Settings for a test server: loopback, free ports, small batches (quick warm-up), no queue timeout (tests
    hold a model's worker as long as they need)."""
    batching = overrides.pop("batching", Batching(max_batch_size=16, max_queue_delay_us=2000, max_queue_size=64,
                                                  default_timeout_us=0))
    return replace(Settings(model_repository=repository_path), host="127.0.0.1", grpc_port=0, http_port=0,
                   metrics_port=0, batching=batching, threads=2, drain_seconds=10.0, **overrides)


def normalise(images: np.ndarray, config: repository.ModelConfig) -> np.ndarray:
    """uint8 [N,H,W,3] -> normalised float32 [N,3,H,W], as the model was trained (numpy, independent of the
    service's torch implementation)."""
    mean = np.array(config.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(config.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def random_images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def sample(server: Server, name: str, **labels: str) -> float:
    """A metric sample from the server's registry (0 when absent)."""
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def wait_until(condition, seconds: float = WAIT) -> None:
    """Poll until `condition()` holds; fail the test if it never does."""
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


class Gate:
    """Holds a model's worker thread at the start of each batch until opened; records the works that ran."""

    def __init__(self, server: Server, model: str) -> None:
        self.batcher = server.engine.models[model].batcher
        self.original = self.batcher.execute
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.ran: list = []

    def __call__(self, works: list, instance: int) -> list:
        self.entered.set()
        self.opened.wait(WAIT)
        self.ran.extend(works)
        return self.original(works, instance)

    def __enter__(self) -> Gate:
        self.batcher.execute = self
        return self

    def __exit__(self, *exc) -> None:
        self.opened.set()
        self.batcher.execute = self.original


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for localhost and 127.0.0.1, made with the openssl command line."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key
