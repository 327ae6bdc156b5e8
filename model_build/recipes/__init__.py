"""Build recipes: how each task family is exported, quantized and judged. One class per family,
registered by task in RECIPES; `build.py` only orchestrates them.
"""

from __future__ import annotations

from functions.contract import Task
from model_build.recipes.base import Recipe
from model_build.recipes.encoder import EncoderRecipe
from model_build.recipes.generation import GenerationRecipe
from model_build.recipes.image import ImageClassifierRecipe
from model_build.recipes.seq2seq import Seq2SeqRecipe

RECIPES: dict[Task, type[Recipe]] = {
    Task.SENTENCE_EMBEDDINGS: EncoderRecipe,
    Task.TEXT_CLASSIFICATION: EncoderRecipe,
    Task.TRANSLATION: Seq2SeqRecipe,
    Task.TEXT_GENERATION: GenerationRecipe,
    Task.IMAGE_CLASSIFICATION: ImageClassifierRecipe,
}


def recipe_for(task: Task) -> type[Recipe]:
    try:
        return RECIPES[task]
    except KeyError:
        known = ", ".join(t.value for t in RECIPES)
        raise ValueError(f"no build recipe for task {task.value}; known: {known}") from None


__all__ = ["RECIPES", "Recipe", "recipe_for"]
