"""The served model's greedy-match gate: the catalog's ``quantized_greedy_match`` where set, else 0.75."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from functions.contract.catalog import Gates
from model_build.recipes.generation import MIN_QUANTIZED_GREEDY_MATCH, PARITY_PROMPTS, GenerationRecipe

CONTINUATION = [5, 6, 7]


class _Model:
    def generate(self, ids: torch.Tensor, **_: Any) -> torch.Tensor:
        return torch.cat([ids, torch.tensor([CONTINUATION])], dim=1)


@dataclass
class _Source:
    module: _Model


@dataclass
class _Result:
    token_ids: list[int]


class _Pipeline:
    """Greedy continuations equal torch's for the first ``matching`` prompts."""

    eos_token_ids = frozenset({0})

    def __init__(self, matching: int) -> None:
        self.matching, self.calls = matching, 0
        self.config = type("Config", (), {"default_system_prompt": None})()

    def encode(self, text: str) -> list[int]:
        return [1, 2]

    def generation(self, ids: list[int], **_: Any) -> Any:
        self.calls += 1
        same = self.calls <= self.matching
        return type("Run", (), {"run": lambda _self: _Result(CONTINUATION if same else [9, 9, 9])})()


def _recipe(tmp_path: Path) -> GenerationRecipe:
    recipe = GenerationRecipe.__new__(GenerationRecipe)
    recipe.source = _Source(_Model())  # type: ignore[assignment]
    recipe.work = tmp_path
    return recipe


@pytest.mark.parametrize(
    ("required", "matching", "passed"),
    [(None, 6, True), (None, 5, False), (0.375, 3, True), (0.375, 2, False)],
)
def test_the_served_greedy_gate_follows_the_catalog(tmp_path: Path, required: float | None, matching: int,
                                                     passed: bool) -> None:  # fmt: skip
    assert len(PARITY_PROMPTS) == 8 and MIN_QUANTIZED_GREEDY_MATCH == 0.75
    gates = Gates(quantized_greedy_match=required)
    fp32, served = _Pipeline(len(PARITY_PROMPTS)), _Pipeline(matching)
    results = {g.name: g for g in _recipe(tmp_path)._greedy_gates(fp32, served, gates.quantized_greedy_match)}  # type: ignore[arg-type]
    assert results["fp32_greedy_match"].passed and results["fp32_greedy_match"].value == 1.0
    served_gate = results["quantized_greedy_match"]
    assert served_gate.value == matching / 8
    assert served_gate.threshold == (0.75 if required is None else required)
    assert served_gate.passed is passed
