"""Image inputs for image models: encoded bytes (or base64) in, normalised NCHW float32 out.

Only numpy and Pillow. The steps follow the eval preprocessing the model was trained with, as
recorded in the manifest's ``config.image`` (see :class:`ImagePreprocessing`); the build validates
its gates through this very code, so serving and validation cannot drift.

Untrusted input is bounded before any pixel is decoded: the encoded size (413), the pixel count and
the decoded bytes read from the header (413: decompression bombs, 16-bit images), and the container
format (JPEG, PNG, WebP only: the other Pillow decoders are never reached). Decoding then costs the
decoded bytes plus a few MB, whatever the mode (:func:`decode_image`), and large images hand their
memory back to the OS once done (:func:`release_memory`).
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from functions.errors import InvalidInputError, MaasError, PayloadTooLargeError
from functions.inference.image_config import ImagePreprocessing

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
# A JPEG is decoded at a reduced DCT scale while its center crop stays at least this many times the
# model's input size; the antialiased resize does the rest (a 12 MP photo decodes ~8x faster).
_DRAFT_MARGIN = 2


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


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image and the center crop to take from it (pixel coordinates, possibly fractional).

    A small image comes whole, as the file holds it. A large one comes as the region the crop needs, reduced
    by an integer factor in bands as it is converted (:func:`decode_image`); ``box`` is then the crop within it.
    """

    image: Image.Image
    box: tuple[float, float, float, float]
    decoded_bytes: int  # what the decoder held in memory for it (the cost :func:`decode_image` bounds)


def decode_image(data: bytes, config: ImagePreprocessing, *, where: str = "inputs[0]") -> DecodedImage:
    """Decode a JPEG, PNG or WebP file, bounded before any pixel is decoded.

    From the header alone: the encoded size, the pixel count and the decoded bytes (width x height x the
    decoder's bytes per pixel, four times for WebP, whose decoder holds copies) must be within the config's
    limits (413 otherwise). After decoding, memory stays within the decoded bytes plus a few MB: a large
    image is converted to RGB band by band, only over the region the center crop and its resampling filter
    read, reduced by an integer factor as it goes, and turned upright (EXIF orientation) once small.
    """
    _check_size(len(data), config, where)
    try:
        # Only the header is read here; the limits are checked before anything is decoded. (No
        # warnings.catch_warnings: it is not thread-safe, and requests decode in a thread pool.)
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > config.max_image_pixels:
            raise _too_many_pixels(width, height, config, where)
        if image.format == "JPEG":
            image.draft("RGB", _draft_size(width, height, config))
        decoded = _decoded_bytes(image)
        if decoded > config.max_decoded_bytes:
            raise PayloadTooLargeError(
                f"{where}: the image is {image.width}x{image.height} {image.mode} ({image.format}), which decodes "
                f"to {decoded:,} bytes; this model decodes at most {config.max_decoded_bytes:,} bytes per image. "
                "Downscale it",
                param=where,
            )
        image.load()
        return _upright_rgb(image, config, decoded)
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


# Bytes per pixel Pillow holds for a mode (8-bit multi-band modes are padded to 4), and decoders that hold
# copies of the pixels while decoding (WebP: libwebp's buffer, the bytes handed over, their copy, the image).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_DECODER_COPIES = {"WEBP": 4}


def _decoded_bytes(image: Image.Image) -> int:
    """The memory the decoder will need for ``image``, from its header (after a JPEG's draft scaling)."""
    per_pixel = _BYTES_PER_PIXEL.get(image.mode, 4)
    return image.width * image.height * per_pixel * _DECODER_COPIES.get(image.format or "", 1)


_SMALL_PIXELS = 1 << 22  # up to 4.2 MP an image is converted whole, as the build validated it (<= ~70 MB)
_BAND_BYTES = 4 << 20  # rows converted at once in a large image
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright_rgb(image: Image.Image, config: ImagePreprocessing, decoded: int) -> DecodedImage:
    """The decoded image as upright RGB, and the center crop within it.

    A large image is never converted or turned whole: only the region the crop and the resampling filter read
    (the center square of the short side, which stays the center square whichever way the image is turned,
    plus the filter's margin) is converted, in bands, reduced by an integer factor that keeps the crop at
    least twice the model's input size; the small result is then turned upright and the crop mapped into it.
    """
    width, height = image.size
    if width * height <= _SMALL_PIXELS:
        upright = _to_rgb(ImageOps.exif_transpose(image))
        return DecodedImage(upright, center_crop_box(upright.width, upright.height, config.crop_fraction), decoded)
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    left, top, right, bottom = center_crop_box(width, height, config.crop_fraction)
    factor = max(1, int((right - left) / (_DRAFT_MARGIN * config.size)))
    margin = (math.ceil(2 * max((right - left) / factor / config.size, 1.0)) + 2) * factor  # bicubic support
    x0, x1 = _aligned(left - margin, right + margin, width, factor)
    y0, y1 = _aligned(top - margin, bottom + margin, height, factor)
    region = (x0, y0, x1, y1)
    rgb = _rgb_region(image, region, factor)
    if orientation in _ORIENTATIONS:
        rgb = rgb.transpose(_ORIENTATIONS[orientation])
        region = _transposed_rect(region, width, height, orientation)
    upright_size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    box = center_crop_box(*upright_size, config.crop_fraction)
    dx, dy = region[0], region[1]
    crop = ((box[0] - dx) / factor, (box[1] - dy) / factor, (box[2] - dx) / factor, (box[3] - dy) / factor)
    return DecodedImage(rgb, crop, decoded)


