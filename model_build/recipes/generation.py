"""Decoder-only LMs (Llama family): KV-cached ONNX export, weight-only quantization, generation gates.

Gates, all measured through the runtime's ``GenerationPipeline`` on staged artifacts:

- ``chat_template_match``: the runtime's ChatML renderer gives exactly the model's Jinja template output.
- ``fp32_greedy_match``: greedy continuations of a fixed prompt set equal torch ``generate``'s
  token for token (fraction of prompts; required 1.0); ``quantized_greedy_match``: the same for the
  served model (required: the catalog's ``quantized_greedy_match``, else ``MIN_QUANTIZED_GREEDY_MATCH``).
- ``fp32_max_abs_diff``: teacher-forced next-token logits, fp32 ONNX (step by step, KV cache) vs torch.
- ``quantized_top1_agreement`` and ``quantized_perplexity_increase`` on held-out text
  (``data/generation_heldout.txt``): the served model's next-token argmax vs torch's, and its
  perplexity relative to torch's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from functions.contract import GateResult, Quantization
from functions.inference.decoding import ChatMessage, GenerationConfig, SamplingParams, render_chat
from functions.inference.decoding.config import CONFIG_KEY
from functions.inference.loader import verify_artifact
from functions.inference.pipelines.generation import GenerationPipeline
from functions.inference.registry import pipeline_for
from model_build import validate
from model_build.export_decoder import export_decoder
from model_build.graph import decoder_graph
from model_build.optimize import optimize_graph
from model_build.quantize import QuantPreset, quantize
from model_build.recipes.base import Recipe

MAX_NEW_TOKENS = 512  # per request; at ~25-50 ms/token on 1-2 vCPUs this fits a 29 s API Gateway timeout
DEFAULT_MAX_NEW_TOKENS = 64
GREEDY_NEW_TOKENS = 24
# Default bound on the served model's held-out perplexity over torch's (catalog: quantized_max_perplexity_increase).
MAX_PERPLEXITY_INCREASE = 0.02
FP32_TEACHER_FORCED_PARAGRAPHS = 2
# Served greedy continuations identical to torch's, as a fraction of the parity prompts. Any weight or
# activation rounding flips some near-tied tokens; the exact grid re-pack (int4-source-grid) gives 1.0.
MIN_QUANTIZED_GREEDY_MATCH = 0.75

PARITY_PROMPTS: list[str | list[tuple[str, str]]] = [
    [("user", "What is the capital of France?")],
    [("user", "Write a haiku about the sea.")],
    [("system", "You answer in one short sentence."), ("user", "Why is the sky blue?")],
    [("user", "List three fruits."), ("assistant", "Apples, bananas and cherries."), ("user", "Now three vegetables.")],
    "Once upon a time, in a small village by the mountains,",
    "def fibonacci(n):\n",
    "The three primary colours are",
    "Water boils at",
]
TEMPLATE_CASES: list[list[tuple[str, str]]] = [
    [("user", "Hi")],
    [("system", "Be brief."), ("user", "Hello\nthere")],
    [("user", "Q1"), ("assistant", "A1"), ("user", "Q2 — ünïcødé ✓")],
    [("system", "S"), ("user", "U"), ("assistant", "A")],
]


def heldout_paragraphs() -> list[str]:
    """Paragraphs written for this repo (never used to fit anything), one per line."""
    text = (validate.DATA_DIR / "generation_heldout.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _messages(turns: list[tuple[str, str]]) -> list[ChatMessage]:
    return [ChatMessage(role, content) for role, content in turns]


class GenerationRecipe(Recipe):
    @property
    def hf_tokenizer(self) -> Any:
        return self.source.extra["hf_tokenizer"]

    def export(self) -> dict[str, float]:
        layers = float(self.source.extra["num_layers"])
        if decoder_graph.unsupported(self.source.module) is None:
            # Written directly with ORT's fused ops (GroupQueryAttention, SkipSimplifiedLayerNormalization).
            decoder_graph.build_decoder_graph(self.source.module, self.fp32_dir / "model.onnx")
            return {"num_layers": layers, "fused_decoder_graph": 1.0}
        # Other decoders: dynamo export, then fuse the RMSNorms (onnxruntime.transformers, python fusions only).
        exported = self.fp32_dir / "export.onnx"
        export_decoder(self.source.module, exported)
        fused = optimize_graph(self.source, exported, self.fp32_dir / "model.onnx")
        exported.unlink()
        metrics = {f"fused_{op}": float(count) for op, count in fused.items()}
        return {"num_layers": layers, "fused_decoder_graph": 0.0, **metrics}

    def quantize(self, preset: QuantPreset) -> Quantization:
        return quantize(self.fp32_dir / "model.onnx", self.served_dir / "model.onnx", preset)

    def artifact_files(self, model_dir: Path) -> dict[str, Path]:
        return {"model.onnx": model_dir / "model.onnx", "tokenizer.json": self.source.tokenizer_file}

    def generation_config(self) -> GenerationConfig:
        tokenizer, extra = self.hf_tokenizer, self.source.extra
        eos = [int(extra["eos_token_id"])]
        end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        if isinstance(end_of_text, int) and end_of_text not in eos and end_of_text != tokenizer.unk_token_id:
            eos.append(end_of_text)
        return GenerationConfig(
            eos_token_ids=eos,
            chat_format="chatml",
            default_system_prompt=self._default_system_prompt(),
            chat_template=extra["chat_template"] or "",
            context_length=int(extra["context_length"]),
            max_new_tokens=MAX_NEW_TOKENS,
            default_max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        )

    def _default_system_prompt(self) -> str | None:
        rendered: str = self.hf_tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=False
        )
        head = "<|im_start|>system\n"
        if not rendered.startswith(head):
            return None
        return rendered[len(head) : rendered.index("<|im_end|>")]

    def manifest_fields(self) -> dict[str, Any]:
        return {"config": {CONFIG_KEY: self.generation_config().model_dump()}}

    # --- gates ------------------------------------------------------------------------------------
    def gates(self, fp32_artifact: Path, served_artifact: Path) -> list[GateResult]:
        fp32 = pipeline_for(fp32_artifact, verify_artifact(fp32_artifact), warmup=False)
        served = pipeline_for(served_artifact, verify_artifact(served_artifact), warmup=False)
        assert isinstance(fp32, GenerationPipeline) and isinstance(served, GenerationPipeline)
        gates = self.entry.gates
        paragraphs = heldout_paragraphs()
        ids = [fp32.encode(p) for p in paragraphs]
        reference = [self._torch_logits(i) for i in ids]
        tokens = sum(len(i) - 1 for i in ids)
        fp32_logits = [_teacher_forced(fp32, i) for i in ids[:FP32_TEACHER_FORCED_PARAGRAPHS]]
        diff = max(float(np.abs(r[:-1] - f).max()) for r, f in zip(reference, fp32_logits, strict=False))
        served_logits = [_teacher_forced(served, i) for i in ids]
        agreement, ppl_ref, ppl_served = _agreement_and_perplexity(ids, reference, served_logits)
        increase = ppl_served / ppl_ref - 1
        ppl_bound = gates.quantized_max_perplexity_increase or MAX_PERPLEXITY_INCREASE
        results = [
            self._template_gate(fp32),
            *self._greedy_gates(fp32, served, gates.quantized_greedy_match),
            validate.gate(
                "fp32_max_abs_diff",
                diff,
                gates.fp32_max_abs_diff,
                "<=",
                f"next-token logits, {FP32_TEACHER_FORCED_PARAGRAPHS} paragraphs teacher-forced through the KV cache",
            ),
            validate.gate("heldout_tokens", tokens, gates.min_heldout, ">=", "held-out next-token positions"),
            validate.gate(
                "quantized_top1_agreement",
                agreement,
                gates.quantized_top1_agreement or 0.9,
                ">=",
                f"served vs torch argmax over {tokens} held-out positions",
            ),
            validate.gate(
                "quantized_perplexity_increase",
                increase,
                ppl_bound,
                "<=",
                f"perplexity torch {ppl_ref:.3f} → served {ppl_served:.3f} on {tokens} held-out tokens",
            ),
            *validate.size_gates(self.model_bytes(self.fp32_dir), self.model_bytes(self.served_dir), gates),
        ]
        return results

    def _torch_logits(self, ids: list[int]) -> np.ndarray:
        with torch.inference_mode():
            logits = self.source.module(input_ids=torch.tensor([ids])).logits[0]
        return logits.float().numpy()

    def _template_gate(self, pipeline: GenerationPipeline) -> GateResult:
        same = 0
        for turns in TEMPLATE_CASES:
            expected = self.hf_tokenizer.apply_chat_template(
                [{"role": r, "content": c} for r, c in turns], tokenize=False, add_generation_prompt=True
            )
            same += expected == pipeline.chat_prompt(_messages(turns))
        return validate.gate(
            "chat_template_match",
            same / len(TEMPLATE_CASES),
            1.0,
            ">=",
            f"{len(TEMPLATE_CASES)} conversations: runtime ChatML vs the model's Jinja template",
        )

    def _greedy_gates(
        self, fp32: GenerationPipeline, served: GenerationPipeline, required: float | None = None
    ) -> list[GateResult]:
        """Greedy continuations of the parity prompts: fp32 must equal torch's; served, most of them."""
        eos = sorted(fp32.eos_token_ids)
        same = {"fp32": 0, "served": 0}
        compared = 0
        for prompt in PARITY_PROMPTS:
            text = (
                prompt
                if isinstance(prompt, str)
                else render_chat(_messages(prompt), default_system_prompt=fp32.config.default_system_prompt)
            )
            ids = fp32.encode(text)
            with torch.inference_mode():
                out = self.source.module.generate(
                    torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=GREEDY_NEW_TOKENS,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=eos[0],
                )
            expected = out[0, len(ids) :].tolist()
            compared += len(expected)
            for name, pipeline in (("fp32", fp32), ("served", served)):
                got = pipeline.generation(ids, max_new_tokens=GREEDY_NEW_TOKENS, sampling=SamplingParams()).run()
                same[name] += got.token_ids == expected
        detail = f"{len(PARITY_PROMPTS)} prompts, {compared} greedy tokens vs torch generate"
        count = len(PARITY_PROMPTS)
        return [
            validate.gate("fp32_greedy_match", same["fp32"] / count, 1.0, ">=", detail),
            validate.gate(
                "quantized_greedy_match",
                same["served"] / count,
                MIN_QUANTIZED_GREEDY_MATCH if required is None else required,
                ">=",
                detail,
            ),
        ]


def _teacher_forced(pipeline: GenerationPipeline, ids: list[int]) -> np.ndarray:
    """Next-token logits after each prefix ``ids[:k]`` (k = 1..n-1), one KV-cached step per token."""
    cache = pipeline.decoder.empty_cache(capacity=len(ids))
    return np.stack([pipeline.decoder.forward([token], cache) for token in ids[:-1]])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


def _agreement_and_perplexity(
    ids: list[list[int]], reference: list[np.ndarray], served: list[np.ndarray]
) -> tuple[float, float, float]:
    agree, count, nll_ref, nll_served = 0, 0, 0.0, 0.0
    for seq, ref, got in zip(ids, reference, served, strict=True):
        targets = np.asarray(seq[1:])
        ref = ref[:-1]
        rows = np.arange(len(targets))
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        count += len(targets)
        nll_ref -= float(_log_softmax(ref)[rows, targets].sum())
        nll_served -= float(_log_softmax(got)[rows, targets].sum())
    return agree / count, math.exp(nll_ref / count), math.exp(nll_served / count)
