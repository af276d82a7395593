"""Server pieces without a network: the policy reader, request parameters, the batcher's batch choice, and a
mixed batch through the pipeline against each request computed on its own."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from test_server_support import random_images, source_model

from miscause import kernels, repository
from miscause.errors import MiscauseError
from miscause.policy import Policy, parse_policy
from miscause.proto.names import (
    CORRECTED_LABEL,
    ERASED_LABEL,
    ERASED_PROBS,
    LABEL,
    LOGITS,
    MASK,
    SALIENCY,
)
from miscause.repository import ModelConfig
from miscause.server import pipeline
from miscause.server.backends import Backend
from miscause.server.batcher import Batcher
from miscause.server.engine import ServedModel
from miscause.server.metrics import Metrics
from miscause.server.parameters import Explain, resolve
from miscause.server.pipeline import Work
from miscause.server.settings import Batching
from miscause.server.statistics import Statistics

CLASSES = ["cat", "dog", "ship"]


def test_policy_rules_select_low_confidence_predictions_of_their_class():
    policy = parse_policy({"version": 1, "top_percent": 10, "rules": [{"pred": "dog", "max_confidence": 0.6}]},
                          CLASSES, "policy.json")
    labels = torch.tensor([1, 1, 0, 2])
    confidence = torch.tensor([0.6, 0.61, 0.1, 0.2])
    assert policy.applies(labels, confidence).tolist() == [True, False, False, False]
    assert policy.defaults == {"top_percent": 10}
    assert parse_policy(None, CLASSES, "policy.json") is None


@pytest.mark.parametrize("raw, message", [
    ([], "JSON object"),
    ({"version": 2}, "version 2 not supported"),
    ({"rules": {}}, "'rules' must be a list"),
    ({"rules": [{"pred": "cat"}]}, "needs 'pred' and 'max_confidence'"),
    ({"rules": [{"pred": "unicorn", "max_confidence": 0.5}]}, "unknown class 'unicorn'"),
    ({"rules": [{"pred": "cat", "max_confidence": 1.5}]}, "number in [0, 1]"),
])
def test_malformed_policy_is_a_clear_error(raw, message):
    with pytest.raises(MiscauseError, match=r"policy\.json: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(raw, CLASSES, "policy.json")


def test_parameters_resolve_over_defaults():
    explain = resolve({"box": 5, "fill": "0.5", "target": "ship"}, {"top_percent": 10}, CLASSES, 32, 32)
    assert (explain.top_percent, explain.box, explain.fill, explain.target) == (10.0, 5, (0.5, 0.5, 0.5), 2)
    assert resolve({}, {}, CLASSES, 32, 32).as_dict() == {"top_percent": 5.0, "box": 3, "fill": None,
                                                          "saliency_method": "gradient", "target": None}
    assert resolve({"fill": "1,2,3"}, {}, CLASSES, 32, 32).fill == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="must be an integer"):
        resolve({"box": 2.5}, {}, CLASSES, 32, 32)
    with pytest.raises(ValueError, match="finite number"):
        resolve({"top_percent": float("nan")}, {}, CLASSES, 32, 32)


def test_grad_cam_is_refused_for_a_model_without_a_layer_to_explain():
    known = ModelConfig("a", "cifarnet", tuple(CLASSES), (0.5,) * 3, (0.25,) * 3, (3, 32, 32))
    unknown = replace(known, architecture="mlp", grad_cam_layer=None)
    assert unknown.grad_cam_layer is None and known.grad_cam_layer == "groups.2"
    offered = {config.architecture: ServedModel("a", config, None, {}, backends=[None]).methods
               for config in (known, unknown)}
    assert offered == {"cifarnet": kernels.METHODS, "mlp": tuple(m for m in kernels.METHODS if m != "grad_cam")}
    assert resolve({"saliency_method": "grad_cam"}, {}, CLASSES, 32, 32, methods=offered["cifarnet"])
    with pytest.raises(ValueError, match="saliency_method must be one of gradient, input_x_gradient, smoothgrad, "
                                         "integrated_gradients, got 'grad_cam'"):
        resolve({"saliency_method": "grad_cam"}, {}, CLASSES, 32, 32, methods=offered["mlp"])


@dataclass(frozen=True)
class Item:
    count: int


def test_batcher_forms_preferred_sizes_and_keeps_order():
    sizes: list[list[int]] = []

    def execute(works: list[Item], instance: int) -> list[int]:
        sizes.append([w.count for w in works])
        return [w.count * 10 for w in works]

    statistics = Statistics()

    async def scenario() -> list[int]:
        batcher = Batcher("m", execute, Batching(max_batch_size=8, max_queue_delay_us=20_000,
                                                 preferred_batch_sizes=(2, 4)), Metrics(), statistics)
        tasks = [asyncio.ensure_future(batcher.submit(Item(1), 1, None)) for _ in range(5)]
        await asyncio.sleep(0)  # all five queued before the dispatcher looks
        batcher.start()
        results = await asyncio.gather(*tasks)
        await batcher.close()
        return results

    assert asyncio.run(scenario()) == [10] * 5
    assert sizes == [[1, 1, 1, 1], [1]]  # 4 is preferred; the last one goes once the instance is free
    assert statistics.queue.count == 5 and statistics.queue.ns > 0


def test_batcher_is_work_conserving():
    """A lone request on an idle model goes at once, however long the queue delay; requests arriving while
    the only instance is busy form one batch when it frees up."""
    sizes: list[list[int]] = []
    release = threading.Event()

    def execute(works: list[Item], instance: int) -> list[int]:
        sizes.append([w.count for w in works])
        if len(sizes) == 1:
            release.wait(60)
        return [w.count for w in works]

    async def scenario() -> list[int]:
        batcher = Batcher("m", execute, Batching(max_batch_size=8, max_queue_delay_us=600_000_000), Metrics(),
                          Statistics())
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(Item(1), 1, None))
        while not sizes:
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit(Item(2), 2, None)) for _ in range(3)]
        await asyncio.sleep(0.2)
        release.set()
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 60)  # not the 10-minute delay
        await batcher.close()
        return results

    assert asyncio.run(scenario()) == [1, 2, 2, 2]
    assert sizes == [[1], [2, 2, 2]]


def test_batcher_runs_batches_on_several_instances_at_once():
    """With two instances, a batch goes to the idle one while the other is still busy."""
    started: list[int] = []
    release = threading.Event()

    def execute(works: list[Item], instance: int) -> list[int]:
        started.append(instance)
        if len(started) == 1:
            release.wait(60)
        return [instance for _ in works]

    async def scenario() -> tuple:
        batcher = Batcher("m", execute, Batching(max_batch_size=1, max_queue_delay_us=0), Metrics(),
                          Statistics(), instances=2)
        batcher.start()
        held = asyncio.ensure_future(batcher.submit(Item(1), 1, None))
        second = await asyncio.wait_for(batcher.submit(Item(1), 1, None), 60)  # while the first is held
        release.set()
        first = await held
        await batcher.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert {first, second} == {0, 1} and started[0] == first


def test_batcher_isolates_a_failing_batch_from_the_next():
    calls = []

    def execute(works: list[Item], instance: int) -> list:
        calls.append(len(works))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return [np.int64(w.count) for w in works]

    async def scenario():
        batcher = Batcher("m", execute, Batching(max_batch_size=4, max_queue_delay_us=0), Metrics(),
                          Statistics())
        batcher.start()
        first = await asyncio.gather(batcher.submit(Item(1), 1, None), return_exceptions=True)
        second = await batcher.submit(Item(2), 2, None)
        await batcher.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first[0], RuntimeError) and second == 2


@pytest.fixture(scope="module")
def backend() -> Backend:
    model_dir = source_model()
    return Backend(model_dir, repository.read_config(model_dir), torch.device("cpu"), threads=2)


def mixed_batch(backend: Backend) -> tuple[list[Work], Policy, int]:
    """(works, policy, rows the policy selects): both routes, two erasure settings, SALIENCY asked or not."""
    images = random_images(18, seed=3)
    first = Explain(5.0, 3, None, "gradient", None)
    second = Explain(10.0, 5, (0.5, -0.5, 0.25), "gradient", None)
    works = [
        Work(images[0:3], (SALIENCY, MASK, ERASED_LABEL), first),
        Work(images[3:6], (MASK, ERASED_LABEL, ERASED_PROBS), second),
        Work(images[6:8], (SALIENCY, MASK, ERASED_PROBS), replace(first, saliency_method="input_x_gradient")),
        Work(images[8:10], (MASK, ERASED_LABEL), replace(second, saliency_method="input_x_gradient", target=1)),
        Work(images[10:16], (LABEL, CORRECTED_LABEL), first),
        Work(images[16:18], (SALIENCY,), replace(first, target=2)),
    ]
    probs = torch.softmax(backend.logits(backend.upload([works[4].images])), 1)
    confidence, labels = probs.max(1)
    limit = float(confidence.sort().values[-2])  # a rule for every class that all but the surest image meet
    policy = Policy.from_rules({c: limit for c in range(backend.class_count)}, backend.class_count)
    selected = int(policy.applies(labels, confidence).sum())
    assert 0 < selected < works[4].count
    return works, policy, selected


def computed_alone(backend: Backend, policy: Policy, work: Work) -> dict[str, np.ndarray]:
    """One request's outputs the plain way: its own forward pass, `kernels.saliency`, then `kernels.erase`."""
    x = backend.upload([work.images])
    logits = backend.logits(x)
    probs = torch.softmax(logits, 1)
    confidence, labels = probs.max(1)
    explain = work.explain
    target = labels if explain.target is None else torch.full_like(labels, explain.target)
    saliency, _ = kernels.saliency(backend.program, x, explain.saliency_method, target,
                                   **backend.config.saliency_options(explain.saliency_method))
    erased, mask = kernels.erase(x, saliency, explain.top_percent, explain.box, explain.fill)
    erased_probs = torch.softmax(backend.logits(erased), 1)
    erased_labels = erased_probs.argmax(1)
    corrected = torch.where(policy.applies(labels, confidence), erased_labels, labels)
    outputs = {LOGITS: logits, LABEL: labels, SALIENCY: saliency, MASK: mask, ERASED_LABEL: erased_labels,
               ERASED_PROBS: erased_probs, CORRECTED_LABEL: corrected}
    return {name: outputs[name].detach().numpy() for name in work.outputs}


