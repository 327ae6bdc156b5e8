"""The fused Llama decoder graph (GroupQueryAttention) computes what transformers does, through both
KV-cache modes of the runtime: concatenating presents, and one shared buffer per layer (that grows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from functions.inference.decoding import Generation, Sampler, SamplingParams
from functions.inference.decoding.kv_cache import KVCacheDecoder
from model_build.graph.decoder_graph import build_decoder_graph, unsupported

IDS = [5, 17, 99, 3, 42, 64, 7, 120, 11, 8, 77, 31]


def tiny_llama(**overrides: object) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=True,
        **overrides,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # RMSNorm weights start at 1: perturb them so a wrong norm wiring shows
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.3)
    return model


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[LlamaForCausalLM, KVCacheDecoder, Path]:
    model = tiny_llama()
    path = build_decoder_graph(model, tmp_path_factory.mktemp("decoder") / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return model, KVCacheDecoder(session), path


def torch_logits(model: LlamaForCausalLM, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].numpy()


def test_graph_is_fused_and_marks_its_shared_buffer_cache(
    decoder: tuple[LlamaForCausalLM, KVCacheDecoder, Path],
) -> None:
    _, runtime, path = decoder
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("GroupQueryAttention") == 2 and ops.count("SkipSimplifiedLayerNormalization") == 4
    assert "Softmax" not in ops and "Concat" not in ops  # attention and the cache append live in the kernel
    assert runtime.shared_buffer


@pytest.mark.parametrize("capacity", [0, len(IDS), 4], ids=["concatenating", "shared-buffer", "shared-buffer-grows"])
@pytest.mark.parametrize("prefill", [1, 5])
def test_logits_match_transformers_step_by_step(
    decoder: tuple[LlamaForCausalLM, KVCacheDecoder, Path], capacity: int, prefill: int
) -> None:
    model, runtime, _ = decoder
    expected = torch_logits(model, IDS)[prefill - 1 :]
    cache = runtime.empty_cache(capacity=capacity)
    got = [runtime.forward(IDS[:prefill], cache)] + [runtime.forward([token], cache) for token in IDS[prefill:]]
    assert (cache.binding is not None) == (capacity > 0)
    assert cache.length == len(IDS) and cache.capacity >= (len(IDS) if capacity else 0)
    assert np.abs(np.stack(got) - expected).max() < 1e-4


def test_greedy_generation_equals_transformers_generate(decoder: tuple[LlamaForCausalLM, KVCacheDecoder, Path]) -> None:
    model, runtime, _ = decoder
    prompt = IDS[:4]
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=20, min_new_tokens=20, do_sample=False,
                             pad_token_id=0)  # fmt: skip
    generation = Generation(
        decoder=runtime, decode=lambda ids: " ".join(map(str, ids)), prompt_ids=prompt, max_new_tokens=20,
        sampler=Sampler(SamplingParams()), eos_token_ids=frozenset(),
    )  # fmt: skip
    assert generation.run().token_ids == out[0, len(prompt) :].tolist()


def test_unsupported_decoders_are_named_not_mis_built(tmp_path: Path) -> None:
    assert unsupported(tiny_llama()) is None
    biased = tiny_llama(attention_bias=True)
    assert "bias" in str(unsupported(biased))
    with pytest.raises(ValueError, match="bias"):
        build_decoder_graph(biased, tmp_path / "model.onnx")
    assert "rope_type" in str(unsupported(tiny_llama(rope_parameters={"rope_type": "dynamic", "factor": 2.0})))
