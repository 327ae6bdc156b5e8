"""Autoregressive text generation on an ONNX decoder with a KV cache: sampling, chat template, the loop."""

from __future__ import annotations

from functions.inference.generation.chat import ChatMessage, render_chat
from functions.inference.generation.config import GenerationConfig
from functions.inference.generation.loop import FinishReason, Generation, KVCacheDecoder
from functions.inference.generation.sampling import Sampler, SamplingParams

__all__ = [
    "ChatMessage",
    "FinishReason",
    "Generation",
    "GenerationConfig",
    "KVCacheDecoder",
    "Sampler",
    "SamplingParams",
    "render_chat",
]
