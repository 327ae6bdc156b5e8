"""Encoder-decoder (seq2seq) models — Marian, BART/mBART, Pegasus, M2M100/NLLB, T5 — as two ONNX graphs.

* ``model.onnx`` (the encoder): ``input_ids, attention_mask`` → ``present.{i}.encoder.key|value``, the
  cross-attention keys/values of every decoder layer, computed once per request.
* ``decoder.onnx``: one token per row plus the caches → ``logits`` and ``present.{i}.decoder.key|value``.
  The self-attention cache may be empty (``past_sequence`` = 0) on the first step, so a single decoder
  graph serves every step and no weights are duplicated in a "decoder init" graph.

Families differ only in where a decoder layer keeps its cross-attention projections: one entry each in
``FAMILIES``. The rest goes through transformers' own modules with an ``EncoderDecoderCache`` built from
the flat named tensors, so the exported math is the model's own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, PreTrainedModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from functions.contract import Task
from functions.inference.decoding.search import Seq2SeqConfig, cache_input_names, cache_output_names
from model_build.sources import SourceModel

OPSET = 18
ENCODER_INPUTS = ["input_ids", "attention_mask"]
MAX_POSITIONS_SERVED = 512  # the longest generation the runtime allows, unless the model allows less


class Seq2SeqSourceError(ValueError):
    """The checkpoint cannot be built as a translation model; the message says what to change."""


@dataclass(frozen=True)
class Family:
    """Where a decoder layer keeps its cross-attention key/value projections."""

    layers: Callable[[torch.nn.Module], list[torch.nn.Module]]
    cross_kv: Callable[[torch.nn.Module], tuple[torch.nn.Module, torch.nn.Module, int]]  # k, v, head_dim


def _bart_layers(decoder: torch.nn.Module) -> list[torch.nn.Module]:
    return list(decoder.layers)  # type: ignore[arg-type]


def _bart_cross(layer: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    attn: Any = layer.encoder_attn
    return attn.k_proj, attn.v_proj, int(attn.head_dim)


def _t5_cross(block: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    attn: Any = block.layer[1].EncDecAttention  # type: ignore[index]
    return attn.k, attn.v, int(attn.key_value_proj_dim)


_BART = Family(_bart_layers, _bart_cross)
_T5 = Family(lambda decoder: list(decoder.block), _t5_cross)  # type: ignore[arg-type]
FAMILIES: dict[str, Family] = {
    "marian": _BART,
    "bart": _BART,
    "mbart": _BART,
    "pegasus": _BART,
    "m2m_100": _BART,
    "t5": _T5,
    "mt5": _T5,
}


def family_of(model: PreTrainedModel) -> Family:
    model_type = model.config.model_type
    if model_type not in FAMILIES:
        raise Seq2SeqSourceError(
            f"model type {model_type!r} is not a supported encoder-decoder family; supported: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


class EncoderWithCrossCache(torch.nn.Module):
    """Runs the encoder once and projects its states into every decoder layer's cross-attention K/V."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.projections = [family_of(model).cross_kv(layer) for layer in family_of(model).layers(model.get_decoder())]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        batch, length = hidden.shape[:2]
        outputs: list[torch.Tensor] = []
        for key_proj, value_proj, head_dim in self.projections:
            for proj in (key_proj, value_proj):
                outputs.append(proj(hidden).view(batch, length, -1, head_dim).transpose(1, 2))
        return tuple(outputs)


