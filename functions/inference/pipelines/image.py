"""Image classification: encoded images (or a ready pixel tensor) in, ranked labels out."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field, ValidationError

from functions.contract import Manifest, Task
from functions.errors import ArtifactError, InvalidInputError
from functions.inference.image_config import ImagePreprocessing
from functions.inference.images import image_pixels
from functions.inference.pipelines.base import Capability, Pipeline, Prepared, TaskParameters, TaskResult
from functions.inference.postprocess import ranked_labels, softmax


class ImageClassificationParameters(TaskParameters):
    top_k: int = Field(5, ge=1, description="how many labels to return per image, best first")


def image_preprocessing(manifest: Manifest) -> ImagePreprocessing:
    """The preprocessing recorded in the manifest's ``config.image`` (the build writes it)."""
    try:
        return ImagePreprocessing.model_validate(manifest.config.get("image", {}))
    except ValidationError as exc:
        raise ArtifactError(f"{manifest.name}: manifest config.image is invalid: {exc}") from exc


class ImageClassificationPipeline(Pipeline[ImageClassificationParameters]):
    """Decode → center crop → resize → normalise (``functions.inference.images``) → ONNX → softmax.

    Inputs are base64 strings, ``{"image": base64}`` objects or raw bytes (S3 batch jobs); a feature is one
    image's ``(3, size, size)`` float32 pixels. :meth:`prepare_pixels` takes a caller's preprocessed tensor.
    """

    task = Task.IMAGE_CLASSIFICATION
    capabilities = frozenset({Capability.IMAGE_INPUT, Capability.CLASSIFY, Capability.MERGEABLE})
    parameters_model = ImageClassificationParameters

    def __init__(self, directory: Path, manifest: Manifest, **kwargs: Any) -> None:
        super().__init__(directory, manifest, **kwargs)
        self.preprocessing = image_preprocessing(manifest)
        if len(self.input_names) != 1:
            raise ArtifactError(f"{manifest.name}: an image classifier graph takes one pixel tensor")
        self.pixel_input = self.input_names[0]
        classes = self.session.get_outputs()[0].shape[-1]
        if not manifest.labels or (isinstance(classes, int) and classes != len(manifest.labels)):
            raise ArtifactError(f"{manifest.name}: manifest labels do not match the graph's {classes} classes")

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels or []

    def _pixels_of(self, index: int, item: Any) -> np.ndarray:
        return image_pixels(item, self.preprocessing, where=f"inputs[{index}]")

    def prepare(
        self, inputs: Sequence[Any], parameters: Mapping[str, Any] | None = None
    ) -> Prepared[ImageClassificationParameters]:
        params = self.parse_parameters(parameters)
        self.check_batch(len(inputs))
        return Prepared(self.check_each(inputs, self._pixels_of, "an image"), params)

    def prepare_pixels(self, tensor: np.ndarray) -> Prepared[ImageClassificationParameters]:
        """A caller's preprocessed tensor, checked: shape ``[N, 3, size, size]``, finite floats."""
        size = self.preprocessing.size
        if tensor.ndim != 4 or tuple(tensor.shape[1:]) != (3, size, size) or tensor.shape[0] < 1:
            raise InvalidInputError(
                f"input {self.pixel_input!r} must have shape [N, 3, {size}, {size}], got {list(tensor.shape)}",
                param=self.pixel_input,
            )
        if tensor.dtype.kind != "f":
            raise InvalidInputError(f"input {self.pixel_input!r} must be FP32", param=self.pixel_input)
        self.check_batch(int(tensor.shape[0]))
        pixels = np.ascontiguousarray(tensor, dtype=np.float32)
        if not np.isfinite(pixels).all():
            raise InvalidInputError(f"input {self.pixel_input!r} holds NaN or infinity", param=self.pixel_input)
        return Prepared(list(pixels), ImageClassificationParameters())

    def execute(self, features: Sequence[np.ndarray], parameters: ImageClassificationParameters) -> list[np.ndarray]:
        return list(self.probabilities(np.stack(features)))

    def finish(self, outputs: list[np.ndarray], prepared: Prepared[ImageClassificationParameters]) -> TaskResult:
        ranked = ranked_labels(np.stack(outputs), self.labels, prepared.parameters.top_k)
        return TaskResult(ranked, 0, prepared.truncated)

    def pixels(self, inputs: Sequence[Any]) -> np.ndarray:
        """Decode and preprocess a batch of images exactly as the build validated them."""
        return np.stack(self.prepare(inputs).features)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for a ``(N, 3, size, size)`` float32 batch."""
        (logits, *_) = self.run({self.pixel_input: pixels})
        return softmax(logits.astype(np.float32))

    def warmup(self) -> None:
        """One decode (imports Pillow's plugins) and one inference, during init rather than the first request."""
        Image.init()  # register every decoder plugin now (WebP is not among Pillow's preloaded ones)
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (128, 64, 32)).save(buffer, format="PNG")
        self.predict([buffer.getvalue()])