def test_pipeline_matches_each_request_computed_alone(backend):
    works, policy, _ = mixed_batch(backend)
    got = pipeline.run(backend, policy, works)
    for number, (work, outputs) in enumerate(zip(works, got, strict=True)):
        want = computed_alone(backend, policy, work)
        assert set(outputs) == set(want)
        for name in work.outputs:
            np.testing.assert_array_equal(outputs[name], want[name], err_msg=f"request {number}: {name}")
    assert (got[4][CORRECTED_LABEL] != got[4][LABEL]).any()  # the policy's erasure changes some answers


def test_a_corrected_label_batch_selects_by_the_policy_once(backend, monkeypatch):
    """Only LABEL and CORRECTED_LABEL asked: the policy's selection runs once over the batch, and every answer is
    the request's computed alone (the rule applied as before)."""
    works, policy, _ = mixed_batch(backend)
    works = [works[4], Work(random_images(5, seed=11), (CORRECTED_LABEL,), works[4].explain)]
    selections: list[int] = []
    original = Policy.applies
    monkeypatch.setattr(Policy, "applies",
                        lambda self, labels, confidence: selections.append(len(labels)) or original(self, labels,
                                                                                                     confidence))
    got = pipeline.run(backend, policy, works)
    assert selections == [6 + 5]
    monkeypatch.undo()
    for number, (work, outputs) in enumerate(zip(works, got, strict=True)):
        want = computed_alone(backend, policy, work)
        for name in work.outputs:
            np.testing.assert_array_equal(outputs[name], want[name], err_msg=f"request {number}: {name}")
    assert (got[0][CORRECTED_LABEL] != got[0][LABEL]).any()


