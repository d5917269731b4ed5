"""User images as data: transparency, float pixels, decompression bombs and files that are not images."""

import os
import socket
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from snn.digits import ImageError, image_files, load_digit
from snn.evaluation import figure_name


def seven(size=60) -> np.ndarray:
    """A dark "7" on white, as uint8."""
    canvas = np.full((size, size), 255, dtype=np.uint8)
    canvas[10:16, 15:45] = 0
    canvas[10:50, 39:45] = 0
    return canvas


def bomb_png(path, width, height):
    """A valid PNG header declaring width x height pixels, with next to no data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_a_digit_on_a_transparent_background_is_the_digit(tmp_path):
    """Ink only in the alpha channel (RGB all zero): the same digit as dark ink on white paper, dark or light ink."""
    Image.fromarray(seven()).save(tmp_path / "paper.png")
    expected = load_digit(tmp_path / "paper.png")
    for name, rgb in (("black_ink.png", 0), ("white_ink.png", 255)):
        rgba = np.zeros((60, 60, 4), dtype=np.uint8)
        rgba[..., :3] = rgb
        rgba[..., 3] = 255 - seven()
        Image.fromarray(rgba).save(tmp_path / name)
        assert torch.allclose(load_digit(tmp_path / name), expected, atol=1e-3), name


def test_a_float_image_is_scaled_by_its_range_and_nan_is_refused(tmp_path):
    Image.fromarray(seven()).save(tmp_path / "bytes.png")
    floats = seven().astype(np.float32) / 255  # in [0, 1]: cast to 8 bits it would be black
    Image.fromarray(floats).save(tmp_path / "floats.tif")
    assert torch.allclose(load_digit(tmp_path / "floats.tif"), load_digit(tmp_path / "bytes.png"), atol=1e-3)
    for bad in (np.nan, np.inf):
        floats[0, 0] = bad
        Image.fromarray(floats).save(tmp_path / "bad.tif")
        with pytest.raises(ImageError, match=r"bad.tif: pixel values include NaN or infinity"):
            load_digit(tmp_path / "bad.tif")


@pytest.mark.parametrize("side", [10_000, 100_000])  # above PIL's warning limit, and above its error limit
def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, side):
    with pytest.raises(ImageError, match=r"bomb.png: refused, too many pixels"):
        load_digit(bomb_png(tmp_path / "bomb.png", side, side))


def test_what_is_not_an_image_file_is_refused_without_blocking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative socket path: a long tmp path would exceed the limit of 108 bytes
    os.mkfifo("fifo.png")  # opened for reading, a FIFO would wait for a writer for ever
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("digit.png")
        for path, kind in (("fifo.png", "a FIFO"), ("digit.png", "a socket"), ("/dev/null", "a device")):
            with pytest.raises(ImageError, match=f"{path}: {kind}"):
                image_files(tmp_path / path)
            with pytest.raises(ImageError, match=f"{path}: {kind}"):
                load_digit(tmp_path / path)  # a file swapped for one after the listing
        Image.fromarray(seven()).save("real.png")
        assert image_files(tmp_path) == [tmp_path / "real.png"]  # special files in a folder are not images


def test_figures_are_named_by_the_whole_file_name(tmp_path):
    names = [figure_name(tmp_path / name) for name in ("seven.png", "seven.jpg", "seven.PNG", "seven.b.png", "seven")]
    assert names == ["seven_png.png", "seven_jpg.png", "seven_PNG.png", "seven.b_png.png", "seven.png"]
