"""The one image pipeline, shared by the server and the trainer (no training/serving skew).

bytes -> Pillow decode (format allow-list, pixel cap checked before decoding, JPEG
draft mode) -> RGB -> resize to the model's input size -> uint8 HxWx3. Raw pixel
tensors take the same resize. Models do their own normalisation in the graph.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, UnidentifiedImageError

from tlserve.server.errors import InvalidInput, TooLarge

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


class ResizePolicy(StrEnum):
    """How an image of another aspect ratio reaches the model's input size."""

    STRETCH = "stretch"
    CENTER_CROP = "center_crop"
    PAD = "pad"


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_pixels: int = 40_000_000
    max_side: int = 16_384


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What a model takes: height, width and how other sizes are brought to it."""

    height: int
    width: int
    resize: ResizePolicy = ResizePolicy.STRETCH


def decode_image(data: bytes, spec: InputSpec, limits: ImageLimits) -> np.ndarray:
    """Decode encoded image bytes into a uint8 (H, W, 3) array of the model's input size."""
    with _open(data, limits) as image:
        if image.format == "JPEG":
            # Decode at the smallest 1/2^k scale still at least the target size: a
            # 12 MP photo resized to 224x224 decodes ~8x faster and smaller.
            image.draft("RGB", (spec.width, spec.height))
        _load(image)
        rgb = image if image.mode == "RGB" else _to_rgb(image)
        return _fit(rgb, spec)


def check_image(data: bytes, limits: ImageLimits) -> tuple[int, int]:
    """Fully decode encoded bytes (to prove they are an accepted, intact image); (w, h)."""
    with _open(data, limits) as image:
        _load(image)
        return image.width, image.height


def downscale_to_cover(data: bytes, height: int, width: int, limits: ImageLimits) -> bytes:
    """`data` itself when it is no larger than needed to cover height x width at its own
    aspect ratio; otherwise a PNG of it scaled down just that far (every resize policy
    still has the pixels it needs). Either way it is fully decoded first, to prove it is
    an accepted, intact image."""
    with _open(data, limits) as image:
        size = _cover_size(image.width, image.height, height, width)
        if size is None:
            _load(image)
            return data
        if image.format == "JPEG":
            image.draft("RGB", size)
        _load(image)
        rgb = image if image.mode == "RGB" else _to_rgb(image)
        return encode_png(np.asarray(rgb.resize(size, Image.Resampling.BILINEAR)))


def pixels_to_cover(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) pixels, scaled down like `downscale_to_cover` when larger."""
    size = _cover_size(int(pixels.shape[1]), int(pixels.shape[0]), height, width)
    if size is None:
        return pixels
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR))


def _cover_size(
    image_width: int, image_height: int, height: int, width: int
) -> tuple[int, int] | None:
    """(width, height) of the smallest scaling that still covers height x width, or None
    when the image is no larger than that."""
    scale = max(height / image_height, width / image_width)
    if scale >= 1.0:
        return None
    return (
        max(width, math.ceil(image_width * scale)),
        max(height, math.ceil(image_height * scale)),
    )


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless encoding of uint8 (H, W, 3) pixels, e.g. to store a tensor as a sample."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="RGB").save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Read the header (format allow-list, size limits) without decoding pixels."""
    if not data:
        raise InvalidInput("image bytes are empty; send a JPEG, PNG, WebP or BMP file")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput(
            f"image bytes ({len(data)} bytes) are not a recognised image; "
            "accepted formats: JPEG, PNG, WebP, BMP"
        ) from None
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image refused: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(
            f"image is truncated or corrupt: its header cannot be read ({exc})"
        ) from None
    try:
        _check_dimensions(image.width, image.height, limits)
    except BaseException:
        image.close()
        raise
    return image


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"image is truncated or corrupt: {exc}") from None


def validate_pixels(pixels: np.ndarray, limits: ImageLimits) -> np.ndarray:
    """Check a raw (H, W, 3) pixel array (uint8, or float32 in [0, 255]); uint8 out."""
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InvalidInput(
            f"pixel tensor has shape {list(pixels.shape)}; expected [height, width, 3] (RGB)"
        )
    _check_dimensions(int(pixels.shape[1]), int(pixels.shape[0]), limits)
    if pixels.dtype == np.float32:
        if not np.isfinite(pixels).all():
            raise InvalidInput(
                "float32 pixel tensor contains NaN or infinity; values must be in [0, 255]"
            )
        if pixels.min() < 0.0 or pixels.max() > 255.0:
            raise InvalidInput(
                f"float32 pixel values span [{pixels.min():g}, {pixels.max():g}]; expected [0, 255]"
            )
        return np.rint(pixels).astype(np.uint8)
    if pixels.dtype != np.uint8:
        raise InvalidInput(
            f"pixel tensor dtype {pixels.dtype} is not accepted; send uint8 or float32"
        )
    return pixels


def prepare_pixels(pixels: np.ndarray, spec: InputSpec, limits: ImageLimits) -> np.ndarray:
    """Validate a raw (H, W, 3) pixel array and bring it to the model's input size."""
    pixels = validate_pixels(pixels, limits)
    if pixels.shape[:2] == (spec.height, spec.width):
        return np.ascontiguousarray(pixels)
    return _fit(Image.fromarray(pixels, mode="RGB"), spec)


def _check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise InvalidInput(f"image is {width}x{height}; both sides must be at least 1 pixel")
    if width > limits.max_side or height > limits.max_side:
        raise TooLarge(
            f"image is {width}x{height}; the longest accepted side is {limits.max_side} pixels"
        )
    if width * height > limits.max_pixels:
        raise TooLarge(
            f"image is {width}x{height} = {width * height} pixels; "
            f"at most {limits.max_pixels} are accepted"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, as most viewers show them, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _fit(image: Image.Image, spec: InputSpec) -> np.ndarray:
    target = (spec.width, spec.height)
    if image.size != target:
        match ResizePolicy(spec.resize):
            case ResizePolicy.STRETCH:
                image = image.resize(target, Image.Resampling.BILINEAR)
            case ResizePolicy.CENTER_CROP:
                image = _center_crop(image, spec)
            case ResizePolicy.PAD:
                image = _letterbox(image, spec)
    return np.asarray(image, dtype=np.uint8)


def _center_crop(image: Image.Image, spec: InputSpec) -> Image.Image:
    scale = max(spec.width / image.width, spec.height / image.height)
    resized = image.resize(
        (
            max(spec.width, round(image.width * scale)),
            max(spec.height, round(image.height * scale)),
        ),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - spec.width) // 2
    top = (resized.height - spec.height) // 2
    return resized.crop((left, top, left + spec.width, top + spec.height))


def _letterbox(image: Image.Image, spec: InputSpec) -> Image.Image:
    scale = min(spec.width / image.width, spec.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", (spec.width, spec.height), (0, 0, 0))
    canvas.paste(
        image.resize(size, Image.Resampling.BILINEAR),
        ((spec.width - size[0]) // 2, (spec.height - size[1]) // 2),
    )
    return canvas
