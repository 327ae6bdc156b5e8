"""Autoregressive decoding on ONNX graphs with a KV cache, for both model families.

- decoder-only LMs: :mod:`.kv_cache` (the graph driven one chunk at a time, optionally with a shared
  in-place cache), :mod:`.stream` (one generation as text deltas: EOS, stop sequences, finish reasons),
  :mod:`.sampling` (greedy, temperature, top-k, top-p), :mod:`.chat` (ChatML), :mod:`.config`;
- encoder-decoders: :mod:`.search` (greedy and beam search, transformers' logits processors, in numpy).
"""

from __future__ import annotations

from functions.inference.decoding.chat import ChatMessage, Control, chat_segments, render_chat
from functions.inference.decoding.config import GenerationConfig
from functions.inference.decoding.kv_cache import KVCacheDecoder
from functions.inference.decoding.sampling import Sampler, SamplingParams
from functions.inference.decoding.stream import FinishReason, Generation

__all__ = [
    "ChatMessage",
    "Control",
    "FinishReason",
    "Generation",
    "GenerationConfig",
    "KVCacheDecoder",
    "Sampler",
    "SamplingParams",
    "chat_segments",
    "render_chat",
]