def test_a_batch_explaining_every_image_takes_its_logits_from_the_explanation_pass(backend, monkeypatch):
    """No CORRECTED_LABEL-only request: ONNX Runtime runs once, for the erased images; the logits of the
    gradient pass (the same network as the torch program) give LOGITS and LABEL, and every output matches
    each request computed alone."""
    works, policy, _ = mixed_batch(backend)
    works = [replace(work, outputs=(LOGITS, LABEL, *work.outputs)) for work in works[:4] + works[5:]]
    forwards: list[int] = []
    original = backend.logits
    monkeypatch.setattr(backend, "logits", lambda images: forwards.append(len(images)) or original(images))
    got = pipeline.run(backend, policy, works)
    assert forwards == [3 + 3 + 2 + 2]  # the erased images only
    monkeypatch.undo()
    for number, (work, outputs) in enumerate(zip(works, got, strict=True)):
        want = computed_alone(backend, policy, work)
        ort = backend.logits(backend.upload([work.images])).numpy()
        np.testing.assert_allclose(outputs[LOGITS], ort, atol=1e-4, err_msg=f"request {number}")
        for name in set(work.outputs) - {LOGITS}:
            np.testing.assert_array_equal(outputs[name], want[name], err_msg=f"request {number}: {name}")


def test_a_forward_only_batch_skips_the_explanation_stages(backend, monkeypatch):
    """LABEL, LOGITS and CORRECTED_LABEL without a policy: one forward pass of the pixel graph on the request
    bytes (no upload, no selection, no gradient), with the logits of the normalised-input graph."""
    def refuse(*args, **kwargs):
        raise AssertionError("an explanation stage or the upload ran for a forward-only batch")

    for name in ("_explained", "_plan", "_explain", "_erase"):
        monkeypatch.setattr(pipeline, name, refuse)
    monkeypatch.setattr(backend, "upload", refuse)
    images = random_images(4, seed=9)
    explain = Explain(5.0, 3, None, "gradient", None)
    got = pipeline.run(backend, None, [Work(images[:2], (LABEL, LOGITS), explain),
                                       Work(images[2:], (CORRECTED_LABEL,), explain)])
    monkeypatch.undo()
    logits = backend.logits(backend.upload([images])).numpy()
    np.testing.assert_allclose(got[0][LOGITS], logits[:2], atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([got[0][LABEL], got[1][CORRECTED_LABEL]]), logits.argmax(1))


