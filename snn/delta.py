"""Event-camera input, as N-MNIST was recorded: a camera moved in three saccades over a still digit, each pixel an
event sensor (a DVS). Here the digit moves instead, along a closed triangle of `amplitude` pixels, sampled
bilinearly (sub-pixel motion) in a frame padded by ceil(amplitude) on each side so that it stays in view; each pixel
keeps a reference level and emits an ON event (channel 0) when its linear intensity has risen by more than
`threshold` since its last event, an OFF event (channel 1) when it has fallen by more, and the reference becomes
the intensity it fired at. Binary `[T, B, 2, H + 2 * pad, W + 2 * pad]`, deterministic (no noise).

    python -m snn.delta [out=docs/delta_events.png] [index=0] [T=30] [amplitude=2] [threshold=0.1]

draws the events of one MNIST test digit (from SNN_DATA_DIR, default data/).
"""

import math
import os
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from snn.checks import ConfigError, is_number, require
from snn.encoders import Encoder

# The saccade triangle, (rows, columns) in units of the amplitude: up, down-right, down-left, back up.
TRIANGLE = ((-1.0, 0.0), (1.0, 1.0), (1.0, -1.0))


def saccade_offsets(T: int, amplitude: float) -> list[tuple[float, float]]:
    """The digit's offset in pixels at frames 0..T: three straight saccades of T/3 steps each around the triangle,
    ending where it began (frame 0 is the reference the sensors start from)."""
    offsets = []
    for t in range(T + 1):
        s = 3 * t / T
        leg, f = min(int(s), 2), s - min(int(s), 2)
        (y0, x0), (y1, x1) = TRIANGLE[leg], TRIANGLE[(leg + 1) % 3]
        offsets.append((amplitude * (y0 + f * (y1 - y0)), amplitude * (x0 + f * (x1 - x0))))
    return offsets


def shifted(images: torch.Tensor, dy: float, dx: float, pad: int) -> torch.Tensor:
    """`[B, C, H, W]` moved by (dy, dx) pixels (down, right) into a frame padded by `pad`: bilinear between the four
    whole-pixel shifts around it, zero outside the image. |dy|, |dx| <= pad."""
    margin = 2 * pad + 1  # room for a whole shift of -pad..pad and the bilinear neighbour
    big = F.pad(images, (margin,) * 4)
    height, width = images.shape[-2] + 2 * pad, images.shape[-1] + 2 * pad
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = dy - iy, dx - ix
    top, left = margin - pad - iy, margin - pad - ix  # out[i, j] = image[i - pad - dy, j - pad - dx]

    def window(r, c):
        return big[..., r : r + height, c : c + width]

    return (
        (1 - fy) * (1 - fx) * window(top, left)
        + (1 - fy) * fx * window(top, left - 1)
        + fy * (1 - fx) * window(top - 1, left)
        + fy * fx * window(top - 1, left - 1)
    )


def dvs_events(frames: torch.Tensor, threshold: float) -> torch.Tensor:
    """`[T + 1, B, H, W]` intensities -> `[T, B, 2, H, W]` events: ON (channel 0) where a pixel has risen by more than
    `threshold` above its reference level, OFF (channel 1) where it has fallen by more; an event sets the pixel's
    reference to its intensity then. The references start at frame 0."""
    reference, events = frames[0].clone(), []
    for frame in frames[1:]:
        change = frame - reference
        on, off = change > threshold, change < -threshold
        reference = torch.where(on | off, frame, reference)
        events.append(torch.stack((on, off), dim=1))
    return torch.stack(events).to(frames.dtype)


class DeltaEncoder(Encoder):
    """Events of a digit moved along a saccade triangle (module docstring): `amplitude` in pixels (> 0, sub-pixel
    allowed), `threshold` the linear intensity change (images in [0, 1]) that makes an event. Colour images are
    seen in grey (their channel mean). Step shape `[2, H + 2 * ceil(amplitude), W + 2 * ceil(amplitude)]`."""

    def __init__(self, T: int, amplitude: float = 2.0, threshold: float = 0.1):
        super().__init__(T)
        require(is_number(amplitude) and 0 < amplitude <= 8, "amplitude", amplitude, "a number of pixels in (0, 8]")
        require(is_number(threshold) and 0 < threshold < 1, "threshold", threshold, "a number in (0, 1)")
        self.amplitude, self.threshold = float(amplitude), float(threshold)
        self.pad = math.ceil(self.amplitude)

    def extra_repr(self) -> str:
        return f"T={self.T}, amplitude={self.amplitude}, threshold={self.threshold}"

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Also where a run's T is checked against the path (as the sequential encoder checks it against the image):
        fewer than 3 steps would skip saccades, and T=1 returns to the start at once, with no event at all."""
        if self.T < 3:
            raise ConfigError(
                f"T={self.T} is not allowed with encoder=delta: T must be >= 3 (at least one step per saccade)"
            )
        _, height, width = input_shape
        return (2, height + 2 * self.pad, width + 2 * self.pad)

    def forward(self, images):
        grey = images.mean(1, keepdim=True)
        offsets = saccade_offsets(self.T, self.amplitude)
        frames = torch.stack([shifted(grey, dy, dx, self.pad)[:, 0] for dy, dx in offsets])
        return dvs_events(frames, self.threshold)


def main(argv: list[str]) -> None:
    """The docs figure: one real test digit's events."""
    from snn.data import DataError, load_mnist
    from snn.plots import events_figure, save

    args = {"out": "docs/delta_events.png", "index": "0", "T": "30", "amplitude": "2", "threshold": "0.1"}
    try:
        for arg in argv:
            key, sep, value = arg.partition("=")
            if not sep or key not in args:
                raise ConfigError(f"unknown argument {arg!r}; allowed: {', '.join(f'{k}=' for k in args)}")
            args[key] = value
        encoder = DeltaEncoder(int(args["T"]), float(args["amplitude"]), float(args["threshold"]))
        encoder.output_shape((1, 28, 28))  # its T rule
        images, labels = load_mnist(os.environ.get("SNN_DATA_DIR", "data"), train=False, download=False)
        index = int(args["index"])
        require(0 <= index < len(labels), "index", index, f"a test-set index in [0, {len(labels) - 1}]")
        events = encoder(images[index : index + 1])[:, 0]
    except (ConfigError, DataError, ValueError) as error:
        sys.exit(f"error: {error}")
    title = f"MNIST test image {index} (a {int(labels[index])}), encoder=delta {encoder.extra_repr()}"
    save(events_figure(images[index], events, title), args["out"])
    print(args["out"])


if __name__ == "__main__":
    main(sys.argv[1:])
