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
from functions.inference.images import ImagePreprocessing, pixel_batch
from functions.inference.pipelines.base import Pipeline, TaskParameters, TaskResult, TensorMeta, classifier_outputs
from functions.inference.postprocess import best_label_tensors, ranked_labels, softmax

IMAGE_INPUT = "image"  # OIP BYTES input: encoded JPEG/PNG/WebP files (or their base64 text)


class ImageClassificationParameters(TaskParameters):
    top_k: int = Field(5, ge=1, description="how many labels to return per image, best first")


class ImageTensorParameters(TaskParameters):
    """OIP requests return fixed tensors (label, score, probabilities): there is nothing to choose."""


def image_preprocessing(manifest: Manifest) -> ImagePreprocessing:
    """The preprocessing recorded in the manifest's ``config.image`` (the build writes it)."""
    try:
        return ImagePreprocessing.model_validate(manifest.config.get("image", {}))
    except ValidationError as exc:
        raise ArtifactError(f"{manifest.name}: manifest config.image is invalid: {exc}") from exc


class ImageClassificationPipeline(Pipeline):
    """Decode → center crop → resize → normalise (``functions.inference.images``) → ONNX → softmax.

    Task API inputs are base64 strings, ``{"image": base64}`` objects or raw bytes (S3 batch jobs);
    OIP takes either encoded images as BYTES (``image``) or a preprocessed FP32 ``[N, 3, H, W]`` tensor.
    """

    task = Task.IMAGE_CLASSIFICATION
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

    def pixels(self, inputs: Sequence[Any]) -> np.ndarray:
        """Decode and preprocess a batch of images exactly as the build validated them."""
        self.check_batch(len(inputs))
        if not inputs:
            raise InvalidInputError("inputs is empty: send at least one image", param="inputs")
        return pixel_batch(inputs, self.preprocessing)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for a ``(N, 3, size, size)`` float32 batch."""
        (logits, *_) = self.run({self.pixel_input: pixels})
        return softmax(logits.astype(np.float32))

    def predict(self, inputs: list[Any], parameters: Mapping[str, Any] | None = None) -> TaskResult:
        params: ImageClassificationParameters = self.parse_parameters(parameters)
        probs = self.probabilities(self.pixels(inputs))
        outputs = ranked_labels(probs, self.labels, params.top_k)
        return TaskResult(outputs, 0, [False] * len(outputs))

    def oip_inputs(self) -> list[TensorMeta]:
        size = self.preprocessing.size
        return [TensorMeta(IMAGE_INPUT, "BYTES", [-1]), TensorMeta(self.pixel_input, "FP32", [-1, 3, size, size])]

    def oip_outputs(self) -> list[TensorMeta]:
        return classifier_outputs(self.labels)

    def infer_tensors(
        self, tensors: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        try:
            ImageTensorParameters.model_validate(dict(parameters or {}))
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise InvalidInputError(f"parameters.{where}: not an option of this model", param=where) from None
        given = [name for name in (IMAGE_INPUT, self.pixel_input) if name in tensors]
        if len(given) != 1:
            raise InvalidInputError(
                f"send exactly one of {IMAGE_INPUT!r} (BYTES: encoded images) or {self.pixel_input!r} "
                f"(FP32 [N, 3, {self.preprocessing.size}, {self.preprocessing.size}]: preprocessed pixels)"
            )
        if given[0] == IMAGE_INPUT:
            pixels = self.pixels(list(np.asarray(tensors[IMAGE_INPUT], dtype=object).reshape(-1)))
        else:
            pixels = self.pixel_tensor(tensors[self.pixel_input])
        probs = self.probabilities(pixels)
        return best_label_tensors(probs, self.labels)

    def pixel_tensor(self, tensor: np.ndarray) -> np.ndarray:
        """Check a caller's preprocessed tensor: shape ``[N, 3, size, size]``, finite floats."""
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
        return pixels

    def warmup(self) -> None:
        """One decode (imports Pillow's plugins) and one inference, during init rather than the first request."""
        Image.init()  # register every decoder plugin now (WebP is not among Pillow's preloaded ones)
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (128, 64, 32)).save(buffer, format="PNG")
        self.predict([buffer.getvalue()])
