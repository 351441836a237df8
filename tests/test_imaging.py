"""The shared image pipeline: formats, limits, resize policies, raw tensors."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tlserve.server.errors import InvalidInput, TooLarge
from tlserve.server.imaging import ImageLimits, InputSpec, decode_image, prepare_pixels

SPEC = InputSpec(24, 32)
LIMITS = ImageLimits(max_pixels=1_000_000, max_side=4096)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_accepted_formats_decode_to_model_size(fmt: str) -> None:
    data = encode(Image.new("RGB", (100, 80), (200, 40, 10)), fmt)
    pixels = decode_image(data, SPEC, LIMITS)
    assert pixels.shape == (24, 32, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - (200, 40, 10)).max() <= 6


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "ICO"])
def test_other_formats_are_refused_with_the_accepted_list(fmt: str) -> None:
    data = encode(Image.new("RGB", (16, 16)), fmt)
    with pytest.raises(InvalidInput, match="JPEG, PNG, WebP, BMP"):
        decode_image(data, SPEC, LIMITS)


def test_empty_bytes() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", SPEC, LIMITS)


def test_garbage_bytes() -> None:
    with pytest.raises(InvalidInput, match="not a recognised image"):
        decode_image(b"\x00\x01garbage" * 10, SPEC, LIMITS)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], SPEC, LIMITS)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions but carries almost no data: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(TooLarge, match="at most 1000000"):
        decode_image(_png_header_only(3000, 3000), SPEC, LIMITS)


def test_huge_side_is_refused() -> None:
    with pytest.raises(TooLarge, match="longest accepted side is 4096"):
        decode_image(_png_header_only(10, 5000), SPEC, LIMITS)


def test_alpha_becomes_white() -> None:
    data = encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG")
    assert (decode_image(data, SPEC, LIMITS) == 255).all()


def test_grayscale_becomes_rgb() -> None:
    data = encode(Image.new("L", (8, 8), 77), "PNG")
    pixels = decode_image(data, SPEC, LIMITS)
    assert pixels.shape == (24, 32, 3) and (pixels == 77).all()


def test_jpeg_draft_mode_still_gives_model_size() -> None:
    data = encode(Image.new("RGB", (2000, 1500), (10, 120, 240)), "JPEG")
    pixels = decode_image(data, SPEC, ImageLimits(max_pixels=4_000_000))
    assert pixels.shape == (24, 32, 3)
    assert np.abs(pixels.astype(int) - (10, 120, 240)).max() <= 6


def test_center_crop_keeps_the_middle() -> None:
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # a blue middle third
    pixels = decode_image(encode(image, "PNG"), InputSpec(32, 32, "center_crop"), LIMITS)
    assert (pixels[..., 2] > 200).all()


def test_pad_letterboxes() -> None:
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    pixels = decode_image(encode(image, "PNG"), InputSpec(32, 32, "pad"), LIMITS)
    assert (pixels[0] == 0).all() and (pixels[16] == 255).all()


def test_uint8_pixels_of_model_size_pass_through() -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    assert np.array_equal(prepare_pixels(pixels, SPEC, LIMITS), pixels)


def test_pixels_of_other_size_are_resized() -> None:
    pixels = np.full((50, 60, 3), 100, dtype=np.uint8)
    out = prepare_pixels(pixels, SPEC, LIMITS)
    assert out.shape == (24, 32, 3) and (out == 100).all()


def test_float_pixels_in_range_are_accepted() -> None:
    out = prepare_pixels(np.full((24, 32, 3), 254.6, dtype=np.float32), SPEC, LIMITS)
    assert out.dtype == np.uint8 and (out == 255).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_pixels_with_nan_or_inf_are_refused(bad: float) -> None:
    pixels = np.zeros((24, 32, 3), dtype=np.float32)
    pixels[3, 4, 1] = bad
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        prepare_pixels(pixels, SPEC, LIMITS)


def test_float_pixels_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"expected \[0, 255\]"):
        prepare_pixels(np.full((24, 32, 3), 300.0, dtype=np.float32), SPEC, LIMITS)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((24, 32), "expected \\[height, width, 3\\]"),
        ((24, 32, 4), "expected"),
        ((1, 24, 32, 3), "shape"),
    ],
)
def test_wrong_pixel_rank_or_channels(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        prepare_pixels(np.zeros(shape, dtype=np.uint8), SPEC, LIMITS)


def test_zero_sized_pixels() -> None:
    with pytest.raises(InvalidInput, match="at least 1 pixel"):
        prepare_pixels(np.zeros((0, 32, 3), dtype=np.uint8), SPEC, LIMITS)


def test_wrong_pixel_dtype() -> None:
    with pytest.raises(InvalidInput, match="int16 is not accepted"):
        prepare_pixels(np.zeros((24, 32, 3), dtype=np.int16), SPEC, LIMITS)