def test_grad_cam_and_integrated_gradients_requests_through_the_pipeline(backend):
    """The served program's Grad-CAM (its config's layer, inside the flip test-time augmentation) and
    integrated gradients, each request against its own plain computation (one request per method, so the
    batched passes see the same rows and near-tied anchors cannot differ)."""
    images = random_images(5, seed=4)
    grad_cam = Explain(5.0, 3, None, "grad_cam", None)
    works = [Work(images[0:3], (SALIENCY, MASK, ERASED_LABEL), grad_cam),
             Work(images[3:5], (SALIENCY, ERASED_PROBS), replace(grad_cam, saliency_method="integrated_gradients",
                                                                 target=1))]
    policy = Policy.from_rules({}, backend.class_count)
    got = pipeline.run(backend, policy, works)
    for work, outputs in zip(works, got, strict=True):
        want = computed_alone(backend, policy, work)
        for name in work.outputs:
            np.testing.assert_allclose(outputs[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert got[0][SALIENCY].shape == (3, 32, 32) and got[0][SALIENCY].max() > 0 and got[0][SALIENCY].min() == 0
    assert got[1][SALIENCY].max() > 0


def test_pipeline_builds_gradient_maps_only_for_saliency_requests(backend, monkeypatch):
    works, policy, selected = mixed_batch(backend)
    calls: Counter = Counter()

    def spy(name: str):
        original = getattr(kernels, name)

        def call(*args, **kwargs):
            if name == "check_result":
                calls[(name, "", len(args))] += 1  # how many erasures one read-back checks
            else:
                rows = len(next(a for a in args if isinstance(a, torch.Tensor)))
                calls[(name, kwargs.get("method", kwargs.get("from_gradient", "")), rows)] += 1
            return original(*args, **kwargs)
        return call

    for name in ("saliency", "input_gradient", "per_pixel", "erase_unchecked", "check_result"):
        monkeypatch.setattr(kernels, name, spy(name))
    pipeline.run(backend, policy, works)
    assert calls == Counter({
        ("saliency", "input_x_gradient", 4): 1,  # the only map computed on its own
        ("input_gradient", "", 3 + 3 + selected + 2): 1,  # every gradient row, once
        ("per_pixel", "", 3 + 2): 1,  # maps only for the requests asking SALIENCY
        ("erase_unchecked", True, 3 + selected): 1,  # from the raw gradient
        ("erase_unchecked", True, 3): 1,
        ("erase_unchecked", False, 2): 2,  # from input_x_gradient maps
        ("check_result", "", 4): 1,  # the four erasures' status, read back once for the batch
    })


def test_a_nan_ranking_in_one_erasure_group_fails_the_batch_naming_it(backend, monkeypatch):
    """The batch's one status check still sees every group: NaN in one row's gradient is a ValueError."""
    works, policy, _ = mixed_batch(backend)
    original = backend.gradient

    def poisoned(images, target):
        gradient, logits = original(images, target)
        gradient[0, 0, 5, 5] = float("nan")  # the first request's first image, erased from its gradient
        return gradient, logits

    monkeypatch.setattr(backend, "gradient", poisoned)
    with pytest.raises(ValueError, match=r"gradient contains NaN or Inf in 1 image\(s\)"):
        pipeline.run(backend, policy, works)


def test_a_failing_batch_is_bisected_down_to_its_failing_requests(monkeypatch):
    """Eight requests, the sixth breaks the pipeline: halves are retried until it stands alone (7 runs, not
    the 9 of retrying one by one); the other seven succeed and only successful batches are counted."""
    runs: list[list[int]] = []

    def run(backend, policy, works, times):
        runs.append([work.count for work in works])
        if any(work.count == 6 for work in works):
            raise ValueError("stage failed")
        return [{"count": work.count} for work in works]

    monkeypatch.setattr(pipeline, "run", run)
    model = ServedModel(name="m", config=None, policy=None, defaults={}, backends=[None])
    works = [Work(np.zeros((count, 2, 2, 3), np.uint8), (LABEL,), None) for count in range(1, 9)]
    results = model.execute(works)
    assert [r if isinstance(r, Exception) else r["count"] for r in results][:5] == [1, 2, 3, 4, 5]
    assert isinstance(results[5], ValueError) and [r["count"] for r in results[6:]] == [7, 8]
    assert runs == [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4], [5, 6, 7, 8], [5, 6], [5], [6], [7, 8]]
    assert model.statistics.execution_count == 3 and model.statistics.inference_count == 36 - 6