def _aligned(start: int, end: int, limit: int, factor: int) -> tuple[int, int]:
    """``[start, end)`` clipped to ``[0, limit)`` and, where the image allows, widened to a multiple of ``factor``
    (whole reduction blocks, so the blocks fall alike whichever way the image is turned upright)."""
    start, end = max(0, start), min(limit, end)
    extra = (-(end - start)) % factor
    if start - extra >= 0:
        start -= extra
    elif end + extra <= limit:
        end += extra
    return start, end


def _rgb_region(image: Image.Image, region: tuple[int, int, int, int], factor: int) -> Image.Image:
    """``region`` of ``image`` as RGB reduced ``factor`` times, converted in bands of rows (never the whole)."""
    left, top, right, bottom = region
    if image.mode == "RGB":
        return image.reduce(factor, box=region) if factor > 1 else image.crop(region)
    scale = _grey_scale(image)
    out = Image.new("RGB", (math.ceil((right - left) / factor), math.ceil((bottom - top) / factor)))
    rows = max(1, _BAND_BYTES // (16 * (right - left) * factor)) * factor
    for y in range(top, bottom, rows):
        band = _to_rgb(image.crop((left, y, right, min(y + rows, bottom))), scale)
        out.paste(band.reduce(factor) if factor > 1 else band, (0, (y - top) // factor))
    return out


def _transposed_rect(
    rect: tuple[int, int, int, int], width: int, height: int, orientation: int
) -> tuple[int, int, int, int]:
    """Where ``rect`` of a ``width`` x ``height`` image lands once the image is turned upright."""
    x0, y0, x1, y1 = rect
    return {
        2: (width - x1, y0, width - x0, y1),
        3: (width - x1, height - y1, width - x0, height - y0),
        4: (x0, height - y1, x1, height - y0),
        5: (y0, x0, y1, x1),
        6: (height - y1, x0, height - y0, x1),
        7: (height - y1, width - x1, height - y0, width - x0),
        8: (y0, width - x1, y1, width - x0),
    }.get(orientation, rect)


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


def _grey_scale(image: Image.Image) -> float:
    """The value 16/32-bit grey maps to white: the whole image's, so every band of it scales alike."""
    if image.mode.startswith("I;16"):
        return 65535.0
    if image.mode in ("I", "F"):
        high = image.getextrema()[1]
        return 65535.0 if isinstance(high, int | float) and high > 255 else 255.0
    return 255.0


def _to_rgb(image: Image.Image, grey_top: float | None = None) -> Image.Image:
    """RGB, with transparency composited on white and 16/32-bit grey scaled to 8 bits."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = grey_top or _grey_scale(image)
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


def preprocess(decoded: DecodedImage, config: ImagePreprocessing) -> np.ndarray:
    """A decoded image → the model's ``(3, size, size)`` float32 input: its center crop, resized."""
    resized = decoded.image.resize((config.size, config.size), _RESAMPLE[config.resample], box=decoded.box)
    return normalize(np.asarray(resized, dtype=np.uint8), config)


def image_pixels(item: object, config: ImagePreprocessing, *, where: str = "inputs[0]") -> np.ndarray:
    """One input (bytes, base64 text or ``{"image": ...}``) → ``(3, size, size)`` float32, within its limits."""
    decoded = decode_image(image_bytes(item, config, where=where), config, where=where)
    pixels = preprocess(decoded, config)
    if decoded.decoded_bytes >= _TRIM_AFTER_BYTES:
        del decoded
        release_memory()
    return pixels


def pixel_batch(inputs: Sequence[object], config: ImagePreprocessing) -> np.ndarray:
    """Inputs (bytes, base64 strings or ``{"image": ...}``) → ``(N, 3, size, size)`` float32."""
    batch = np.empty((len(inputs), 3, config.size, config.size), dtype=np.float32)
    for index, item in enumerate(inputs):
        batch[index] = image_pixels(item, config, where=f"inputs[{index}]")
    return batch


_TRIM_AFTER_BYTES = 32 << 20


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    A large image's pixels are freed after use, but glibc keeps freed heap memory for reuse, so without this
    a burst of large images leaves the process at its peak RSS for good (observed: ~1.3 GB)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


_malloc_trim = _find_malloc_trim()
