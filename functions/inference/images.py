"""Image inputs for image models: encoded bytes (or base64) in, normalised NCHW float32 out.

Only numpy and Pillow. The steps follow the eval preprocessing the model was trained with, as
recorded in the manifest's ``config.image`` (see :class:`ImagePreprocessing`); the build validates
its gates through this very code, so serving and validation cannot drift.

Untrusted input is bounded before any pixel is decoded: the encoded size (413), the pixel count
read from the header (413, decompression bombs), and the container format (JPEG, PNG, WebP only:
the other Pillow decoders are never reached).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from functions.errors import InvalidInputError, MaasError, PayloadTooLargeError

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# A JPEG is decoded at a reduced DCT scale while its center crop stays at least this many times the
# model's input size; the antialiased resize does the rest (a 12 MP photo decodes ~8x faster).
_DRAFT_MARGIN = 2


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


def image_bytes(item: object, config: ImagePreprocessing, *, where: str = "inputs[0]") -> bytes:
    """The encoded image in one input: raw bytes, a base64 string (or ``data:`` URL), or ``{"image": ...}``.

    Bytes that do not start like a JPEG/PNG/WebP file but are base64 text are decoded too (OIP JSON
    clients and S3 objects may carry base64).
    """
    if isinstance(item, dict):
        if set(item) != {"image"}:
            raise InvalidInputError(f"{where} must be {{'image': '<base64>'}}; got keys {sorted(item)}", param=where)
        return image_bytes(item["image"], config, where=f"{where}.image")
    if isinstance(item, bytes | bytearray | memoryview):
        raw = bytes(item)
        if raw.startswith(_MAGIC) or not _looks_like_base64(raw[:64]):
            _check_size(len(raw), config, where)
            return raw
        item = raw.decode("ascii", errors="replace")
    if not isinstance(item, str):
        raise InvalidInputError(
            f"{where} must be an image: base64 text or bytes, got {type(item).__name__}", param=where
        )
    return _from_base64(item, config, where)


_BASE64_TEXT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_:;,\r\n ")


def _looks_like_base64(head: bytes) -> bool:
    return bool(head) and all(c in _BASE64_TEXT for c in head)


def _from_base64(text: str, config: ImagePreprocessing, where: str) -> bytes:
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise InvalidInputError(f"{where}: a data: URL must be base64 (data:image/jpeg;base64,...)", param=where)
    compact = "".join(text.split())
    _check_size(len(compact) * 3 // 4, config, where)  # refuse before decoding
    if not compact:
        raise InvalidInputError(f"{where} is empty: send a base64-encoded JPEG, PNG or WebP image", param=where)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(
            f"{where} is not valid base64: send the image file's bytes base64-encoded", param=where
        ) from None


def _check_size(size: int, config: ImagePreprocessing, where: str) -> None:
    if size > config.max_image_bytes:
        raise PayloadTooLargeError(
            f"{where}: the image is {size:,} bytes; this model accepts at most {config.max_image_bytes:,} "
            "bytes per image. Downscale or recompress it",
            param=where,
        )


def decode_image(data: bytes, config: ImagePreprocessing, *, where: str = "inputs[0]") -> Image.Image:
    """Decode a JPEG, PNG or WebP file into an upright RGB image, refusing oversized ones before decoding."""
    _check_size(len(data), config, where)
    try:
        # Only the header is read here; the pixel limit is checked before anything is decoded. (No
        # warnings.catch_warnings: it is not thread-safe, and requests decode in a thread pool.)
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > config.max_image_pixels:
            raise _too_many_pixels(width, height, config, where)
        if image.format == "JPEG":
            image.draft("RGB", _draft_size(width, height, config))
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError:  # Pillow's own guard (> 2 x Image.MAX_IMAGE_PIXELS)
        raise _too_many_pixels(0, 0, config, where) from None
    except (MaasError, MemoryError):
        raise
    except UnidentifiedImageError:
        raise InvalidInputError(f"{where} is not a JPEG, PNG or WebP file", param=where) from None
    except Exception as exc:  # malformed files make Pillow's decoders raise OSError, SyntaxError, struct.error, ...
        raise InvalidInputError(
            f"{where} is not a readable JPEG, PNG or WebP image ({type(exc).__name__}: {exc})", param=where
        ) from None


def _too_many_pixels(width: int, height: int, config: ImagePreprocessing, where: str) -> PayloadTooLargeError:
    size = f"{width}x{height} pixels" if width else "too many pixels"
    return PayloadTooLargeError(
        f"{where}: the image has {size}; this model accepts at most {config.max_image_pixels:,} pixels "
        "(width x height). Downscale it",
        param=where,
    )


def _draft_size(width: int, height: int, config: ImagePreprocessing) -> tuple[int, int]:
    ratio = min(1.0, _DRAFT_MARGIN * config.size / (config.crop_fraction * min(width, height)))
    return math.ceil(width * ratio), math.ceil(height * ratio)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited on white and 16/32-bit grey scaled to 8 bits."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def center_crop_box(width: int, height: int, fraction: float) -> tuple[int, int, int, int]:
    """The square crop TF EfficientNet evaluates on: ``int(fraction * short side)``, offsets rounded up."""
    side = max(1, int(fraction * min(width, height)))
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    return left, top, left + side, top + side


def normalize(rgb: np.ndarray, config: ImagePreprocessing) -> np.ndarray:
    """HWC uint8 RGB → CHW float32 ``(x - mean) / std``."""
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    chw: np.ndarray = ((rgb.astype(np.float32) - mean) / std).transpose(2, 0, 1)
    return np.ascontiguousarray(chw)


def preprocess(image: Image.Image, config: ImagePreprocessing) -> np.ndarray:
    """An RGB image → the model's ``(3, size, size)`` float32 input."""
    box = center_crop_box(image.width, image.height, config.crop_fraction)
    resized = image.resize((config.size, config.size), _RESAMPLE[config.resample], box=box)
    return normalize(np.asarray(resized, dtype=np.uint8), config)


def pixel_batch(inputs: Sequence[object], config: ImagePreprocessing) -> np.ndarray:
    """Inputs (bytes, base64 strings or ``{"image": ...}``) → ``(N, 3, size, size)`` float32."""
    batch = np.empty((len(inputs), 3, config.size, config.size), dtype=np.float32)
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        batch[index] = preprocess(decode_image(image_bytes(item, config, where=where), config, where=where), config)
    return batch
