"""Turn a user's photo or drawing of a digit into an MNIST-like 28x28 input.

MNIST digits are white on black, size-normalised to fit a 20x20 box (aspect kept) and centred by their
centre of mass in a 28x28 frame. We do the same: grayscale, invert a light background, crop to the digit,
scale into 20x20, centre by mass, intensities in [0, 1] as in training.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image that cannot be read or holds no digit."""


def image_files(path: Path) -> list[Path]:
    """The image itself, or the images in a folder (sorted); a clear error when there are none."""
    if not path.exists():
        raise ImageError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{path}: folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def load_digit(path: Path) -> torch.Tensor:
    """A `[1, 28, 28]` float tensor in [0, 1]."""
    try:
        with Image.open(path) as image:
            gray = np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=np.float32) / 255
    except (UnidentifiedImageError, OSError, ValueError) as error:
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
