"""One pipeline class per task, found by :func:`pipeline_class`.

Each task's module is imported only when a model of that task loads, so a function serving a text model
never imports what an image model needs (Pillow is not even in a text model's Lambda zip).
"""

from __future__ import annotations

import importlib
from typing import Any

from functions.contract import Task
from functions.inference.pipelines.base import Capability, Pipeline, Prepared, TaskParameters, TaskResult

PIPELINES: dict[Task, str] = {
    Task.SENTENCE_EMBEDDINGS: "functions.inference.pipelines.text:EmbeddingPipeline",
    Task.TEXT_CLASSIFICATION: "functions.inference.pipelines.text:ClassificationPipeline",
    Task.TRANSLATION: "functions.inference.pipelines.seq2seq:TranslationPipeline",
    Task.IMAGE_CLASSIFICATION: "functions.inference.pipelines.image:ImageClassificationPipeline",
    Task.TEXT_GENERATION: "functions.inference.pipelines.generation:GenerationPipeline",
}


def pipeline_class(task: Task) -> type[Pipeline[Any]] | None:
    """The pipeline that serves ``task`` (its module imported now), or None for a task this runtime lacks."""
    where = PIPELINES.get(task)
    if where is None:
        return None
    module, _, name = where.partition(":")
    cls: type[Pipeline[Any]] = getattr(importlib.import_module(module), name)
    return cls


__all__ = ["PIPELINES", "Capability", "Pipeline", "Prepared", "TaskParameters", "TaskResult", "pipeline_class"]
