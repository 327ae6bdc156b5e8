"""Next-token choice from logits: greedy, or sampling with temperature, top-k and top-p (nucleus)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """``temperature == 0`` means greedy (argmax); ``top_k == 0`` and ``top_p == 1`` disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sampler:
    """Picks tokens for one sequence; with a seed the choices are reproducible."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.params.greedy:
            return int(np.argmax(logits))
        ids, probs = self.distribution(logits)
        # Inverse-CDF draw: one uniform number per token, so a seed fixes the whole sequence.
        cumulative = np.cumsum(probs)
        index = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        return int(ids[min(index, len(ids) - 1)])

    def distribution(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate token ids and their probabilities after temperature, top-k and top-p.

        Logits are shifted so the best is 0 *before* dividing by the temperature: every scaled value is then
        ≤ 0, and a temperature however small (1e-310, a subnormal) sends the others to -inf, which is the
        greedy limit, instead of overflowing to inf - inf = NaN.
        """
        wide = logits.astype(np.float64)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            scaled = (wide - wide.max()) / self.params.temperature
        top_k = self.params.top_k
        ids = np.argpartition(-scaled, top_k - 1)[:top_k] if 0 < top_k < scaled.size else np.arange(scaled.size)
        ids = ids[np.argsort(-scaled[ids], kind="stable")]
        values = scaled[ids]
        probs = np.exp(values - values[0])
        probs /= probs.sum()
        if self.params.top_p < 1.0:
            # Keep the smallest set whose mass reaches top_p (always at least the best token).
            before = np.cumsum(probs) - probs
            keep = before < self.params.top_p
            ids, probs = ids[keep], probs[keep] / probs[keep].sum()
        return ids, probs
