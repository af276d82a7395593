"""Everything the server is configured with, in one place: built from the command line or by embedders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY_ENV = "MISCAUSE_MODEL_REPOSITORY"


def default_repository() -> Path:
    """`MISCAUSE_MODEL_REPOSITORY` when set, else the repository embedded beside the package source."""
    chosen = os.environ.get(REPOSITORY_ENV)
    return Path(chosen) if chosen else Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class Batching:
    """Dynamic batching per model: how many images a batch holds, how long a request waits for company; and the
    queue policy (Triton's `default_queue_policy`, REJECT on timeout): how many requests may wait, and how long
    (`default_timeout_us`, 0: no bound in time)."""

    max_batch_size: int = 64
    max_queue_delay_us: int = 2000
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 256
    default_timeout_us: int = 10_000_000

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max batch size must be at least 1")
        if self.max_queue_delay_us < 0:
            raise ValueError("max queue delay must not be negative")
        if self.max_queue_size < 1:
            raise ValueError("max queue size must be at least 1")
        if self.default_timeout_us < 0:
            raise ValueError("default queue timeout must not be negative")
        if any(not 1 <= size <= self.max_batch_size for size in self.preferred_batch_sizes):
            raise ValueError(f"preferred batch sizes must lie in 1..{self.max_batch_size}")


@dataclass(frozen=True)
class Settings:
    """Server settings; every field has the default `miscause serve` uses."""

    model_repository: Path = field(default_factory=default_repository)
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    http_port: int | None = 8000  # None: no HTTP/REST front end
    metrics_port: int | None = 8002
    batching: Batching = field(default_factory=Batching)
    device: str = "auto"
    forward_backend: str = "onnx"
    threads: int | None = None
    instances: int = 1
    max_message_bytes: int | None = None  # None: sized from the largest valid request and response
    max_concurrent_rpcs: int = 1024
    stream_window: int = 128
    max_image_side: int = 4096
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None
    drain_seconds: float = 30.0
    drain_notice_seconds: float = 0.0
