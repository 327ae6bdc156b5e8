"""Text generation (decoder-only LMs with a KV cache): prompts → generations, and the pieces the OpenAI routes use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from tokenizers import Tokenizer

from functions.contract import Manifest, Task
from functions.errors import ArtifactError, InvalidInputError, PayloadTooLargeError
from functions.inference.decoding import (
    ChatMessage,
    Control,
    Generation,
    GenerationConfig,
    KVCacheDecoder,
    Sampler,
    SamplingParams,
    chat_segments,
    render_chat,
)
from functions.inference.decoding.chat import IM_END, IM_START
from functions.inference.decoding.config import CONFIG_KEY
from functions.inference.decoding.deadline import current_deadline
from functions.inference.pipelines.base import (
    Capability,
    Pipeline,
    Prepared,
    TaskParameters,
    TaskResult,
    is_cancelled,
)
from functions.inference.tokenizer import check_text

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 128


class GenerationParameters(TaskParameters):
    """Task-API / OIP parameters, named as in Hugging Face TGI."""

    max_new_tokens: int | None = Field(None, ge=1, description="new tokens to generate at most (default: the model's)")
    do_sample: bool | None = Field(
        None, description="sample instead of greedy decoding (default: sample iff temperature/top_k/top_p is given)"
    )
    temperature: float | None = Field(None, ge=0, le=5, description="softmax temperature; 0 means greedy")
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely tokens")
    top_p: float | None = Field(None, gt=0, le=1, description="sample among the smallest set with this mass")
    seed: int | None = Field(None, ge=0, description="makes sampling reproducible")
    stop: list[str] = Field(default_factory=list, description="stop before any of these strings (at most 4)")
    return_full_text: bool = Field(False, description="prefix the prompt to the generated text")

    @model_validator(mode="after")
    def _consistent(self) -> GenerationParameters:
        if self.do_sample is False and (self.temperature or self.top_k or self.top_p is not None):
            raise ValueError("temperature/top_k/top_p only apply when do_sample is true (or left unset)")
        return self

    def sampling(self) -> SamplingParams:
        sample = (
            self.do_sample
            if self.do_sample is not None
            else any(v is not None for v in (self.temperature, self.top_k, self.top_p))
        )
        if not sample:
            return SamplingParams(temperature=0.0, seed=self.seed)
        return SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_k=self.top_k or 0,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
        )


def check_stop(stop: list[str], param: str = "stop") -> tuple[str, ...]:
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidInputError(f"{param} has {len(stop)} sequences; at most {MAX_STOP_SEQUENCES}", param=param)
    for index, item in enumerate(stop):
        if not item or len(item) > MAX_STOP_CHARS:
            raise InvalidInputError(
                f"{param}[{index}] must be a non-empty string of at most {MAX_STOP_CHARS} characters",
                param=f"{param}[{index}]",
            )
        check_text(item, f"{param}[{index}]")
    return tuple(stop)


@dataclass(frozen=True)
class Prompt:
    """One prompt, ready to generate from: its token ids and its new-token budget."""

    text: str
    ids: list[int]
    max_new_tokens: int


class GenerationPipeline(Pipeline[GenerationParameters]):
    task = Task.TEXT_GENERATION
    capabilities = frozenset({Capability.TEXT_INPUT, Capability.GENERATE})
    parameters_model = GenerationParameters
    spin_threads = True

    def __init__(self, directory: Path, manifest: Manifest, **kwargs: Any) -> None:
        super().__init__(directory, manifest, **kwargs)
        if manifest.tokenizer_file is None:
            raise ArtifactError(f"{manifest.name}: a generation model needs a tokenizer file")
        try:
            self.config = GenerationConfig.model_validate(manifest.config.get(CONFIG_KEY, {}))
        except ValidationError as exc:
            raise ArtifactError(f"{manifest.name}: manifest.config.{CONFIG_KEY} is invalid: {exc}") from exc
        self.tokenizer = Tokenizer.from_file(str(directory / manifest.tokenizer_file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        # Chat messages are tokenized as plain text: "<|im_start|>" typed by a user is characters, not a token.
        self.plain_tokenizer = Tokenizer.from_file(str(directory / manifest.tokenizer_file))
        self.plain_tokenizer.no_truncation()
        self.plain_tokenizer.no_padding()
        self.plain_tokenizer.encode_special_tokens = True
        self.control_ids: dict[str, int] = {}
        for token in (IM_START, IM_END):
            token_id = self.tokenizer.token_to_id(token)
            if token_id is None:
                raise ArtifactError(f"{manifest.name}: the tokenizer lacks the chat control token {token!r}")
            self.control_ids[token] = token_id
        self.decoder = KVCacheDecoder(self.session)
        self.eos_token_ids = frozenset(self.config.eos_token_ids)

    # --- building blocks (also used by the OpenAI routes) -----------------------------------------
    def encode(self, text: str, *, param: str = "inputs") -> list[int]:
        """Prompt text → token ids, refusing prompts over the model's limits (413) or not valid text (422)."""
        check_text(text, param)
        self._check_chars(len(text), param)
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=True).ids
        return self._check_tokens(ids, param)

    def encode_chat(self, messages: list[ChatMessage], *, param: str = "messages") -> list[int]:
        """A chat → token ids: the template's control tokens by id, every text segment (role headers, message
        contents) tokenized as plain text, so no message can open or close a turn. Limits as for prompts."""
        for index, message in enumerate(messages):
            check_text(message.content, f"{param}[{index}].content")
        segments = chat_segments(messages, default_system_prompt=self.config.default_system_prompt)
        self._check_chars(sum(len(s.token if isinstance(s, Control) else s) for s in segments), param)
        ids: list[int] = []
        for segment in segments:
            if isinstance(segment, Control):
                ids.append(self.control_ids[segment.token])
            else:
                ids += self.plain_tokenizer.encode(segment, add_special_tokens=False).ids
        return self._check_tokens(ids, param)

    def _check_chars(self, count: int, param: str) -> None:
        if count > self.limits.max_input_chars:
            raise PayloadTooLargeError(
                f"{param} has {count} characters; {self.name} accepts at most {self.limits.max_input_chars}",
                param=param,
            )

    def _check_tokens(self, ids: list[int], param: str) -> list[int]:
        if not ids:
            raise InvalidInputError(f"{param} is empty: send a prompt of at least one token", param=param)
        if len(ids) > self.limits.max_seq_len:
            raise PayloadTooLargeError(
                f"{param} has {len(ids)} tokens; {self.name} accepts prompts of at most {self.limits.max_seq_len} "
                "tokens. Shorten the prompt",
                param=param,
            )
        return ids

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        """The chat as the template's string (the build compares it with the model's Jinja template); to serve a
        chat, use :meth:`encode_chat`, never this string tokenized."""
        return render_chat(messages, default_system_prompt=self.config.default_system_prompt)

    def new_token_budget(
        self, prompt_tokens: int, requested: int | None, *, param: str = "max_new_tokens", default: int | None = None
    ) -> int:
        """The new-token limit for one request: 422 above the model's cap, 413 past its context.

        Without a request, ``default`` (else the model's default) is used, cut to the room left in the context.
        """
        cap, room = self.config.max_new_tokens, self.config.context_length - prompt_tokens
        if requested is None:
            return max(1, min(default or self.config.default_max_new_tokens, cap, room))
        if requested > cap:
            raise InvalidInputError(f"{param} is {requested}; {self.name} generates at most {cap} tokens", param=param)
        if requested > room:
            raise PayloadTooLargeError(
                f"prompt ({prompt_tokens} tokens) + {param} ({requested}) exceeds the model's context of "
                f"{self.config.context_length} tokens; lower {param} to at most {room}",
                param=param,
            )
        return requested

    def generation(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams,
        stop: tuple[str, ...] = (),
    ) -> Generation:
        """A not-yet-started generation: iterate it for streamed text, or call ``run()``.

        It stops in time for the current request's deadline, if any (finish reason "length"), and when the caller
        goes away."""
        return Generation(
            decoder=self.decoder,
            decode=self.decode,
            prompt_ids=prompt_ids,
            max_new_tokens=max_new_tokens,
            sampler=Sampler(sampling),
            eos_token_ids=self.eos_token_ids,
            stop=stop,
            cancelled=is_cancelled,
            deadline=current_deadline(),
        )

    # --- prepare → execute → finish --------------------------------------------------------------------
    def prepare(
        self, inputs: Sequence[Any], parameters: Mapping[str, Any] | None = None
    ) -> Prepared[GenerationParameters]:
        """Every prompt encoded and checked before any is generated, so a bad item fails fast."""
        params = self.parse_parameters(parameters)
        check_stop(params.stop)
        self.check_batch(len(inputs))
        prompts: list[Prompt] = []
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InvalidInputError(
                    f"inputs[{index}] must be a prompt string, got {type(item).__name__}", param=f"inputs[{index}]"
                )
            ids = self.encode(item, param=f"inputs[{index}]")
            prompts.append(Prompt(item, ids, self.new_token_budget(len(ids), params.max_new_tokens)))
        return Prepared(prompts, params, [len(p.ids) for p in prompts])

    def execute(self, features: Sequence[Prompt], parameters: GenerationParameters) -> list[Generation]:
        """The prompts' generations, one after another. Under a deadline, a prompt reached when no time is left
        gets no new tokens (finish reason "length"): the request is answered in time with what was made."""
        stop = tuple(parameters.stop)
        return [
            self.generation(p.ids, max_new_tokens=p.max_new_tokens, sampling=parameters.sampling(), stop=stop).run()
            for p in features
        ]

    def finish(self, outputs: list[Generation], prepared: Prepared[GenerationParameters]) -> TaskResult:
        params = prepared.parameters
        texts = [p.text if params.return_full_text else "" for p in prepared.features]
        return TaskResult(
            [
                {
                    "generated_text": prefix + generation.text,
                    "finish_reason": str(generation.finish_reason),
                    "generated_tokens": generation.completion_tokens,
                }
                for prefix, generation in zip(texts, outputs, strict=True)
            ],
            sum(prepared.token_counts),
            prepared.truncated,
            prepared.token_counts,
            output_tokens=sum(g.completion_tokens for g in outputs),
        )

    def warmup(self) -> None:
        ids = self.encode("Hello")
        self.generation(ids, max_new_tokens=2, sampling=SamplingParams()).run()