class DecoderWithCache(torch.nn.Module):
    """One decoder step: ``(input_ids, encoder_attention_mask, *flat caches)`` → ``(logits, *self-attn present)``.

    The flat caches are, per layer, ``decoder.key, decoder.value, encoder.key, encoder.value``.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.num_layers = len(family_of(model).layers(model.get_decoder()))

    def forward(
        self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor, past: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        config = self.model.config
        self_cache, cross_cache = DynamicCache(config=config), DynamicCache(config=config)
        for i in range(self.num_layers):
            self_cache.update(past[4 * i], past[4 * i + 1], i)
            cross_cache.update(past[4 * i + 2], past[4 * i + 3], i)
        cache = EncoderDecoderCache(self_cache, cross_cache)
        for i in range(self.num_layers):
            cache.is_updated[i] = True  # cross-attention reads the cached K/V, never the encoder states
        # Only the shape of the encoder states is read (for the cross-attention mask).
        encoder_states = past[2].new_zeros(input_ids.shape[0], past[2].shape[2], config.d_model)
        out = self.model(
            decoder_input_ids=input_ids,
            encoder_outputs=(encoder_states,),
            attention_mask=encoder_attention_mask,
            past_key_values=cache,
            use_cache=True,
        )
        present = out.past_key_values.self_attention_cache
        flat: list[torch.Tensor] = [out.logits]
        for i in range(self.num_layers):
            flat += [present.layers[i].keys, present.layers[i].values]
        return tuple(flat)


def _export(module: torch.nn.Module, output: Path, **kwargs: Any) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(), dynamo=True, opset_version=OPSET, optimize=True, verbose=False, **kwargs
        )
    if program is None:  # pragma: no cover - dynamo always returns a program
        raise RuntimeError(f"torch.onnx.export returned nothing for {output.name}")
    program.save(str(output), external_data=False)


def export_seq2seq(model: PreTrainedModel, encoder_out: Path, decoder_out: Path) -> None:
    """Export the encoder (+ cross K/V) and the cached decoder with the dynamo exporter."""
    encoder_out.parent.mkdir(parents=True, exist_ok=True)
    layers = len(family_of(model).layers(model.get_decoder()))
    batch = torch.export.Dim("batch", min=1, max=4096)
    source_len = torch.export.Dim("encoder_sequence", min=1, max=4096)
    past_len = torch.export.Dim("past_sequence", min=0, max=4096)
    ids = torch.tensor([[5, 6, 7, 8, 3], [9, 10, 3, 1, 1]], dtype=torch.long) % model.config.vocab_size
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    _export(
        EncoderWithCrossCache(model),
        encoder_out,
        args=(),
        kwargs={"input_ids": ids, "attention_mask": mask},
        input_names=ENCODER_INPUTS,
        output_names=cache_output_names(layers, "encoder"),
        dynamic_shapes={"input_ids": {0: batch, 1: source_len}, "attention_mask": {0: batch, 1: source_len}},
    )
    with torch.no_grad():
        cross = EncoderWithCrossCache(model)(ids, mask)
    past: list[torch.Tensor] = []
    past_shapes: list[dict[int, Any]] = []
    for i in range(layers):
        self_kv = torch.randn(2, cross[2 * i].shape[1], 3, cross[2 * i].shape[3])
        past += [self_kv, self_kv.clone(), cross[2 * i], cross[2 * i + 1]]
        past_shapes += [{0: batch, 2: past_len}] * 2 + [{0: batch, 2: source_len}] * 2
    _export(
        DecoderWithCache(model),
        decoder_out,
        args=(torch.tensor([[4], [4]]), mask, tuple(past)),
        input_names=["input_ids", "encoder_attention_mask", *cache_input_names(layers)],
        output_names=["logits", *cache_output_names(layers, "decoder")],
        dynamic_shapes=({0: batch}, {0: batch, 1: source_len}, tuple(past_shapes)),
    )


# Generation options transformers would apply that the runtime does not reproduce: refuse them up front
# rather than ship an artifact whose outputs differ from the model's own generate().
_UNSUPPORTED = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "sequence_bias": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "num_beam_groups": 1,
}


def generation_settings(model: PreTrainedModel, *, max_source_tokens: int) -> Seq2SeqConfig:
    """The checkpoint's generation config in the runtime's terms; raises on options the runtime lacks."""
    gen, config = model.generation_config, model.config
    for name, neutral in _UNSUPPORTED.items():
        value = getattr(gen, name, neutral)
        if value is not None and value != neutral:
            raise Seq2SeqSourceError(
                f"generation_config.{name}={value!r} is not supported by the runtime; remove it from "
                "generation_config.json (or set it to its neutral value) to build this model"
            )
    bad_words = gen.bad_words_ids or []
    if any(len(words) != 1 for words in bad_words):
        raise Seq2SeqSourceError("generation_config.bad_words_ids: only single-token entries are supported")
    eos = _ids(gen.eos_token_id if gen.eos_token_id is not None else config.eos_token_id)
    start = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else config.decoder_start_token_id
    pad = gen.pad_token_id if gen.pad_token_id is not None else config.pad_token_id
    if not eos or start is None or pad is None:
        raise Seq2SeqSourceError(
            "the checkpoint's config must define eos_token_id, decoder_start_token_id, pad_token_id"
        )
    positions = getattr(config, "max_position_embeddings", None) or MAX_POSITIONS_SERVED + 1
    if max_source_tokens > positions:
        raise Seq2SeqSourceError(
            f"limits.max_seq_len={max_source_tokens} exceeds the model's {positions} positions; lower it in the catalog"
        )
    limit = min(MAX_POSITIONS_SERVED, positions - 1)
    return Seq2SeqConfig(
        decoder_start_token_id=int(start),
        eos_token_ids=eos,
        pad_token_id=int(pad),
        bad_word_ids=[int(w[0]) for w in bad_words if int(w[0]) not in eos],
        suppress_token_ids=_ids(gen.suppress_tokens),
        # transformers counts the decoder start token in min_length; min_new_tokens counts only new ones.
        min_length=max(int(gen.min_length or 0), 1 + int(gen.min_new_tokens) if gen.min_new_tokens else 0),
        forced_bos_token_id=gen.forced_bos_token_id,
        forced_eos_token_ids=_ids(gen.forced_eos_token_id),
        length_penalty=float(gen.length_penalty if gen.length_penalty is not None else 1.0),
        early_stopping=gen.early_stopping if gen.early_stopping is not None else False,
        default_max_new_tokens=min(64, limit),
        max_new_tokens_limit=limit,
        max_beams=8,
    )


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def torch_generate(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], *, max_new_tokens: int, num_beams: int = 1
) -> list[list[int]]:
    """transformers' own ``generate`` (no sampling): the new ids per input, up to and including the first EOS."""
    from transformers.utils import logging as hf_logging

    eos = set(_ids(model.generation_config.eos_token_id))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "max_new_tokens takes precedence over max_length" is what we want
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                do_sample=False,
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                num_return_sequences=1,
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return [_until_eos(row[1:].tolist(), eos) for row in out]


