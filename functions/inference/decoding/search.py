"""Sequence-to-sequence search over a KV-cached decoder: greedy and beam search, in numpy.

Both reproduce transformers' ``generate(do_sample=False)`` step for step — logits processors in the same
order, the same beam bookkeeping — so the build can gate on token-for-token equality with torch. The
model is reached through a ``step`` callable (one decoder run: next-token logits and the grown cache), so
the search knows nothing of sessions or feeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_NEG = np.float32(-1.0e9)  # transformers' "impossible" beam score
# (tokens [rows, 1], encoder mask, cross-attention caches, self-attention caches) -> (logits [rows, vocab], caches)
Step = Callable[[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]


class Seq2SeqConfig(BaseModel):
    """``manifest.config`` of a translation artifact: the decoder graph and the model's generation config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decoder_file: str = "decoder.onnx"
    target_tokenizer_file: str | None = Field(None, description="decodes output ids; default: the source tokenizer")
    decoder_start_token_id: int
    eos_token_ids: list[int] = Field(min_length=1)
    pad_token_id: int
    bad_word_ids: list[int] = Field(default_factory=list, description="never generated (bad_words_ids)")
    suppress_token_ids: list[int] = Field(default_factory=list)
    min_length: int = Field(0, ge=0, description="EOS is suppressed until the output (with start token) is this long")
    forced_bos_token_id: int | None = None
    forced_eos_token_ids: list[int] = Field(default_factory=list, description="forced as the last possible token")
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    default_max_new_tokens: int = Field(64, ge=1)
    max_new_tokens_limit: int = Field(256, ge=1)
    max_beams: int = Field(4, ge=1, le=32)


def cache_input_names(layers: int) -> list[str]:
    """Decoder cache inputs, per layer: self-attention key/value, then cross-attention key/value."""
    return [
        f"past_key_values.{i}.{kind}.{kv}"
        for i in range(layers)
        for kind in ("decoder", "encoder")
        for kv in ("key", "value")
    ]


def cache_output_names(layers: int, kind: Literal["decoder", "encoder"]) -> list[str]:
    return [f"present.{i}.{kind}.{kv}" for i in range(layers) for kv in ("key", "value")]


