"""One pipeline class per task, registered in PIPELINES."""

from __future__ import annotations

from functions.contract import Task
from functions.inference.pipelines.base import Capability, Pipeline, Prepared, TaskParameters, TaskResult
from functions.inference.pipelines.generation import GenerationPipeline
from functions.inference.pipelines.image import ImageClassificationPipeline
from functions.inference.pipelines.seq2seq import TranslationPipeline
from functions.inference.pipelines.text import ClassificationPipeline, EmbeddingPipeline

PIPELINES: dict[Task, type[Pipeline]] = {  # type: ignore[type-arg]
    Task.SENTENCE_EMBEDDINGS: EmbeddingPipeline,
    Task.TEXT_CLASSIFICATION: ClassificationPipeline,
    Task.TRANSLATION: TranslationPipeline,
    Task.IMAGE_CLASSIFICATION: ImageClassificationPipeline,
    Task.TEXT_GENERATION: GenerationPipeline,
}

__all__ = [
    "PIPELINES",
    "Capability",
    "ClassificationPipeline",
    "EmbeddingPipeline",
    "GenerationPipeline",
    "ImageClassificationPipeline",
    "Pipeline",
    "Prepared",
    "TaskParameters",
    "TaskResult",
    "TranslationPipeline",
]
