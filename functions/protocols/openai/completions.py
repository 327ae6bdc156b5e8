"""OpenAI-compatible text generation: ``POST /v1/completions`` and ``POST /v1/chat/completions``.

``stream: true`` answers with server-sent events (``data: {chunk}`` … ``data: [DONE]``) token by token under
uvicorn: ``maas serve``, the GPU container, and a deployed Lambda generation function (the Lambda Web Adapter runs
the app under uvicorn and API Gateway streams the response). Behind Mangum (``maas invoke``, a buffered Lambda) the
same events arrive in one response when generation ends: clients parse them the same way, they just see no progress.
A stream that ends early (its client went away, or an error) logs how many tokens were made.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from functions.errors import InvalidInputError, MaasError, UnsupportedOperationError
from functions.inference.decoding import ChatMessage, Generation, SamplingParams
from functions.inference.pipelines import Capability
from functions.inference.pipelines.generation import GenerationPipeline, check_stop
from functions.inference.registry import ModelRegistry
from functions.protocols.base import RegistryDep, protocol_router, record_usage
from functions.protocols.openai.completion_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
)
from functions.protocols.openai.errors import OPENAI
from functions.telemetry import logger

router = protocol_router(OPENAI, prefix="/v1", tags=["OpenAI-compatible"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# With ``stream: true`` the 200 is a server-sent event stream instead of the JSON body.
STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {"schema": {"type": "string", "description": "data: {chunk} ... data: [DONE]"}}
        }
    }
}


def _pipeline(registry: ModelRegistry, model: str, route: str) -> GenerationPipeline:
    pipeline = registry.get(model)
    if not pipeline.has(Capability.GENERATE) or not isinstance(pipeline, GenerationPipeline):
        raise UnsupportedOperationError(
            f"model {model!r} is a {pipeline.task.value} model; {route} needs a text-generation model "
            "(see GET /v1/models)",
            param="model",
        )
    return pipeline


def _refuse(condition: bool, param: str, message: str) -> None:
    if condition:
        raise InvalidInputError(f"{param}: {message}", param=param)


def _check_common(request: CompletionRequest | ChatCompletionRequest) -> None:
    _refuse(request.n != 1, "n", "this server returns one choice per prompt; send n = 1 or omit it")
    _refuse(
        bool(request.presence_penalty or request.frequency_penalty),
        "presence_penalty",
        "penalties are not supported; omit presence_penalty and frequency_penalty",
    )
    _refuse(bool(request.logit_bias), "logit_bias", "not supported; omit it")


def _sampling(request: CompletionRequest | ChatCompletionRequest) -> SamplingParams:
    """OpenAI semantics: temperature defaults to 1 (sampling); temperature 0 is greedy."""
    return SamplingParams(
        temperature=1.0 if request.temperature is None else request.temperature,
        top_k=request.top_k or 0,
        top_p=1.0 if request.top_p is None else request.top_p,
        seed=request.seed,
    )


def _stop(request: CompletionRequest | ChatCompletionRequest) -> tuple[str, ...]:
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return check_stop(stop, "stop")


def _usage(generations: list[Generation]) -> CompletionUsage:
    prompt = sum(g.prompt_tokens for g in generations)
    completion = sum(g.completion_tokens for g in generations)
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _record(http: Request, pipeline: GenerationPipeline, generations: list[Generation]) -> None:
    usage = _usage(generations)
    record_usage(
        http,
        pipeline.name,
        inputs=len(generations),
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
    )


def _run_all(generations: list[Generation]) -> None:
    for generation in generations:
        generation.run()


async def _sse(chunks: Iterator[BaseModel], generations: list[Generation]) -> AsyncIterator[str]:
    """Serialize chunks as server-sent events; each token is produced in a worker thread."""
    try:
        async for chunk in iterate_in_threadpool(chunks):
            yield f"data: {chunk.model_dump_json()}\n\n"
    except MaasError as exc:  # headers are gone: report in-band, as OpenAI does
        made = sum(g.completion_tokens for g in generations)
        logger.info("stream ended early", extra={"code": exc.code, "completion_tokens": made})
        error = {"message": exc.message, "type": "invalid_request_error", "param": exc.param, "code": exc.code}
        yield f"data: {json.dumps({'error': error})}\n\n"
    yield "data: [DONE]\n\n"


def _streaming(chunks: Iterator[BaseModel], generations: list[Generation]) -> StreamingResponse:
    return StreamingResponse(_sse(chunks, generations), media_type="text/event-stream", headers=SSE_HEADERS)


# --- /v1/completions ----------------------------------------------------------------------------------
def _prompts(request: CompletionRequest) -> list[str]:
    prompt = request.prompt
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not prompts:
        raise InvalidInputError("prompt is empty: send a string or a list of strings", param="prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise InvalidInputError(
            "prompt holds token ids; this server tokenizes with the model's own tokenizer, send text instead",
            param="prompt",
        )
    return [str(p) for p in prompts]


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses=STREAM_RESPONSE,
    summary="Create a completion (text in, text out)",
)
async def create_completion(request: CompletionRequest, registry: RegistryDep, http: Request) -> Any:
    pipeline = _pipeline(registry, request.model, "/v1/completions")
    _check_common(request)
    _refuse(request.logprobs is not None, "logprobs", "not supported; omit it")
    _refuse(request.best_of not in (None, 1), "best_of", "not supported; omit it or send 1")
    _refuse(request.suffix is not None, "suffix", "not supported (no fill-in-the-middle); omit it")
    prompts = _prompts(request)
    pipeline.check_batch(len(prompts))
    sampling, stop = _sampling(request), _stop(request)
    generations = []
    for index, prompt in enumerate(prompts):
        param = "prompt" if len(prompts) == 1 else f"prompt[{index}]"
        ids = pipeline.encode(prompt, param=param)
        budget = pipeline.new_token_budget(len(ids), request.max_tokens, param="max_tokens")
        generations.append(pipeline.generation(ids, max_new_tokens=budget, sampling=sampling, stop=stop))
    completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    echo = [p if request.echo else "" for p in prompts]

    def chunk(choices: list[CompletionChoice], usage: CompletionUsage | None = None) -> CompletionResponse:
        return CompletionResponse(id=completion_id, created=created, model=pipeline.name, choices=choices, usage=usage)

    if request.stream:

        def chunks() -> Iterator[BaseModel]:
            for index, generation in enumerate(generations):
                if echo[index]:
                    yield chunk([CompletionChoice(index=index, text=echo[index])])
                for delta in generation:
                    yield chunk([CompletionChoice(index=index, text=delta)])
                yield chunk([CompletionChoice(index=index, text="", finish_reason=generation.finish_reason)])
            _record(http, pipeline, generations)
            if request.stream_options and request.stream_options.include_usage:
                yield chunk([], _usage(generations))

        return _streaming(chunks(), generations)
    await run_in_threadpool(_run_all, generations)
    choices = [
        CompletionChoice(index=i, text=echo[i] + g.text, finish_reason=g.finish_reason)
        for i, g in enumerate(generations)
    ]
    _record(http, pipeline, generations)
    return chunk(choices, _usage(generations))


# --- /v1/chat/completions -----------------------------------------------------------------------------
def _messages(request: ChatCompletionRequest) -> list[ChatMessage]:
    """Each message's text: a string, or content parts of type "text" whose "text" is a string (else 422)."""
    messages = []
    for index, message in enumerate(request.messages):
        content = message.content
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            parts = enumerate(content)
            text = "".join(_part_text(part, f"messages[{index}].content[{number}]") for number, part in parts)
        role = "system" if message.role == "developer" else message.role
        messages.append(ChatMessage(role, text))
    return messages


