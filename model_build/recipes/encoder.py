"""Text encoders (BERT family): sentence embeddings and text classification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from functions.contract import GateResult, Quantization
from functions.inference.loader import verify_artifact
from functions.inference.registry import pipeline_for
from model_build import validate
from model_build.export import export_text_encoder
from model_build.optimize import optimize_graph
from model_build.quantize import QuantPreset, quantize
from model_build.recipes.base import Recipe


class EncoderRecipe(Recipe):
    def export(self) -> dict[str, float]:
        exported = self.work / "export.onnx"
        export_text_encoder(self.source, exported)
        fused = optimize_graph(self.source, exported, self.fp32_dir / "model.onnx")
        return {f"fused_{k}": float(v) for k, v in fused.items()}

    def quantize(self, preset: QuantPreset) -> Quantization:
        calibration = (
            validate.calibration_batches(
                self.source.tokenizer_file, self.entry.task, max_seq_len=self.entry.limits.max_seq_len
            )
            if preset.fp32_outliers
            else None
        )
        return quantize(self.fp32_dir / "model.onnx", self.served_dir / "model.onnx", preset, calibration)

    def artifact_files(self, model_dir: Path) -> dict[str, Path]:
        return {"model.onnx": model_dir / "model.onnx", "tokenizer.json": self.source.tokenizer_file}

    def manifest_fields(self) -> dict[str, Any]:
        s = self.source
        return {"labels": s.labels, "pooling": s.pooling, "normalize": s.normalize, "embedding_dim": s.embedding_dim}

    def gates(self, fp32_artifact: Path, served_artifact: Path) -> list[GateResult]:
        texts = validate.heldout_texts(self.entry.task)
        fp32_pipe = pipeline_for(fp32_artifact, verify_artifact(fp32_artifact), warmup=False)
        served_pipe = pipeline_for(served_artifact, verify_artifact(served_artifact), warmup=False)
        reference = validate.torch_outputs(self.source, fp32_pipe, texts)
        gates = self.entry.gates
        return [
            validate.enough_heldout(len(texts), gates),
            validate.parity_gate(reference, validate.runtime_outputs(fp32_pipe, texts), gates),
            *validate.quality_gates(self.entry.task, reference, validate.runtime_outputs(served_pipe, texts), gates),
            *validate.size_gates(self.model_bytes(self.fp32_dir), self.model_bytes(self.served_dir), gates),
        ]
