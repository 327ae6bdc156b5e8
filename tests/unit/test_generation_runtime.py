"""The generation runtime without a model: sampling, ChatML, stop sequences and streaming deltas."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from functions.errors import InvalidInputError
from functions.inference.decoding import ChatMessage, FinishReason, Generation, Sampler, SamplingParams, render_chat
from functions.inference.decoding.kv_cache import KVCache
from functions.inference.pipelines.generation import GenerationParameters, check_stop

VOCAB = ["<eos>", "Hel", "lo", " wor", "ld", "!", " STOP", "\n", "é"]
EOS = 0


@dataclass
class ScriptedDecoder:
    """Stands in for KVCacheDecoder: emits a fixed token script as one-hot logits, counting calls."""

    script: list[int]
    calls: list[list[int]] = field(default_factory=list)

    def empty_cache(self, capacity: int = 0) -> KVCache:
        return KVCache({})

    def forward(self, token_ids: list[int], cache: KVCache) -> np.ndarray:
        self.calls.append(list(token_ids))
        step = len(self.calls) - 1
        logits = np.full(len(VOCAB), -10.0, dtype=np.float32)
        logits[self.script[min(step, len(self.script) - 1)]] = 10.0
        cache.length += len(token_ids)
        return logits


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def generation(script: list[int], *, max_new_tokens: int = 10, stop: tuple[str, ...] = ()) -> Generation:
    return Generation(
        decoder=ScriptedDecoder(script),  # type: ignore[arg-type]
        decode=decode,
        prompt_ids=[1, 2],
        max_new_tokens=max_new_tokens,
        sampler=Sampler(SamplingParams()),
        eos_token_ids=frozenset({EOS}),
        stop=stop,
    )


def test_eos_ends_generation_and_is_not_in_the_text() -> None:
    g = generation([1, 2, 5, EOS, 3]).run()
    assert (g.text, g.finish_reason, g.completion_tokens, g.prompt_tokens) == ("Hello!", FinishReason.STOP, 4, 2)


def test_prompt_is_fed_once_then_one_token_per_step() -> None:
    g = generation([1, 2, EOS])
    g.run()
    assert g.decoder.calls == [[1, 2], [1], [2]]  # type: ignore[attr-defined]


def test_max_new_tokens_gives_finish_reason_length() -> None:
    g = generation([1, 2, 3, 4, 5], max_new_tokens=3).run()
    assert (g.text, g.finish_reason, g.completion_tokens) == ("Hello wor", FinishReason.LENGTH, 3)


def test_stop_sequence_across_tokens_is_cut_and_never_streamed() -> None:
    g = generation([1, 2, 3, 4, 5, 3], stop=("world!",))
    deltas = list(g)
    assert g.text == "Hello " and g.finish_reason is FinishReason.STOP
    assert "".join(deltas) == "Hello "
    assert all("wor" not in d for d in deltas)


def test_streamed_deltas_add_up_to_the_text() -> None:
    g = generation([1, 2, 3, 4, 5, 7, 8, EOS])
    assert "".join(g) == g.text == "Hello world!\né"


def test_partial_stop_prefix_is_released_when_it_does_not_complete() -> None:
    g = generation([1, 2, 3, 4, EOS], stop=(" world peace",))
    assert "".join(g) == "Hello world"


def test_greedy_sampler_is_argmax() -> None:
    logits = np.array([0.1, 3.0, 2.0])
    assert Sampler(SamplingParams())(logits) == 1


def test_top_k_one_is_greedy_even_when_hot() -> None:
    logits = np.random.default_rng(0).normal(size=1000)
    sampler = Sampler(SamplingParams(temperature=2.0, top_k=1, seed=1))
    assert {sampler(logits) for _ in range(20)} == {int(np.argmax(logits))}


def test_seed_makes_sampling_reproducible() -> None:
    logits = np.random.default_rng(0).normal(size=500)
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=42)
    first, second = Sampler(params), Sampler(params)
    assert [first(logits) for _ in range(30)] == [second(logits) for _ in range(30)]


@pytest.mark.parametrize("temperature", [1e-310, 5e-324, 1e-300, 1e-30])
def test_a_vanishing_temperature_samples_the_greedy_token(temperature: float) -> None:
    # 1e-310 is subnormal: logits / T overflowed to inf and inf - inf = NaN picked garbage tokens
    logits = np.random.default_rng(3).normal(size=49_152).astype(np.float32) * 10
    for top_k, top_p in [(0, 1.0), (50, 0.9)]:
        sampler = Sampler(SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=0))
        assert [sampler(logits) for _ in range(5)] == [int(np.argmax(logits))] * 5
        _, probs = sampler.distribution(logits)
        assert np.isfinite(probs).all() and probs[0] == 1.0


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    ids, probs = Sampler(SamplingParams(temperature=1.0, top_p=0.75)).distribution(logits)
    assert ids.tolist() == [0, 1] and probs.sum() == pytest.approx(1.0)


def test_sampling_follows_the_distribution() -> None:
    logits = np.log(np.array([0.7, 0.2, 0.1]))
    sampler = Sampler(SamplingParams(temperature=1.0, seed=0))
    counts = np.bincount([sampler(logits) for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(counts, [0.7, 0.2, 0.1], atol=0.03)


def test_chatml_with_default_system_prompt() -> None:
    text = render_chat([ChatMessage("user", "Hi")], default_system_prompt="Be kind.")
    assert text == "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_chatml_keeps_an_explicit_system_message() -> None:
    text = render_chat([ChatMessage("system", "S"), ChatMessage("user", "U")], default_system_prompt="ignored")
    assert text.count("system") == 1 and text.startswith("<|im_start|>system\nS<|im_end|>")


def test_chat_refuses_unknown_roles_and_empty_chats() -> None:
    with pytest.raises(InvalidInputError, match="role"):
        render_chat([ChatMessage("tool", "x")], default_system_prompt=None)
    with pytest.raises(InvalidInputError, match="empty"):
        render_chat([], default_system_prompt=None)


def test_task_parameters_choose_greedy_or_sampling() -> None:
    assert GenerationParameters().sampling().greedy
    assert not GenerationParameters(temperature=0.7).sampling().greedy
    assert GenerationParameters(do_sample=True, seed=3).sampling() == SamplingParams(temperature=1.0, seed=3)
    with pytest.raises(ValueError, match="do_sample"):
        GenerationParameters(do_sample=False, top_k=5)


def test_stop_sequences_are_bounded() -> None:
    assert check_stop(["\n"]) == ("\n",)
    with pytest.raises(InvalidInputError, match="at most 4"):
        check_stop(["a", "b", "c", "d", "e"])
    with pytest.raises(InvalidInputError, match="non-empty"):
        check_stop([""])


# --- deadlines: generation ends in time, with finish_reason "length" and honest counts ---------------------------
@dataclass
class SlowDecoder(ScriptedDecoder):
    """A scripted decoder whose every step takes ``step_s`` (the prompt: ``prefill_s``)."""

    step_s: float = 0.02
    prefill_s: float = 0.05

    def forward(self, token_ids: list[int], cache: KVCache) -> np.ndarray:
        import time

        time.sleep(self.prefill_s if not self.calls else self.step_s)
        return super().forward(token_ids, cache)


def timed_generation(deadline_in_s: float | None, *, max_new_tokens: int = 1000) -> Generation:
    import time

    return Generation(
        decoder=SlowDecoder(script=[1, 2, 3, 4] * 500),  # type: ignore[arg-type]
        decode=decode,
        prompt_ids=[1, 2],
        max_new_tokens=max_new_tokens,
        sampler=Sampler(SamplingParams()),
        eos_token_ids=frozenset({EOS}),
        deadline=None if deadline_in_s is None else time.monotonic() + deadline_in_s,
    )


def test_a_deadline_stops_generation_before_it_with_finish_reason_length() -> None:
    import time

    started = time.monotonic()
    g = timed_generation(0.5)
    streamed = "".join(g)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5  # never past the deadline, at most one step (plus the safety factor) short of it
    assert elapsed > 0.5 - 2 * SlowDecoder.step_s * 2 - 0.05  # and the time was used
    assert g.finish_reason is FinishReason.LENGTH and 5 < g.completion_tokens < 1000
    assert streamed == g.text == decode(g.token_ids)  # the text is exactly the tokens counted
    assert len(g.decoder.calls) == g.completion_tokens  # type: ignore[attr-defined]  # no step wasted after the stop


def test_no_time_left_means_no_tokens_and_no_model_run() -> None:
    g = timed_generation(-0.01)
    assert list(g) == [] and g.finish_reason is FinishReason.LENGTH and g.completion_tokens == 0
    assert g.decoder.calls == []  # type: ignore[attr-defined]


def test_a_generous_deadline_changes_nothing() -> None:
    g = timed_generation(60, max_new_tokens=5).run()
    assert g.finish_reason is FinishReason.LENGTH and g.completion_tokens == 5 and g.text == "Hello worldHel"


def test_the_request_deadline_comes_from_the_deployment() -> None:
    """The soonest of MAAS_REQUEST_TIMEOUT_S, the Lambda context's remaining time and the adapter's header, less a
    margin for the answer to travel back."""
    import asyncio
    import json as json_module
    import time

    from functions.context import DeadlineContext
    from functions.inference.decoding.deadline import current_deadline
    from functions.web.deadline import MARGIN_S, DeadlineMiddleware

    seen: list[float | None] = []

    async def app(scope: object, receive: object, send: object) -> None:
        seen.append(current_deadline())

    def deadline_of(scope: dict[str, object], timeout_s: float = 0.0) -> float | None:
        asyncio.run(DeadlineMiddleware(app, timeout_s=timeout_s)({"type": "http", **scope}, None, None))  # type: ignore[arg-type]
        value = seen.pop()
        return None if value is None else value - time.monotonic()

    assert deadline_of({"headers": []}) is None  # `maas serve` without a timeout: none
    assert deadline_of({"headers": []}, timeout_s=20) == pytest.approx(20 - MARGIN_S, abs=0.05)
    lambda_scope = {"headers": [], "aws.context": DeadlineContext(5.0)}
    assert deadline_of(lambda_scope, timeout_s=20) == pytest.approx(5 - MARGIN_S, abs=0.05)
    header = json_module.dumps({"deadline": int((time.time() + 3) * 1000), "request_id": "r"}).encode()
    adapter_scope = {"headers": [(b"x-amzn-lambda-context", header)]}
    assert deadline_of(adapter_scope, timeout_s=20) == pytest.approx(3 - MARGIN_S, abs=0.05)
    forged = {"headers": [(b"x-amzn-lambda-context", b'{"deadline": 99999999999999}')]}
    assert deadline_of(forged, timeout_s=20) == pytest.approx(20 - MARGIN_S, abs=0.05)  # a header only shortens it