class Seq2SeqSearch:
    """Greedy and beam search for one model: its config, its decoder ``step`` and its empty cache."""

    def __init__(self, config: Seq2SeqConfig, step: Step, layers: int) -> None:
        self.settings = config
        self._step = step
        self.layers = layers
        self._eos = np.array(config.eos_token_ids, dtype=np.int64)

    def _empty_past(self, cross: list[np.ndarray]) -> list[np.ndarray]:
        rows, heads, _, head_dim = cross[0].shape
        return [np.zeros((rows, heads, 0, head_dim), dtype=np.float32)] * (2 * self.layers)

    def run(self, cross: list[np.ndarray], mask: np.ndarray, max_new: int, beams: int = 1) -> list[list[int]]:
        """Output ids per row (up to and including EOS)."""
        if beams == 1:
            return self.greedy(cross, mask, max_new)
        return self.beam(cross, mask, max_new, beams)

    def forced(self, cross: list[np.ndarray], mask: np.ndarray, targets: list[list[int]]) -> np.ndarray:
        """Logits ``[batch, steps, vocab]`` along given outputs (teacher forcing through the cache)."""
        s = self.settings
        width = max(len(t) for t in targets)
        tokens = np.full((len(targets), width), s.pad_token_id, dtype=np.int64)
        for row, target in enumerate(targets):
            tokens[row, : len(target)] = [s.decoder_start_token_id, *target[:-1]]
        past, steps = self._empty_past(cross), []
        for t in range(width):
            logits, past = self._step(tokens[:, t : t + 1], mask, cross, past)
            steps.append(logits)
        return np.stack(steps, axis=1)

    def process(self, scores: np.ndarray, cur_len: int, max_length: int) -> np.ndarray:
        """transformers' logits processors, in its order; ``cur_len`` counts the decoder start token."""
        s = self.settings
        if s.bad_word_ids:
            scores[:, s.bad_word_ids] = -np.inf
        if cur_len < s.min_length:
            scores[:, self._eos] = -np.inf
        if s.forced_bos_token_id is not None and cur_len == 1:
            scores[:] = -np.inf
            scores[:, s.forced_bos_token_id] = 0
        if s.forced_eos_token_ids and cur_len == max_length - 1:
            scores[:] = -np.inf
            scores[:, s.forced_eos_token_ids] = 0
        if s.suppress_token_ids:
            scores[:, s.suppress_token_ids] = -np.inf
        return scores

    def greedy(self, cross: list[np.ndarray], mask: np.ndarray, max_new: int) -> list[list[int]]:
        rows = mask.shape[0]
        outputs: list[list[int]] = [[] for _ in range(rows)]
        active = np.arange(rows)
        tokens = np.full((rows, 1), self.settings.decoder_start_token_id, dtype=np.int64)
        past = self._empty_past(cross)
        for step in range(max_new):
            logits, past = self._step(tokens, mask, cross, past)
            chosen = self.process(logits, step + 1, max_new + 1).argmax(axis=-1)
            for row, token in zip(active, chosen, strict=True):
                outputs[row].append(int(token))
            keep = ~np.isin(chosen, self._eos)
            if not keep.any():
                break
            if not keep.all():  # finished rows leave the batch: later steps cost only what is still running
                active, mask, chosen = active[keep], mask[keep], chosen[keep]
                cross, past = [c[keep] for c in cross], [p[keep] for p in past]
            tokens = chosen[:, None].astype(np.int64)
        return outputs

    def beam(self, cross: list[np.ndarray], mask: np.ndarray, max_new: int, beams: int) -> list[list[int]]:
        """transformers' vectorised beam search (``GenerationMixin._beam_search``), in numpy."""
        s = self.settings
        batch, max_length, prompt = mask.shape[0], max_new + 1, 1
        keep_k = max(2, 1 + len(s.eos_token_ids)) * beams
        top_beams = np.arange(keep_k) < beams
        cross = [np.repeat(c, beams, axis=0) for c in cross]
        mask = np.repeat(mask, beams, axis=0)
        running = np.full((batch, beams, max_length), s.pad_token_id, dtype=np.int64)
        running[:, :, 0] = s.decoder_start_token_id
        finished_seqs = running.copy()
        running_scores = np.zeros((batch, beams), dtype=np.float32)
        running_scores[:, 1:] = _NEG
        finished_scores = np.full((batch, beams), _NEG, dtype=np.float32)
        is_finished = np.zeros((batch, beams), dtype=bool)
        improvable = np.ones((batch, 1), dtype=bool)
        past = self._empty_past(cross)
        cur_len = prompt
        while True:
            logits, present = self._step(running[:, :, cur_len - 1].reshape(-1, 1), mask, cross, past)
            log_probs = self.process(_log_softmax(logits), cur_len, max_length)
            scores = (log_probs.reshape(batch, beams, -1) + running_scores[:, :, None]).reshape(batch, -1)
            vocab = log_probs.shape[-1]
            top = _topk(scores, keep_k)
            top_scores = np.take_along_axis(scores, top, axis=1)
            origin = top // vocab
            top_seqs = np.take_along_axis(running, origin[:, :, None], axis=1)
            top_seqs[:, :, cur_len] = top % vocab
            hits = np.isin(top % vocab, self._eos) | (cur_len + 1 >= max_length)
            # the best unfinished candidates keep running
            alive_scores = top_scores + hits.astype(np.float32) * _NEG
            pick = _topk(alive_scores, beams)
            running = np.take_along_axis(top_seqs, pick[:, :, None], axis=1)
            running_scores = np.take_along_axis(alive_scores, pick, axis=1)
            running_origin = np.take_along_axis(origin, pick, axis=1)
            # finished candidates among the top `beams` compete with earlier finished hypotheses
            just_finished = hits & top_beams[None, :]
            final = top_scores / np.float32((cur_len + 1 - prompt) ** s.length_penalty)
            if s.early_stopping is True:
                final += np.all(is_finished, axis=-1, keepdims=True).astype(np.float32) * _NEG
            final += (~improvable).astype(np.float32) * _NEG + (~just_finished).astype(np.float32) * _NEG
            merged_scores = np.concatenate([finished_scores, final], axis=1)
            best = _topk(merged_scores, beams)
            finished_seqs = np.take_along_axis(np.concatenate([finished_seqs, top_seqs], axis=1), best[:, :, None], 1)
            finished_scores = np.take_along_axis(merged_scores, best, axis=1)
            is_finished = np.take_along_axis(np.concatenate([is_finished, just_finished], axis=1), best, axis=1)
            rows = (running_origin + np.arange(batch)[:, None] * beams).reshape(-1)
            past = [p[rows] for p in present]
            cur_len += 1
            improvable = improvable & self._can_improve(
                running_scores, finished_scores, is_finished, cur_len, max_length
            )
            all_full = bool(np.all(is_finished)) and s.early_stopping is True
            if not improvable.any() or all_full or hits.all():
                break
        return [_until_eos(finished_seqs[b, 0, prompt:].tolist(), self.settings.eos_token_ids) for b in range(batch)]

    def _can_improve(
        self, running: np.ndarray, finished: np.ndarray, is_finished: np.ndarray, cur_len: int, max_length: int
    ) -> np.ndarray:
        s = self.settings
        length = max_length - 1 if s.early_stopping == "never" and s.length_penalty > 0 else cur_len - 1
        best_running = running[:, :1] / np.float32(length**s.length_penalty)
        worst_finished = np.where(is_finished, finished.min(axis=1, keepdims=True), _NEG)
        return np.any(best_running > worst_finished, axis=-1, keepdims=True)  # type: ignore[no-any-return]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)  # type: ignore[no-any-return]


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest per row, best first; ties go to the lower index (as torch.topk on CPU)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _until_eos(ids: list[int], eos: list[int]) -> list[int]:
    for index, token in enumerate(ids):
        if token in eos:
            return ids[: index + 1]
    return ids
