"""Translation (encoder-decoder) models: two graphs, judged token for token against torch's ``generate``.

Gates, all measured through the runtime pipeline on the held-out sentences:

* ``fp32_greedy_token_match`` — share of inputs whose fp32 greedy output equals
  ``generate(do_sample=False, num_beams=1)`` token for token; required: all of them.
* ``fp32_beam_token_match`` — the same for beam search (``num_beams`` = 4) on the first 32 inputs.
* ``fp32_max_abs_diff`` — largest logit difference along torch's outputs (teacher forcing through the cache).
* ``quantized_top1_agreement`` (when the catalog sets it) — share of next-token argmaxes of the served
  graphs equal to torch's along torch's outputs; the detail also reports whole-sequence agreement.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from functions.contract import GateResult, Quantization
from functions.inference.loader import verify_artifact
from functions.inference.pipelines.seq2seq import TranslationPipeline
from functions.inference.registry import pipeline_for
from functions.inference.tokenizer import EncodedBatch
from model_build import validate
from model_build.catalog import CatalogEntry
from model_build.quantize import QuantPreset, quantize
from model_build.recipes.base import Recipe
from model_build.sources import SourceModel

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# transformers is imported only when a translation model is built (it adds seconds to every CLI start).

GATE_BEAMS = 4
BEAM_INPUTS = 32
GRAPHS = ("model.onnx", "decoder.onnx")


class Seq2SeqRecipe(Recipe):
    def __init__(self, entry: CatalogEntry, source: SourceModel, work: Path) -> None:
        from model_build.sources.seq2seq import generation_settings

        super().__init__(entry, source, work)
        self.model = cast("PreTrainedModel", source.module)
        self.target_tokenizer: Path | None = source.extra.get("target_tokenizer_file")
        self.settings = generation_settings(self.model, max_source_tokens=entry.limits.max_seq_len).model_copy(
            update={"target_tokenizer_file": "target_tokenizer.json" if self.target_tokenizer else None}
        )

    def export(self) -> dict[str, float]:
        from model_build.sources.seq2seq import export_seq2seq, family_of

        export_seq2seq(self.model, self.fp32_dir / "model.onnx", self.fp32_dir / "decoder.onnx")
        return {"decoder_layers": float(len(family_of(self.model).layers(self.model.get_decoder())))}

    def quantize(self, preset: QuantPreset) -> Quantization:
        record = preset.record()
        for graph in GRAPHS:
            record = quantize(self.fp32_dir / graph, self.served_dir / graph, preset)
        return record

    def artifact_files(self, model_dir: Path) -> dict[str, Path]:
        files = {graph: model_dir / graph for graph in GRAPHS}
        files["tokenizer.json"] = self.source.tokenizer_file
        if self.target_tokenizer is not None:
            files["target_tokenizer.json"] = self.target_tokenizer
        return files

    def manifest_fields(self) -> dict[str, Any]:
        return {"config": self.settings.model_dump()}

    def gates(self, fp32_artifact: Path, served_artifact: Path) -> list[GateResult]:
        from model_build.sources.seq2seq import torch_generate, torch_step_logits

        texts = validate.heldout_texts(self.entry.task)
        fp32 = self._pipeline(fp32_artifact)
        served = self._pipeline(served_artifact)
        max_new = self.settings.default_max_new_tokens
        step = validate.EVAL_BATCH
        batches = [fp32.encoder.encode(texts[i : i + step], truncate=True) for i in range(0, len(texts), step)]
        reference = [torch_generate(self.model, _torch(b), max_new_tokens=max_new) for b in batches]
        greedy = [fp32.generate(b, max_new_tokens=max_new) for b in batches]
        served_greedy = [served.generate(b, max_new_tokens=max_new) for b in batches]
        diffs, scale, agree, positions = [], 0.0, 0, 0
        for batch, ref in zip(batches, reference, strict=True):
            expected = torch_step_logits(self.model, _torch(batch), ref).numpy()
            valid = _valid_positions(ref, expected.shape[1])
            diffs.append(float(np.abs(fp32.forced_logits(batch, ref) - expected)[valid].max()))
            scale = max(scale, float(np.abs(expected[valid]).max()))
            served_top1 = served.forced_logits(batch, ref).argmax(-1)
            agree += int((served_top1 == expected.argmax(-1))[valid].sum())
            positions += int(valid.sum())
        beam_batch = fp32.encoder.encode(texts[:BEAM_INPUTS], truncate=True)
        beam_ref = torch_generate(self.model, _torch(beam_batch), max_new_tokens=max_new, num_beams=GATE_BEAMS)
        beam = fp32.generate(beam_batch, max_new_tokens=max_new, num_beams=GATE_BEAMS)
        flat_ref, flat_fp32 = _flat(reference), _flat(greedy)
        n = f"{len(texts)} held-out inputs, max_new_tokens={max_new}"
        results = [
            validate.enough_heldout(len(texts), self.entry.gates),
            validate.gate("fp32_greedy_token_match", _match(flat_ref, flat_fp32), 1.0, ">=", n),
            validate.gate(
                "fp32_beam_token_match",
                _match(beam_ref, beam),
                1.0,
                ">=",
                f"{len(beam_ref)} inputs, num_beams={GATE_BEAMS}",
            ),
            validate.gate(
                "fp32_max_abs_diff",
                max(diffs),
                self.entry.gates.fp32_max_abs_diff,
                "<=",
                f"logits along torch's outputs, {positions} positions, largest |logit| {scale:.3g}",
            ),
        ]
        if self.entry.gates.quantized_top1_agreement is not None:
            detail = f"{positions} positions; whole outputs equal: {_match(flat_ref, _flat(served_greedy)):.3f}"
            results.append(
                validate.gate(
                    "quantized_top1_agreement",
                    agree / positions,
                    self.entry.gates.quantized_top1_agreement,
                    ">=",
                    detail,
                )
            )
        fp32_bytes, served_bytes = self.model_bytes(self.fp32_dir), self.model_bytes(self.served_dir)
        return [*results, *validate.size_gates(fp32_bytes, served_bytes, self.entry.gates)]

    def _pipeline(self, artifact: Path) -> TranslationPipeline:
        pipeline = pipeline_for(artifact, verify_artifact(artifact), warmup=False)
        assert isinstance(pipeline, TranslationPipeline)
        return pipeline


def _torch(batch: EncodedBatch) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.from_numpy(batch.input_ids), "attention_mask": torch.from_numpy(batch.attention_mask)}


def _valid_positions(targets: list[list[int]], width: int) -> np.ndarray:
    return np.arange(width)[None, :] < np.array([len(t) for t in targets])[:, None]


def _flat(batches: list[list[list[int]]]) -> list[list[int]]:
    return [ids for batch in batches for ids in batch]


def _match(expected: list[list[int]], got: list[list[int]]) -> float:
    return sum(e == g for e, g in zip(expected, got, strict=True)) / len(expected)
