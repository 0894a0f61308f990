"""Tests for safe RGB decoding (reca.data.images)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reca.data.images import ImageRejected, decode_rgb, sha256_file, to_rgb


def _noise(size: tuple[int, int] = (48, 40), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), mode="RGB")


def _reason(path: Path, **kwargs) -> str:
    with pytest.raises(ImageRejected) as info:
        decode_rgb(path, **kwargs)
    return info.value.reason


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "PNG"), (".bmp", "BMP"), (".tif", "TIFF")])
def test_decodes_lossless_formats_pixel_exact(tmp_path: Path, suffix: str, fmt: str) -> None:
    src = _noise()
    path = tmp_path / f"img{suffix}"
    src.save(path, format=fmt)
    out = decode_rgb(path)
    assert out.image.mode == "RGB"
    assert out.image.size == (48, 40)
    assert out.original_format == fmt
    assert out.original_mode == "RGB"
    assert np.array_equal(np.asarray(out.image), np.asarray(src))


def test_decodes_jpeg(tmp_path: Path) -> None:
    src = Image.new("RGB", (30, 20), (200, 40, 60))
    path = tmp_path / "img.jpg"
    src.save(path, format="JPEG", quality=95)
    out = decode_rgb(path)
    assert out.original_format == "JPEG"
    assert out.image.mode == "RGB"
    assert out.image.size == (30, 20)
    arr = np.asarray(out.image).astype(int)
    assert np.abs(arr - np.array([200, 40, 60])).max() <= 4


def test_gif_decodes_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    out = decode_rgb(path)
    assert out.original_format == "GIF"
    assert out.image.mode == "RGB"
    assert np.asarray(out.image)[8, 8].tolist() == [255, 0, 0]


def test_rejects_zero_byte_file_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _reason(path) == "empty_file"


def test_rejects_text_named_png_as_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n", encoding="utf-8")
    assert _reason(path) == "not_an_image"


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "PNG"), (".jpg", "JPEG")])
def test_quarantines_truncated_image_as_corrupt(tmp_path: Path, suffix: str, fmt: str) -> None:
    path = tmp_path / f"cut{suffix}"
    _noise((64, 64)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected) as info:
        decode_rgb(path)
    assert info.value.reason == "corrupt"
    assert "corrupt" in str(info.value)


def test_rejects_more_pixels_than_max_pixels_as_decompression_bomb(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    assert _reason(path, max_pixels=40 * 30 - 1) == "decompression_bomb"
    # Exactly at the limit is allowed.
    assert decode_rgb(path, max_pixels=40 * 30).image.size == (40, 30)


def test_applies_exif_orientation(tmp_path: Path) -> None:
    img = Image.new("RGB", (20, 10), (255, 255, 255))
    img.paste((255, 0, 0), (0, 0, 5, 10))  # red stripe on the left edge
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    img.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    out = decode_rgb(path)
    assert out.image.size == (10, 20)
    arr = np.asarray(out.image).astype(int)
    # Rotated 90 degrees clockwise: the left edge becomes the top edge.
    assert arr[1, 5, 0] > 200 and arr[1, 5, 1] < 60
    assert arr[18, 5].min() > 200


def test_composites_transparent_pixels_over_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red
    rgba.putpixel((1, 0), (0, 0, 255, 128))  # one half-transparent blue
    path = tmp_path / "alpha.png"
    rgba.save(path)
    out = decode_rgb(path)
    assert out.original_mode == "RGBA"
    arr = np.asarray(out.image).astype(int)
    assert arr[5, 5].tolist() == [255, 255, 255]
    assert arr[0, 0].tolist() == [255, 0, 0]
    r, g, b = arr[0, 1]
    assert abs(r - 127) <= 2 and abs(g - 127) <= 2 and b == 255


def test_palette_with_transparency_is_composited_over_white(tmp_path: Path) -> None:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 1)
    p.info["transparency"] = 0
    path = tmp_path / "ptrans.png"
    p.save(path, transparency=0)
    arr = np.asarray(decode_rgb(path).image)
    assert arr[0, 0].tolist() == [255, 0, 0]
    assert arr[3, 3].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _palette_image(), [10, 20, 30]),
        (lambda: Image.new("L", (6, 6), 77), [77, 77, 77]),
        (lambda: Image.new("LA", (6, 6), (90, 255)), [90, 90, 90]),
        (lambda: Image.new("LA", (6, 6), (90, 0)), [255, 255, 255]),
        (lambda: Image.new("CMYK", (6, 6), (0, 255, 255, 0)), [255, 0, 0]),
    ],
    ids=["P", "L", "LA-opaque", "LA-transparent", "CMYK"],
)
def test_converts_modes_to_rgb(tmp_path: Path, make, expected: list[int]) -> None:
    img = make()
    fmt, suffix = ("TIFF", ".tif") if img.mode == "CMYK" else ("PNG", ".png")
    path = tmp_path / f"img{suffix}"
    img.save(path, format=fmt)
    out = decode_rgb(path)
    assert out.original_mode == img.mode
    assert out.image.mode == "RGB"
    assert np.asarray(out.image)[3, 3].tolist() == expected


def _palette_image() -> Image.Image:
    p = Image.new("P", (6, 6), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    return p


def test_sixteen_bit_grey_scales_to_eight_bits(tmp_path: Path) -> None:
    arr = np.zeros((4, 4), dtype=np.uint16)
    arr[0, 0] = 65535
    arr[0, 1] = 32768
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    path = tmp_path / "deep.png"
    img.save(path)
    out = decode_rgb(path)
    rgb = np.asarray(out.image)
    assert out.image.mode == "RGB"
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [128, 128, 128]
    assert rgb[3, 3].tolist() == [0, 0, 0]


def test_to_rgb_sixteen_bit_in_memory_maps_max_to_255() -> None:
    img = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert img.mode == "I;16"
    assert np.asarray(to_rgb(img)).tolist() == [[[255] * 3] * 2] * 2


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 50
    path.write_bytes(data)
    assert sha256_file(path, chunk=100) == hashlib.sha256(data).hexdigest()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny IDAT: decoding it fails."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_pixel_limit_is_read_from_the_header_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(30_000, 30_000))  # 900 MP: decoding would need 2.7 GB
    with pytest.raises(ImageRejected) as info:
        decode_rgb(path, max_pixels=89_478_485)
    assert info.value.reason == "decompression_bomb" and "900000000" in info.value.detail


def test_max_pixels_above_pillows_own_limit_is_honoured(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(15_000, 15_000))  # 225 MP: Pillow alone refuses above 179 MP
    before = PILImage.MAX_IMAGE_PIXELS
    with pytest.raises(ImageRejected) as info:
        decode_rgb(path, max_pixels=300_000_000)
    # Allowed by max_pixels, so it is decoded, and fails only because its pixel data is missing.
    assert info.value.reason == "corrupt" and "DecompressionBomb" not in info.value.detail
    assert before == PILImage.MAX_IMAGE_PIXELS  # Pillow's process-wide setting is restored


def test_decodes_from_a_binary_stream_and_records_orientation(tmp_path: Path) -> None:
    import io

    img = _noise((20, 10))
    exif = img.getexif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    buf.seek(0)
    out = decode_rgb(buf)
    assert out.orientation == 8 and out.image.size == (10, 20)
    assert _reason_of_stream(b"") == "empty_file"


def _reason_of_stream(data: bytes) -> str:
    import io

    with pytest.raises(ImageRejected) as info:
        decode_rgb(io.BytesIO(data))
    return info.value.reason


def test_draft_size_decodes_large_jpegs_at_reduced_scale(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (800, 600), (10, 200, 30)).save(path, quality=90)
    small = decode_rgb(path, draft_size=64).image
    assert 64 <= min(small.size) < 600 and small.size[0] / small.size[1] == pytest.approx(800 / 600, rel=0.02)
    assert decode_rgb(path).image.size == (800, 600)
    png = tmp_path / "big.png"
    Image.new("RGB", (800, 600)).save(png)
    assert decode_rgb(png, draft_size=64).image.size == (800, 600)  # only JPEG has DCT scaling


def test_animated_webp_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.webp"
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    out = decode_rgb(path)
    assert out.original_format == "WEBP"
    assert np.asarray(out.image)[8, 8].tolist() == [255, 0, 0]
