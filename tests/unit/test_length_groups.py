"""Inputs of mixed lengths run in groups of similar length: fewer padded tokens, each output in its place."""

from __future__ import annotations

import itertools

import pytest

from functions.inference.pipelines.text import RUN_COST_TOKENS, length_groups


def _cost(lengths: list[int], groups: list[list[int]], run_cost: int) -> int:
    return sum(run_cost + len(g) * max(lengths[i] for i in g) for g in groups)


def _best_by_brute_force(lengths: list[int], run_cost: int) -> int:
    """Every split of the sorted order into contiguous runs."""
    ordered = sorted(lengths)
    n = len(ordered)
    best = None
    for cuts in itertools.product([False, True], repeat=n - 1):
        runs, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                runs.append(ordered[start:i])
                start = i
        runs.append(ordered[start:])
        cost = sum(run_cost + len(r) * max(r) for r in runs)
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


def test_equal_lengths_stay_one_run() -> None:
    assert length_groups([128] * 32) == [list(range(32))]


def test_one_input_is_one_run_and_none_is_none() -> None:
    assert length_groups([7]) == [[0]]
    assert length_groups([]) == []


def test_a_few_long_inputs_do_not_pad_many_short_ones() -> None:
    lengths = [12] * 30 + [128, 128]
    groups = length_groups(lengths)
    assert sorted(map(sorted, groups)) == [list(range(30)), [30, 31]]
    assert _cost(lengths, groups, RUN_COST_TOKENS) < RUN_COST_TOKENS + 32 * 128


def test_close_lengths_are_not_split_for_less_than_a_run_costs() -> None:
    assert len(length_groups([10, 11, 12, 13])) == 1


@pytest.mark.parametrize("seed", range(12))
def test_the_split_is_the_cheapest_and_covers_every_input_once(seed: int) -> None:
    import random

    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(5, 20), rng.randint(20, 128)]) for _ in range(rng.randint(2, 11))]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert _cost(lengths, groups, RUN_COST_TOKENS) == _best_by_brute_force(lengths, RUN_COST_TOKENS)
