"""Server pieces without a network: the policy reader, request parameters, the batcher's batch choice."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from miscause.errors import MiscauseError
from miscause.policy import parse_policy
from miscause.server.batcher import Batcher
from miscause.server.metrics import Metrics
from miscause.server.parameters import resolve
from miscause.server.settings import Batching

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


@dataclass(frozen=True)
class Item:
    count: int


def test_batcher_forms_preferred_sizes_and_keeps_order():
    sizes: list[list[int]] = []

    def execute(works: list[Item]) -> list[int]:
        sizes.append([w.count for w in works])
        return [w.count * 10 for w in works]

    async def scenario() -> list[int]:
        batcher = Batcher("m", execute, Batching(max_batch_size=8, max_queue_delay_us=20_000,
                                                 preferred_batch_sizes=(2, 4)), Metrics())
        tasks = [asyncio.ensure_future(batcher.submit(Item(1), 1, None)) for _ in range(5)]
        await asyncio.sleep(0)  # all five queued before the dispatcher looks
        batcher.start()
        results = await asyncio.gather(*tasks)
        await batcher.close()
        return results

    assert asyncio.run(scenario()) == [10] * 5
    assert sizes == [[1, 1, 1, 1], [1]]  # 4 is preferred; the last one goes when its delay is up


def test_batcher_isolates_a_failing_batch_from_the_next():
    calls = []

    def execute(works: list[Item]) -> list:
        calls.append(len(works))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return [np.int64(w.count) for w in works]

    async def scenario():
        batcher = Batcher("m", execute, Batching(max_batch_size=4, max_queue_delay_us=0), Metrics())
        batcher.start()
        first = await asyncio.gather(batcher.submit(Item(1), 1, None), return_exceptions=True)
        second = await batcher.submit(Item(2), 2, None)
        await batcher.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first[0], RuntimeError) and second == 2
