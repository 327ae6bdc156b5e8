"""Local checkpoint directories as catalog sources (``source = "path/to/checkpoint"``).

Translation is the task served from a plain transformers checkpoint so far; other tasks use a
``"package.module:callable"`` source that returns a ``SourceModel``.
"""

from __future__ import annotations

from pathlib import Path

from functions.contract import Task
from model_build.sources import SourceModel


class CheckpointError(ValueError):
    """A checkpoint directory cannot be used as given; the message says what to change."""


def load_checkpoint(path: Path, *, task: Task | None) -> SourceModel:
    """Load ``path`` (config.json, weights, tokenizer.json) for ``task``."""
    if not path.is_dir():
        raise CheckpointError(
            f"source {str(path)!r} is neither an existing checkpoint directory nor a 'package.module:callable'"
        )
    if task is Task.TRANSLATION:
        from model_build.sources.seq2seq import load_seq2seq

        return load_seq2seq(path)
    asked = task.value if task else None
    raise CheckpointError(
        f"a checkpoint directory source is supported for task {Task.TRANSLATION.value!r} only, not {asked!r}; "
        "write a 'package.module:callable' source returning a SourceModel for this task"
    )
