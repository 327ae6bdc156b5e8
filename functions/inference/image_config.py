"""An image model's preprocessing and input limits, as its manifest records them (``config.image``).

Its own module, free of Pillow: the batch paths read an image model's limits without importing the decoder,
and a text model's function, whose zip carries no Pillow, imports this module too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ImagePreprocessing(BaseModel):
    """How an image becomes the model's input tensor, and the limits on what a caller may send.

    Defaults are EfficientNet-Lite's ImageNet eval pipeline (tensorflow/tpu ``preprocessing.py`` and
    ``efficientnet_lite_builder.py``): center crop of ``size / (size + 32)`` of the short side, bicubic
    resize to ``size`` x ``size``, then ``(x - 127) / 128`` per RGB channel.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(224, ge=8, le=4096, description="square model input, pixels per side")
    crop_fraction: float = Field(0.875, gt=0, le=1, description="center crop: this fraction of the short side")
    resample: Literal["bicubic", "bilinear"] = "bicubic"
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    max_image_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest encoded image accepted")
    max_image_pixels: int = Field(40_000_000, ge=64, description="largest width x height accepted")

    @property
    def max_decoded_bytes(self) -> int:
        """The most memory one decoded image may take: ``max_image_pixels`` of RGBA (4 bytes per pixel).

        Derived, not a field of its own: manifests record the fields, and this bound follows the pixel cap."""
        return self.max_image_pixels * 4