def _until_eos(ids: list[int], eos: set[int]) -> list[int]:
    for index, token in enumerate(ids):
        if token in eos:
            return ids[: index + 1]
    return ids


def torch_step_logits(model: PreTrainedModel, batch: dict[str, torch.Tensor], targets: list[list[int]]) -> torch.Tensor:
    """Teacher-forced logits ``[batch, steps, vocab]`` along ``targets`` (decoder start prepended)."""
    settings = model.generation_config
    start = (
        settings.decoder_start_token_id
        if settings.decoder_start_token_id is not None
        else model.config.decoder_start_token_id
    )
    pad = settings.pad_token_id if settings.pad_token_id is not None else model.config.pad_token_id
    decoder_ids = torch.full((len(targets), max(len(t) for t in targets)), int(pad), dtype=torch.long)
    for row, target in enumerate(targets):
        decoder_ids[row, : len(target)] = torch.tensor([int(start), *target[:-1]], dtype=torch.long)
    with torch.inference_mode():
        return model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=decoder_ids
        ).logits.float()


def load_seq2seq(path: Path) -> SourceModel:
    """A local transformers checkpoint (config.json + weights) with a ``tokenizer.json`` beside it."""
    tokenizer = path / "tokenizer.json"
    if not tokenizer.is_file():
        raise Seq2SeqSourceError(
            f"{path} has no tokenizer.json: the runtime tokenizes with the `tokenizers` library only; "
            "save one there (see docs/translation.md, 'Tokenizer')"
        )
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(path), attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise Seq2SeqSourceError(f"{path} is not a loadable encoder-decoder checkpoint: {exc}") from exc
    model.eval()
    family_of(model)
    target = path / "target_tokenizer.json"

    def reference(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(**batch, do_sample=False, num_beams=1)  # type: ignore[no-any-return]

    return SourceModel(
        task=Task.TRANSLATION,
        module=model,
        tokenizer_file=tokenizer,
        output_names=["logits"],
        reference=reference,
        model_type=model.config.model_type,
        num_heads=int(getattr(model.config, "decoder_attention_heads", 0) or getattr(model.config, "num_heads", 0)),
        hidden_size=int(model.config.d_model),
        extra={"target_tokenizer_file": target if target.is_file() else None},
    )
