"""The tasks maas serves, and the OpenAI-compatible paths each one answers."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    SENTENCE_EMBEDDINGS = "sentence-embeddings"
    TEXT_CLASSIFICATION = "text-classification"
    TEXT_GENERATION = "text-generation"
    TRANSLATION = "translation"
    IMAGE_CLASSIFICATION = "image-classification"


# The OpenAI-compatible paths a task answers. OpenAI clients name the model in the body, so behind one API
# each path has one owning model (infra assigns it); every model also answers under /models/<name>/v1/...
OPENAI_PATHS: dict[Task, tuple[str, ...]] = {
    Task.SENTENCE_EMBEDDINGS: ("/v1/embeddings",),
    Task.TEXT_GENERATION: ("/v1/completions", "/v1/chat/completions"),
}
