"""A request mixing short and long inputs runs as one ORT run per length group, and every output (vector or
class probabilities) lands at its input's position: the same result as each input served alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

SHORT = ["Refund my order please", "The cat sits outside", "How do I reset my password?", "Play some jazz"]
LONG = [
    " ".join(["The quarterly report on the logistics network covers warehouse throughput, late shipments,"]
             + [f"route {i} delays and the carriers' explanations" for i in range(8)]),
    " ".join(["My flight to Lisbon was cancelled and the airline rebooked me two days later, so I need"]
             + [f"a refund for night {i} of the hotel and the rental car" for i in range(7)]),
]  # fmt: skip


def _recorded_runs(pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    run = pipeline.run

    def recording(feeds: Any) -> Any:
        shapes.append(tuple(feeds["input_ids"].shape))
        return run(feeds)

    monkeypatch.setattr(pipeline, "run", recording)
    return shapes


@pytest.mark.parametrize("model", ["minilm-embed", "intent-classifier"])
def test_mixed_lengths_run_in_groups_and_keep_their_order(
    registry: Any, client: Any, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    texts = [LONG[0], *SHORT[:2], LONG[1], *SHORT[2:]]
    pipeline = registry.get(model)
    alone = [client.post(f"/models/{model}/predict", json={"inputs": [t]}).json()["outputs"][0] for t in texts]
    shapes = _recorded_runs(pipeline, monkeypatch)
    response = client.post(f"/models/{model}/predict", json={"inputs": texts, "parameters": {"top_k": 3}}
                           if model == "intent-classifier" else {"inputs": texts})  # fmt: skip
    assert response.status_code == 200, response.text
    together = response.json()["outputs"]
    assert [s[0] for s in shapes] == [len(SHORT), len(LONG)], shapes  # the short ones are not padded to the long
    assert shapes[0][1] < shapes[1][1] / 3
    if model == "minilm-embed":
        a, b = np.array(alone), np.array(together)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() >= 0.99, cosine  # dynamic INT8 scales follow the run's neighbours, nothing more
        assert ((a @ b.T).argmax(1) == np.arange(len(texts))).all()
    else:
        assert [t[0]["label"] for t in together] == [t[0]["label"] for t in alone]