def _part_text(part: Any, where: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
    if kind != "text":
        what = f"a {kind[:40]!r} part" if isinstance(kind, str) else "a part without a string 'type'"
        raise InvalidInputError(
            f'{where} is {what}; this model reads text parts only: {{"type": "text", "text": "..."}}', param=where
        )
    text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
    if not isinstance(text, str):
        got = "missing" if text is None else f"a {type(text).__name__}"
        raise InvalidInputError(f"{where}.text must be a string; it is {got}", param=f"{where}.text")
    return text


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses=STREAM_RESPONSE,
    summary="Create a chat completion",
)
async def create_chat_completion(request: ChatCompletionRequest, registry: RegistryDep, http: Request) -> Any:
    pipeline = _pipeline(registry, request.model, "/v1/chat/completions")
    _check_common(request)
    _refuse(bool(request.logprobs) or request.top_logprobs is not None, "logprobs", "not supported; omit it")
    _refuse(bool(request.tools), "tools", "tool calling is not supported by this model; omit tools")
    _refuse(
        request.response_format is not None and request.response_format.get("type") != "text",
        "response_format",
        "only {'type': 'text'} is supported",
    )
    ids = pipeline.encode_chat(_messages(request), param="messages")
    requested = request.max_completion_tokens or request.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    # Like OpenAI, a chat without a limit may use the model's whole per-request allowance.
    budget = pipeline.new_token_budget(len(ids), requested, param=param, default=pipeline.config.max_new_tokens)
    generation = pipeline.generation(ids, max_new_tokens=budget, sampling=_sampling(request), stop=_stop(request))
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    if request.stream:

        def chunk(delta: ChatDelta, finish: Any = None, usage: CompletionUsage | None = None) -> ChatCompletionChunk:
            choices = [] if usage else [ChatChunkChoice(index=0, delta=delta, finish_reason=finish)]
            return ChatCompletionChunk(
                id=completion_id, created=created, model=pipeline.name, choices=choices, usage=usage
            )

        def chunks() -> Iterator[BaseModel]:
            yield chunk(ChatDelta(role="assistant", content=""))
            for delta in generation:
                yield chunk(ChatDelta(content=delta))
            yield chunk(ChatDelta(), generation.finish_reason)
            _record(http, pipeline, [generation])
            if request.stream_options and request.stream_options.include_usage:
                yield chunk(ChatDelta(), usage=_usage([generation]))

        return _streaming(chunks(), [generation])
    await run_in_threadpool(generation.run)
    assert generation.finish_reason is not None
    _record(http, pipeline, [generation])
    return ChatCompletionResponse(
        id=completion_id,
        created=created,
        model=pipeline.name,
        choices=[
            ChatChoice(
                index=0, message=AssistantMessage(content=generation.text), finish_reason=generation.finish_reason
            )
        ],
        usage=_usage([generation]),
    )
