"""Translation: an encoder-decoder model as two graphs, greedy or beam search over a KV-cached decoder.

``model.onnx`` encodes the source once and returns every decoder layer's cross-attention keys/values
(``present.{i}.encoder.key|value``); ``decoder.onnx`` (named in ``manifest.config``) takes one token per
row plus the caches and returns logits and the grown self-attention cache. The search itself
(:mod:`functions.inference.decoding.search`) reproduces transformers' ``generate(do_sample=False)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError
from tokenizers import Tokenizer

from functions.contract import Manifest, Task
from functions.errors import ArtifactError, InvalidInputError
from functions.inference.decoding.search import Seq2SeqConfig, Seq2SeqSearch, cache_input_names, cache_output_names
from functions.inference.pipelines.base import Capability, Prepared, TaskResult
from functions.inference.pipelines.text import TextParameters, TextPipeline
from functions.inference.session import create_session
from functions.inference.tokenizer import EncodedBatch, TokenizedText


class TranslationParameters(TextParameters):
    max_new_tokens: int | None = Field(None, ge=1, description="longest output in tokens (default: the model's)")
    num_beams: int = Field(1, ge=1, description="1 = greedy search; more = beam search")


@dataclass(frozen=True)
class Translation:
    text: str
    finish_reason: Literal["stop", "length"]  # "length": cut at max_new_tokens (the model may force EOS there)
    prompt_tokens: int
    completion_tokens: int


class TranslationPipeline(TextPipeline[TranslationParameters]):
    task = Task.TRANSLATION
    capabilities = frozenset({Capability.TEXT_INPUT, Capability.TRANSLATE})
    parameters_model = TranslationParameters

    def __init__(self, directory: Path, manifest: Manifest, **kwargs: Any) -> None:
        super().__init__(directory, manifest, **kwargs)
        try:
            self.settings = Seq2SeqConfig.model_validate(manifest.config)
        except ValidationError as exc:
            raise ArtifactError(f"{manifest.name}: manifest.config is not a valid generation config: {exc}") from exc
        s = self.settings
        for name in (s.decoder_file, s.target_tokenizer_file):
            if name is not None and name not in manifest.files:
                raise ArtifactError(f"artifact {manifest.name}: {name} is not listed (with its sha256) in the manifest")
        self.decoder = create_session(
            directory / s.decoder_file,
            intra_op_threads=self.intra_op_threads,
            providers=self.providers,
            spinning=True,  # one decoder run per generated token
        )
        self.layers = len(self.output_names) // 2
        if self.output_names != cache_output_names(self.layers, "encoder"):
            raise ArtifactError(f"artifact {manifest.name}: model.onnx does not output the cross-attention caches")
        self.decoder_inputs = {i.name for i in self.decoder.get_inputs()}
        self.decoder_outputs = ["logits", *cache_output_names(self.layers, "decoder")]
        self.cache_names = cache_input_names(self.layers)
        self.encoder.pad_id = s.pad_token_id
        self.detokenizer = Tokenizer.from_file(
            str(directory / (s.target_tokenizer_file or manifest.tokenizer_file or ""))
        )
        self.search = Seq2SeqSearch(s, self._step, self.layers)

    # --- prepare → execute → finish -----------------------------------------------------------------
    def prepare(
        self, inputs: Sequence[Any], parameters: Mapping[str, Any] | None = None
    ) -> Prepared[TranslationParameters]:
        prepared = super().prepare(inputs, parameters)
        self._check_limits(prepared.parameters)
        return prepared

    def execute(self, features: Sequence[TokenizedText], parameters: TranslationParameters) -> list[list[int]]:
        """Output token ids per input (up to and including EOS)."""
        return self.generate(
            self.encoder.collate(features), max_new_tokens=self._max_new(parameters), num_beams=parameters.num_beams
        )

    def finish(self, outputs: list[list[int]], prepared: Prepared[TranslationParameters]) -> TaskResult:
        return TaskResult(
            self.decode(outputs),
            sum(prepared.token_counts),
            prepared.truncated,
            prepared.token_counts,
            output_tokens=sum(len(ids) for ids in outputs),
        )

    def translate(self, texts: list[str], params: TranslationParameters) -> list[Translation]:
        """Translations with OpenAI-style bookkeeping (for a completions route): text, finish reason, token counts."""
        prepared = self.prepare(texts, params.model_dump())
        ids = self.execute(prepared.features, prepared.parameters)
        limit = self._max_new(params)
        return [
            Translation(text, "length" if len(out) >= limit else "stop", source_tokens, len(out))
            for text, out, source_tokens in zip(self.decode(ids), ids, prepared.token_counts, strict=True)
        ]

    def translate_ids(self, texts: list[str], params: TranslationParameters) -> tuple[list[list[int]], EncodedBatch]:
        """Output token ids per text and the encoded batch (the build's gates use it)."""
        prepared = self.prepare(texts, params.model_dump())
        batch = self.encoder.collate(prepared.features)
        return self.execute(prepared.features, prepared.parameters), batch

    def warmup(self) -> None:
        self.predict(["warm up the session"], {"max_new_tokens": 2})

    # --- generation ---------------------------------------------------------------------------------
    def _max_new(self, params: TranslationParameters) -> int:
        return params.max_new_tokens or self.settings.default_max_new_tokens

    def _check_limits(self, params: TranslationParameters) -> None:
        s, max_new = self.settings, self._max_new(params)
        if max_new > s.max_new_tokens_limit:
            raise InvalidInputError(
                f"parameters.max_new_tokens={max_new} exceeds this model's limit of {s.max_new_tokens_limit}",
                param="parameters.max_new_tokens",
            )
        if params.num_beams > s.max_beams:
            raise InvalidInputError(
                f"parameters.num_beams={params.num_beams} exceeds this model's limit of {s.max_beams}",
                param="parameters.num_beams",
            )

    def generate(self, batch: EncodedBatch, *, max_new_tokens: int, num_beams: int = 1) -> list[list[int]]:
        cross = self.run({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
        return self.search.run(cross, batch.attention_mask, max_new_tokens, num_beams)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return list(self.detokenizer.decode_batch(ids, skip_special_tokens=True))

    def forced_logits(self, batch: EncodedBatch, targets: list[list[int]]) -> np.ndarray:
        """Logits ``[batch, steps, vocab]`` along given outputs (teacher forcing through the cache): the build's
        gates compare them with torch's."""
        cross = self.run({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
        return self.search.forced(cross, batch.attention_mask, targets)

    def _step(
        self, tokens: np.ndarray, mask: np.ndarray, cross: list[np.ndarray], past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        caches = [array for i in range(self.layers) for array in (*past[2 * i : 2 * i + 2], *cross[2 * i : 2 * i + 2])]
        feeds = {
            "input_ids": tokens,
            "encoder_attention_mask": mask,
            **dict(zip(self.cache_names, caches, strict=True)),
        }
        logits, *present = self.decoder.run(
            self.decoder_outputs, {k: v for k, v in feeds.items() if k in self.decoder_inputs}
        )
        return np.asarray(logits[:, -1, :], dtype=np.float32), present
