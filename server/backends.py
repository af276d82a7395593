"""The compute behind one model: ONNX Runtime for forward passes, the torch.export program for gradients,
`miscause.kernels` for saliency and erasure. Tensors in, tensors out; all on the model's device.

Erasure (`erase`) ranks pixels by a saliency map or, for the `gradient` method, by the raw input gradient,
which the kernel reduces over channels as it reads it, so no map is built for it. It returns the status
unread, for the pipeline to check once per batch.

On CUDA, images travel as uint8 through a pinned staging buffer (a quarter of the float bytes) and are
normalised on the device; ONNX Runtime reads and writes torch's device memory through IO binding on the
model's own CUDA stream, so nothing returns to the host until the outputs are encoded.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from miscause import kernels, repository
from miscause.pixels import normalize
from miscause.repository import ModelConfig

FORWARD_BACKENDS = ("onnx", "torch")


class Backend:
    """One model's forward pass, saliency and erasure on one device; call its methods inside `on_stream()`."""

    def __init__(self, model_dir: Path, config: ModelConfig, device: torch.device, threads: int | None,
                 forward_backend: str = "onnx") -> None:
        if forward_backend not in FORWARD_BACKENDS:
            raise ValueError(f"forward backend must be one of {', '.join(FORWARD_BACKENDS)}")
        self.device = device
        self.config = config
        self.forward_backend = forward_backend
        self.height, self.width = config.height, config.width
        self.class_count = len(config.classes)
        self.mean = torch.tensor(config.mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(config.std, dtype=torch.float32, device=device)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        version = Path(model_dir) / repository.VERSION
        self.session = repository.onnx_session(version / repository.ONNX_FILE, providers=self._providers(),
                                               threads=threads)
        # on the CPU, request bytes go straight to ONNX Runtime where the repository has the pixel graph
        pixels_file = version / repository.PIXELS_ONNX_FILE
        self.pixels_session = repository.onnx_session(pixels_file, threads=threads) \
            if device.type == "cpu" and forward_backend == "onnx" and pixels_file.is_file() else None
        self.program = repository.load_program(model_dir, str(device))
        self.program.requires_grad_(False)  # gradients are taken with respect to the input only
        self.staging: torch.Tensor | None = None
        self.binding = self.session.io_binding() if device.type == "cuda" else None  # built once, rebound per batch

    def on_stream(self) -> contextlib.AbstractContextManager:
        """Run a batch inside this: its device work goes on the model's own CUDA stream (shared with ONNX
        Runtime), so host copies of its results wait for exactly that work."""
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _providers(self) -> list:
        if self.device.type != "cuda":
            return ["CPUExecutionProvider"]
        options = {"device_id": self.device.index or 0, "user_compute_stream": str(self.stream.cuda_stream)}
        return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]

    def upload(self, parts: list[np.ndarray]) -> torch.Tensor:
        """Normalised float32 [N,C,H,W] on the device from parts: uint8 [n,H,W,C] or normalised [n,C,H,W]."""
        pixels = [p for p in parts if p.dtype == np.uint8]
        if len(pixels) == len(parts):
            return normalize(self._to_device(np.concatenate(pixels) if len(pixels) > 1 else pixels[0]),
                             self.mean, self.std)
        return torch.cat([normalize(self._to_device(p), self.mean, self.std) if p.dtype == np.uint8
                          else self._to_device(p) for p in parts])

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.from_numpy(np.array(array))  # owned and writable: requests' buffers are read-only
        needed = array.nbytes
        if self.staging is None or self.staging.numel() < needed:
            self.staging = torch.empty(max(needed, 1 << 20), dtype=torch.uint8, pin_memory=True)
        self.stream.synchronize()  # the previous batch's upload has left the staging buffer
        dtype = torch.uint8 if array.dtype == np.uint8 else torch.float32
        host = self.staging[:needed].view(dtype).view(array.shape)
        host.numpy()[...] = array
        return host.to(self.device, non_blocking=True)

    def reads_pixels(self, parts: list[np.ndarray]) -> bool:
        """Whether `pixel_logits` can take these parts: uint8 images and a pixel graph to feed them to."""
        return self.pixels_session is not None and all(p.dtype == np.uint8 for p in parts)

    def pixel_logits(self, parts: list[np.ndarray]) -> torch.Tensor:
        """float32 [N,K] for uint8 [n,H,W,C] parts, normalised inside the ONNX graph: one copy of the bytes."""
        pixels = np.concatenate(parts) if len(parts) > 1 else parts[0]
        output = self.pixels_session.run([repository.OUTPUT_NAME], {repository.PIXELS_INPUT_NAME: pixels})[0]
        return torch.from_numpy(output)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """float32 [N,K] for normalised images [N,C,H,W]."""
        if self.forward_backend == "torch":
            with torch.no_grad():
                return self.program(images)
        if self.device.type == "cpu":
            output = self.session.run([repository.OUTPUT_NAME], {repository.INPUT_NAME: images.numpy()})[0]
            return torch.from_numpy(output)
        return self._logits_bound(images.contiguous())

    def _logits_bound(self, images: torch.Tensor) -> torch.Tensor:
        """ONNX Runtime on device memory: inputs and outputs bound to torch tensors, no host round trip."""
        out = torch.empty((images.shape[0], self.class_count), dtype=torch.float32, device=self.device)
        binding = self.binding
        where = ("cuda", self.device.index or 0, np.float32)
        binding.bind_input(repository.INPUT_NAME, *where, tuple(images.shape), images.data_ptr())
        binding.bind_output(repository.OUTPUT_NAME, *where, tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out

    def saliency(self, images: torch.Tensor, method: str, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 [N,H,W] saliency of `target` classes (-1: the predicted one) through the torch program's
        gradients (Grad-CAM: of the layer the model's config names), the logits [N,K] of that pass)."""
        saliency, logits = kernels.saliency(self.program, images, method=method, target=target,
                                            **self.config.saliency_options(method))
        return saliency.detach(), logits

    def gradient(self, images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 [N,C,H,W] raw input gradient of `target` classes (-1: the predicted one), the logits [N,K] of
        that pass): the `gradient` method before its channel reduction, which `erase` reads `from_gradient`."""
        gradient, logits = kernels.input_gradient(self.program, images, target)
        return gradient.detach(), logits

    def erase(self, images: torch.Tensor, ranking: torch.Tensor, top_percent: float, box: int,
              fill: tuple[float, ...] | None, from_gradient: bool) -> kernels.EraseResult:
        """Erased images, mask and status from `miscause.kernels.erase_unchecked`, ranked by the saliency map, or
        with `from_gradient` by max over channels of |gradient| [N,C,H,W] reduced inside the kernel; the caller
        checks the status (`kernels.check_result`)."""
        return kernels.erase_unchecked(images, ranking, top_percent, box, fill, from_gradient=from_gradient)


def default_threads(models: int) -> int:
    """Intra-op threads per model: the machine's cores shared among the models, at least one."""
    return max(1, (os.cpu_count() or 1) // max(models, 1))
