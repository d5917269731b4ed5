"""Turn a user's photo or drawing of a digit into an MNIST-like 28x28 input.

MNIST digits are white on black, size-normalised to fit a 20x20 box (aspect kept) and centred by their
centre of mass in a 28x28 frame. We do the same: grayscale, invert a light background, crop to the digit,
scale into 20x20, centre by mass, intensities in [0, 1] as in training.
"""

import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Images larger than PIL's own decompression-bomb limit (about 89 megapixels) are refused, not decoded.
BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


class ImageError(ValueError):
    """An image that cannot be read or holds no digit."""


def _not_a_file(path: Path, mode: int) -> ImageError:
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"
    return ImageError(f"{path}: {kind}, not an image file or a folder of images")


def image_files(path: Path) -> list[Path]:
    """The image itself, or the images in a folder (sorted); a clear error when there are none."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISREG(mode):
            return [path]
        if not stat.S_ISDIR(mode):
            raise _not_a_file(path, mode)
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file or folder") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not files:
        raise ImageError(f"{path}: folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def _open_regular(path: Path):
    """The file opened for reading, never blocking: a FIFO or socket put in its place since the listing is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        if path.exists() and not stat.S_ISREG(mode := path.stat().st_mode):
            raise _not_a_file(path, mode) from None  # a socket cannot be opened at all: say what it is
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_a_file(path, mode)
    return os.fdopen(fd, "rb")


def _grayscale(path: Path, image: Image.Image) -> np.ndarray:
    """Intensities in [0, 1]. Float and 16/32-bit images are scaled by their own range (converting them to 8 bits
    would clip a [0, 1] float image to black); transparent pixels are laid on the background that contrasts with
    the ink (a dark digit on a transparent background is a dark digit on white)."""
    if image.mode == "F" or image.mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ImageError(f"{path}: pixel values include NaN or infinity; an image needs finite values")
        low, high = values.min(), values.max()
        return ((values - low) / (high - low) if high > low else np.zeros_like(values)).astype(np.float32)
    if "A" in image.getbands() or "transparency" in image.info:
        gray, alpha = np.moveaxis(np.asarray(image.convert("RGBA").convert("LA"), dtype=np.float32) / 255, -1, 0)
        ink = (alpha * gray).sum() / max(alpha.sum(), 1e-6)  # the mean colour of what is visible
        return alpha * gray + (1 - alpha) * (1.0 if ink < 0.5 else 0.0)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def load_digit(path: Path) -> torch.Tensor:
    """A `[1, 28, 28]` float tensor in [0, 1]."""
    with _open_regular(path) as file, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(file) as image:
                gray = _grayscale(path, ImageOps.exif_transpose(image))
        except ImageError:
            raise
        except BOMB as error:
            raise ImageError(f"{path}: refused, too many pixels to decode ({error})") from None
        except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError, struct.error) as error:
            raise ImageError(f"{path}: not a readable image ({type(error).__name__})") from None
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper
        gray, border = 1 - gray, 1 - border
    gray = np.clip(gray - np.median(border), 0, None)  # the background becomes exactly 0
    if gray.max() <= 0.05:
        raise ImageError(f"{path}: no digit found (the image is blank)")
    gray /= gray.max()
    rows, cols = np.nonzero(gray > 0.2)
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    digit = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS)).clip(0, 1)
    canvas = np.zeros((28, 28), dtype=np.float32)
    com_y, com_x = (np.indices(digit.shape) * digit).reshape(2, -1).sum(1) / digit.sum()
    top = int(np.clip(round(14 - com_y), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - com_x), 0, 28 - digit.shape[1]))
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return torch.from_numpy(canvas).unsqueeze(0)
