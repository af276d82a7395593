"""The served models: each loaded from the repository, warmed up, and fed by its own batcher; the admission every
front end passes requests through, and the drain that accounts for them."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from miscause import repository
from miscause.device import pick_device
from miscause.errors import MiscauseError
from miscause.kernels import METHODS
from miscause.policy import Policy, read_policy
from miscause.proto import names
from miscause.repository import ModelConfig
from miscause.server import pipeline
from miscause.server.admission import Admission
from miscause.server.backends import Backend, default_threads
from miscause.server.batcher import Batcher
from miscause.server.metrics import Metrics
from miscause.server.parameters import BUILTIN_DEFAULTS, Explain, resolve
from miscause.server.pipeline import Work
from miscause.server.settings import Settings
from miscause.server.statistics import StageTimes, Statistics

log = logging.getLogger("miscause.server")
DROP_SECONDS = 1.0  # after a drop, how long the dropped requests' handlers get to record how they ended


@dataclass
class ServedModel:
    """One model: its config, policy, explanation defaults, one compute backend per instance and (once
    started) its batcher."""

    name: str
    config: ModelConfig
    policy: Policy | None
    defaults: dict
    backends: list[Backend]
    batcher: Batcher | None = None
    statistics: Statistics = field(default_factory=Statistics)

    @property
    def backend(self) -> Backend:
        """The first instance's backend: its device and sizes are every instance's."""
        return self.backends[0]

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    @property
    def height(self) -> int:
        return self.config.height

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def methods(self) -> tuple[str, ...]:
        """The saliency methods this model offers: Grad-CAM only where the config names a layer to explain."""
        return tuple(method for method in METHODS if self.config.offers(method))

    def execute(self, works: list[Work], instance: int = 0) -> list:
        """Outputs per work for one batch on one instance (its worker thread). A failing batch is split in
        halves until the failing requests stand alone: they fail by themselves, the others still succeed."""
        times = StageTimes()
        try:
            results = pipeline.run(self.backends[instance], self.policy, works, times)
        except Exception as error:
            if len(works) == 1:
                log.warning("request failed in model %s: %s", self.name, error, exc_info=error)
                return [error]
            half = len(works) // 2
            return self.execute(works[:half], instance) + self.execute(works[half:], instance)
        self.statistics.executed(sum(work.count for work in works), len(works), times)
        return results

    def warm_up(self, max_batch: int) -> None:
        """Before the model reports ready: every stage once, and the forward pass at the max batch size (its
        buffers are the largest; the explanation stages' kernels are compiled by the first run)."""
        explain = resolve({}, self.defaults, self.classes, self.height, self.width, methods=self.methods)
        for instance in range(len(self.backends)):
            for size, outputs in ((1, tuple(names.OUTPUTS)), (max_batch, (names.LOGITS,))):
                images = np.zeros((size, self.height, self.width, 3), dtype=np.uint8)
                results = self.execute([Work(images, outputs, explain)], instance)
                if isinstance(results[0], Exception):
                    raise MiscauseError(f"model {self.name} failed its warm-up at batch {size}: {results[0]}")
        self.statistics = Statistics()  # the warm-up is not served work


def load_model(model_dir: Path, settings: Settings, device: torch.device, threads: int) -> ServedModel:
    """A model from its repository folder, its config and policy checked."""
    config = repository.read_config(model_dir)
    policy = read_policy(model_dir, list(config.classes))
    defaults = {**BUILTIN_DEFAULTS, **(policy.defaults if policy else {})}
    backends = [Backend(model_dir, config, device, threads, settings.forward_backend)
                for _ in range(settings.instances)]
    model = ServedModel(name=model_dir.name, config=config, policy=policy, defaults=defaults, backends=backends)
    try:
        resolve({}, defaults, model.classes, model.height, model.width, methods=model.methods)
    except ValueError as error:
        raise MiscauseError(f"{model_dir / repository.POLICY}: {error}") from None
    return model


class Engine:
    """Every model of a repository, ready for requests once `load` returned and `start` ran."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.ready = False
        self.admission = Admission()

    def load(self) -> None:
        """Load and warm up every model (blocking; run off the event loop)."""
        names = repository.model_names(self.settings.model_repository)
        if not names:
            raise MiscauseError(f"no models in {self.settings.model_repository} (each needs NAME/config.json)")
        device = pick_device(self.settings.device)
        threads = self.settings.threads or default_threads(len(names) * self.settings.instances)
        if device.type == "cpu":
            torch.set_num_threads(threads)
        for name in names:
            model = load_model(Path(self.settings.model_repository) / name, self.settings, device, threads)
            model.warm_up(self.settings.batching.max_batch_size)
            self.models[name] = model
            log.info("model %s loaded on %s and warmed up", name, device,
                     extra={"fields": {"model": name, "device": str(device), "threads": threads,
                                       "policy": model.policy is not None}})

    def start(self) -> None:
        """Start one batcher per model (inside the running event loop); the engine is then ready."""
        for model in self.models.values():
            model.batcher = Batcher(model.name, model.execute, self.settings.batching, self.metrics,
                                    model.statistics, len(model.backends))
            model.batcher.start()
            self.metrics.model_ready.labels(model.name).set(1)
        self.ready = True

    def explain(self, model: ServedModel, values: dict) -> Explain:
        """A request's explanation parameters over the model's defaults (ValueError when invalid)."""
        return resolve(values, model.defaults, model.classes, model.height, model.width, methods=model.methods)

    async def drain(self, seconds: float) -> dict[str, int]:
        """Accept no more requests; refuse at once (UNAVAILABLE) the queued ones estimated not to finish within
        `seconds`, again after every batch; wait for the rest; past `seconds`, drop what is left. Returns the
        accepted requests' outcomes (`Admission.report`)."""
        ends = time.monotonic() + seconds
        self.admission.close()
        for model in self.models.values():
            if model.batcher is not None:
                model.batcher.drain_until(ends)
        if not await self.admission.settled(ends - time.monotonic()):
            for model in self.models.values():
                if model.batcher is not None:
                    model.batcher.drop()
            await self.admission.settled(DROP_SECONDS)
        await asyncio.sleep(0)  # let the last handlers record their outcome
        return self.admission.report()

    async def close(self) -> None:
        self.ready = False
        for model in self.models.values():
            self.metrics.model_ready.labels(model.name).set(0)
            if model.batcher is not None:
                await model.batcher.close()
