"""Image preprocessing equals an independent torch/numpy reference; hostile inputs get typed errors.

GIVEN real photos (scikit-image's samples) and crafted files, WHEN they go through the runtime's
``functions.inference.images``, THEN the pixels match TF EfficientNet's eval preprocessing as written
here with torch, and bad inputs become 422/413 before any large allocation.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from functions.errors import InvalidInputError, PayloadTooLargeError
from functions.inference.images import (
    ImagePreprocessing,
    center_crop_box,
    decode_image,
    image_bytes,
    normalize,
    pixel_batch,
)

CONFIG = ImagePreprocessing()
LABELS = Path(__file__).resolve().parents[2] / "model_build" / "data" / "imagenet_classes.txt"


def photo(name: str) -> bytes:
    from model_build.recipes.image import photo_path

    return photo_path(name).read_bytes()


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def reference(data: bytes, size: int = 224) -> np.ndarray:
    """TF EfficientNet eval preprocessing, written independently: crop 224/256 of the short side
    (offsets rounded up), antialiased bicubic resize (torch), then (x - 127) / 128, CHW."""
    rgb = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32))
    chw = rgb.permute(2, 0, 1)[None]
    height, width = chw.shape[-2:]
    side = int(size / (size + 32) * min(height, width))
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    crop = chw[..., top : top + side, left : left + side]
    if side != size:
        crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bicubic", antialias=True)
        crop = crop.clamp(0, 255).round()  # Pillow resizes in 8 bits
    return ((crop - 127.0) / 128.0)[0].numpy()


def test_imagenet_class_names_are_the_standard_1000_in_index_order():
    labels = LABELS.read_text(encoding="utf-8").splitlines()
    assert len(labels) == 1000 and len(set(labels)) == 1000
    known = {0: "tench", 1: "goldfish", 207: "golden retriever", 281: "tabby cat", 285: "Egyptian cat",
             409: "analog clock", 951: "lemon", 967: "espresso", 999: "toilet tissue"}  # fmt: skip
    assert {i: labels[i] for i in known} == known


def test_config_is_efficientnet_lite_eval_preprocessing():
    from model_build.sources.efficientnet import preprocessing

    config = preprocessing(224)
    assert (config.size, config.crop_fraction, config.resample) == (224, 0.875, "bicubic")
    assert config.mean == (127.0, 127.0, 127.0) and config.std == (128.0, 128.0, 128.0)  # TF lite builder
    assert center_crop_box(451, 300, 0.875) == (95, 19, 357, 281)  # side int(262.5); offsets (h - side + 1) // 2


def test_crop_and_normalisation_are_exact_when_no_resize_is_needed():
    # a 256-px short side crops to exactly 224: no resampling, so runtime and reference must be identical
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (256, 301, 3), dtype=np.uint8))
    data = encode(image)
    got = pixel_batch([data], CONFIG)[0]
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_array_equal(got, reference(data))
    assert normalize(np.array([[[0, 127, 255]]], dtype=np.uint8), CONFIG).ravel().tolist() == [
        -127 / 128,
        0.0,
        1.0,
    ]


@pytest.mark.parametrize("name", ["chelsea", "rocket", "coffee", "camera", "text"])
def test_resized_photos_match_the_torch_reference(name):
    data = photo(name)
    diff = np.abs(pixel_batch([data], CONFIG)[0] - reference(data)) * 128  # in 8-bit levels
    # Pillow rounds to 8 bits between its two resize passes; torch does not: rare edge pixels differ more
    assert diff.mean() < 0.25 and (diff > 1.01).mean() < 0.01 and diff.max() <= 16


def test_large_jpeg_draft_decode_matches_full_decode():
    big = Image.open(io.BytesIO(photo("chelsea"))).convert("RGB").resize((2706, 1800), Image.Resampling.LANCZOS)
    data = encode(big, "JPEG", quality=92)
    draft = pixel_batch([data], CONFIG)[0]
    full = reference(data)
    assert np.abs(draft - full).mean() * 128 < 1.0


def test_modes_orientation_and_transparency():
    # EXIF orientation 6 (rotate 90° clockwise): a 40x20 landscape file is a 20x40 portrait image
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = decode_image(encode(Image.new("RGB", (40, 20), "red"), "JPEG", exif=exif), CONFIG).image
    assert rotated.size == (20, 40) and rotated.mode == "RGB"
    # transparent pixels are composited on white, not left black
    clear = pixel_batch([encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))], CONFIG)
    assert np.allclose(clear, 1.0)
    # grey, palette and 16-bit grey all become RGB with the right brightness
    grey16 = Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16))
    for image in (Image.new("L", (32, 32), 255), Image.new("P", (32, 32), 0), grey16):
        pixels = pixel_batch([encode(image)], CONFIG)
        assert pixels.shape == (1, 3, 224, 224)
    assert np.allclose(pixel_batch([encode(grey16)], CONFIG), 1.0)
    webp = pixel_batch([encode(Image.new("RGB", (50, 50), (127, 127, 127)), "WEBP", lossless=True)], CONFIG)
    assert np.allclose(webp, 0.0)


def test_base64_forms_are_accepted():
    raw = encode(Image.new("RGB", (8, 8)))
    text = base64.b64encode(raw).decode()
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    for item in (raw, text, wrapped, f"data:image/png;base64,{text}", {"image": text}, text.encode(),
                 base64.urlsafe_b64encode(raw).decode().rstrip("=")):  # fmt: skip
        assert image_bytes(item, CONFIG) == raw


@pytest.mark.parametrize(
    "item, message",
    [
        ("not base64 at all!", "not valid base64"),
        ("", "empty"),
        (42, "must be an image"),
        ({"url": "http://x"}, "{'image': '<base64>'}"),
        ("data:image/png,rawtext", "must be base64"),
    ],
)
def test_bad_inputs_are_422(item, message):
    with pytest.raises(InvalidInputError, match=message) as error:
        image_bytes(item, CONFIG, where="inputs[3]")
    assert error.value.status_code == 422 and error.value.param and error.value.param.startswith("inputs[3]")


def test_undecodable_truncated_and_other_formats_are_422():
    jpeg = encode(Image.new("RGB", (64, 64), "blue"), "JPEG")
    tiny = Image.new("RGB", (8, 8))
    broken_png = b"\x89PNG\r\n\x1a\n" + b"\0" * 40
    for data in (b"GIF89a" + b"\0" * 64, encode(tiny, "BMP"), encode(tiny, "TIFF"), jpeg[: len(jpeg) // 2], broken_png):
        with pytest.raises(InvalidInputError) as error:
            pixel_batch([data], CONFIG)
        assert error.value.status_code == 422 and "JPEG, PNG or WebP" in error.value.message


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG file that claims ``width`` x ``height`` pixels (a decompression-bomb header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_too_many_pixels_is_413_before_decoding():
    with pytest.raises(PayloadTooLargeError, match="7000x7000 pixels") as error:
        pixel_batch([png_header(7000, 7000)], CONFIG)  # 49 M > 40 M, refused from the header alone
    assert error.value.status_code == 413
    lax = CONFIG.model_copy(update={"max_image_pixels": 10**10})
    with pytest.raises(PayloadTooLargeError):  # Pillow's own bomb guard (> 2 x 89 M pixels) also maps to 413
        pixel_batch([png_header(20000, 20000)], lax)


def test_too_many_bytes_is_413_before_decoding():
    small = CONFIG.model_copy(update={"max_image_bytes": 2048})
    noisy = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    assert len(noisy) > 2048
    for item in (noisy, base64.b64encode(noisy).decode()):
        with pytest.raises(PayloadTooLargeError, match="at most 2,048 bytes"):
            pixel_batch([item], small)


# --- large images: bounded by their decoded bytes (issue 15) ------------------------------------------------
def _reference_pixels(data: bytes, config: ImagePreprocessing = CONFIG) -> np.ndarray:
    """The whole-image path, as small images take it: upright, converted to RGB whole, crop, resize."""
    from PIL import ImageOps

    from functions.inference.images import _to_rgb

    rgb = _to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    box = center_crop_box(rgb.width, rgb.height, config.crop_fraction)
    resized = rgb.resize((config.size, config.size), Image.Resampling.BICUBIC, box=box)
    return normalize(np.asarray(resized, dtype=np.uint8), config)


def _scene(width: int, height: int) -> np.ndarray:
    """A smooth, asymmetric scene (so a wrong orientation or offset shows): gradients and a disc."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((x - 0.3 * width) ** 2 + (y - 0.6 * height) ** 2) < (0.2 * min(width, height)) ** 2
    return np.stack([x / width * 255, y / height * 255, disc * 255.0], axis=-1).astype(np.uint8)


