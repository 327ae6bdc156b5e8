"""A decoder-only graph driven with a KV cache: prefill the prompt once, then one token per step.

The graph contract (see ``model_build/export_decoder.py``): inputs ``input_ids``, ``attention_mask``,
``position_ids`` and ``past_key_values.{i}.key/value``; outputs last-position ``logits`` and
``present.{i}.key/value``. Each step feeds the presents of the step before, so a token costs the same
whatever the context length, apart from attention itself.

Graphs built around ``GroupQueryAttention`` (``model_build/graph/decoder_graph.py``, metadata
``maas.kv_cache = shared-buffer``) can also keep the cache in place: each past/present pair is bound to
one preallocated buffer [1, kv_heads, capacity, head_dim] through an IO binding, and the attention
kernel appends the new keys and values where they belong instead of the graph copying the whole cache
into a new present tensor every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from functions.errors import ArtifactError

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."
KV_CACHE_METADATA = "maas.kv_cache"
SHARED_BUFFER = "shared-buffer"


@dataclass
class KVCache:
    tensors: dict[str, np.ndarray]
    length: int = 0
    # Shared-buffer mode: ``tensors`` are the preallocated buffers, bound as both past and present.
    binding: ort.IOBinding | None = None

    @property
    def capacity(self) -> int:
        """Tokens the shared buffers hold (0 for a concatenating cache)."""
        if self.binding is None or not self.tensors:
            return 0
        return int(next(iter(self.tensors.values())).shape[2])


class KVCacheDecoder:
    """Runs the decoder graph one chunk at a time for a batch of one sequence."""

    def __init__(self, session: ort.InferenceSession, *, shared_buffer: bool | None = None) -> None:
        """``shared_buffer``: None = whatever the graph's metadata allows; False = always feed presents back."""
        self.session = session
        inputs = {i.name: i for i in session.get_inputs()}
        self.past_names = [name for name in inputs if name.startswith(PAST_PREFIX)]
        missing = {"input_ids", "attention_mask", "position_ids"} - inputs.keys()
        if missing or not self.past_names:
            raise ArtifactError(
                f"the decoder graph lacks {sorted(missing) or 'past_key_values.* inputs'}: rebuild with a KV cache"
            )
        outputs = [o.name for o in session.get_outputs()]
        self.present_names = [PRESENT_PREFIX + name[len(PAST_PREFIX) :] for name in self.past_names]
        if outputs[0] != "logits" or set(self.present_names) - set(outputs):
            raise ArtifactError("the decoder graph must output logits and present.* for every past input")
        shape = inputs[self.past_names[0]].shape  # [batch, kv_heads, past_sequence, head_dim]
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.output_names = ["logits", *self.present_names]
        metadata = session.get_modelmeta().custom_metadata_map
        supported = metadata.get(KV_CACHE_METADATA) == SHARED_BUFFER
        if shared_buffer and not supported:
            raise ArtifactError("this decoder graph cannot share past/present buffers (no maas.kv_cache metadata)")
        self.shared_buffer = supported if shared_buffer is None else shared_buffer

    def empty_cache(self, capacity: int = 0) -> KVCache:
        """A cache for one sequence. ``capacity``: the tokens it will reach (prompt + new tokens); with a
        shared-buffer graph the cache is preallocated to that and grows if a sequence outruns it."""
        if self.shared_buffer and capacity > 0:
            binding = self.session.io_binding()
            binding.bind_output("logits", "cpu")  # first: get_outputs() lists bound outputs in order
            cache = KVCache({}, binding=binding)
            self._allocate(cache, capacity)
            return cache
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32)
        return KVCache({name: empty for name in self.past_names})

    def _allocate(self, cache: KVCache, capacity: int) -> None:
        """(Re)bind every past/present pair to one buffer of ``capacity`` tokens, keeping what it holds."""
        assert cache.binding is not None
        shape = (1, self.kv_heads, capacity, self.head_dim)
        for past, present in zip(self.past_names, self.present_names, strict=True):
            buffer = np.zeros(shape, dtype=np.float32)
            if past in cache.tensors:
                buffer[:, :, : cache.length] = cache.tensors[past][:, :, : cache.length]
            cache.tensors[past] = buffer  # the OrtValue borrows this array's memory: keep it referenced
            value = ort.OrtValue.ortvalue_from_numpy(buffer)
            cache.binding.bind_ortvalue_input(past, value)
            cache.binding.bind_ortvalue_output(present, value)

    def _feeds(self, token_ids: list[int], cache: KVCache) -> dict[str, np.ndarray]:
        total = cache.length + len(token_ids)
        return {
            "input_ids": np.asarray([token_ids], dtype=np.int64),
            "attention_mask": np.ones((1, total), dtype=np.int64),
            "position_ids": np.arange(cache.length, total, dtype=np.int64)[None, :],
        }

    def forward(self, token_ids: list[int], cache: KVCache) -> np.ndarray:
        """Feed ``token_ids`` after what ``cache`` holds; update the cache; return the next-token logits."""
        feeds = self._feeds(token_ids, cache)
        if cache.binding is not None:
            needed = cache.length + len(token_ids)
            if needed > cache.capacity:
                self._allocate(cache, max(needed, 2 * cache.capacity))
            for name, array in feeds.items():
                cache.binding.bind_cpu_input(name, array)
            self.session.run_with_iobinding(cache.binding)
            # A view of a buffer ORT reuses on the next run: the row is copied out below.
            logits = cache.binding.get_outputs()[0].numpy()
        else:
            logits, *presents = self.session.run(self.output_names, {**feeds, **cache.tensors})
            cache.tensors = dict(zip(self.past_names, presents, strict=True))
        cache.length += len(token_ids)
        next_logits: np.ndarray = np.array(logits[0, -1], copy=True)
        return next_logits