def _as_mode(rgb: np.ndarray, mode: str) -> Image.Image:
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = Image.fromarray(((rgb[..., 0].astype(np.uint16) + rgb[..., 1]) // 2).astype(np.uint8))
        image = image.convert("RGBA")
        image.putalpha(alpha)
    elif mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + rgb[..., 1])
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        image.info["transparency"] = 0
    elif mode != "RGB":
        image = image.convert(mode)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("mode", "size"), [("RGB", (2600, 1900)), ("RGBA", (2304, 2304)), ("I;16", (1900, 2600)),
                                            ("P", (3000, 1500)), ("LA", (2200, 2100)), ("L", (9000, 700))])  # fmt: skip
def test_a_large_image_gives_the_pixels_of_the_whole_image_path(mode, size, orientation):
    # GIVEN a large image (over 4.2 MP: converted in bands, over the crop's region, reduced) in any EXIF orientation
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = _as_mode(_scene(*size), mode)
    options = {"transparency": 0} if mode == "P" else {}
    data = encode(image, "PNG", exif=exif, **options)
    # WHEN it is preprocessed THEN it matches converting the whole image first, within the reduction's rounding
    got = pixel_batch([data], CONFIG)[0]
    diff = np.abs(got - _reference_pixels(data)) * 128  # in 8-bit levels
    factor = max(1, int(int(0.875 * min(size)) / 448))
    if factor == 1:  # no reduction: only the region was converted, and that is exact
        assert diff.max() == 0, diff.max()
    else:
        assert diff.mean() < 0.25 and np.percentile(diff, 99) <= 1.01 and diff.max() <= 8, (diff.mean(), diff.max())


def test_decoded_bytes_are_checked_from_the_header_before_decoding():
    # a 16-bit grey PNG header over the decoded-bytes cap (the cap follows the pixel cap: 4 bytes per pixel)
    lax_pixels = CONFIG.model_copy(update={"max_image_pixels": 100})
    assert lax_pixels.max_decoded_bytes == 400
    header = png_header(11, 10)  # 110 px > 100 px: the pixel cap refuses it first
    with pytest.raises(PayloadTooLargeError, match="11x10 pixels"):
        pixel_batch([header], lax_pixels)
    # WebP's decoder holds four copies of the pixels: a WebP of 64 px x 4 B x 4 exceeds a 64 px (256 B) cap
    webp = encode(Image.new("RGBA", (8, 8), (1, 2, 3, 4)), "WEBP", lossless=True)
    with pytest.raises(PayloadTooLargeError, match=r"decodes to 1,024 bytes; this model decodes at most 256"):
        pixel_batch([webp], CONFIG.model_copy(update={"max_image_pixels": 64}))
    assert pixel_batch([webp], CONFIG.model_copy(update={"max_image_pixels": 256})).shape == (1, 3, 224, 224)
