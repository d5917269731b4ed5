"""MNIST-family datasets held in memory as tensors; batches are gathered by index, never decoded per sample.

A data module says what it yields (`input_shape`, `num_classes`, `class_names`, as class attributes, known without
reading a file): the models, metrics, figures and the NIR export take their sizes from it."""

import math
import struct
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset
from torchvision.datasets import MNIST, FashionMNIST

from snn.checks import is_count, is_number, require


class DataError(RuntimeError):
    """The dataset could not be found, fetched or read."""


def check_idx(path: Path) -> None:
    """Refuse a truncated or foreign file with its name, before torchvision fails deep inside on it."""
    with path.open("rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:3] != b"\0\0\x08" or not 1 <= magic[3] <= 3:
            raise DataError(f"{path}: not an MNIST IDX file (its header is {magic.hex() or 'empty'})")
        dims = f.read(4 * magic[3])
    if len(dims) < 4 * magic[3]:
        raise DataError(f"{path}: truncated IDX file (it ends inside the header)")
    expected = 4 + len(dims) + math.prod(struct.unpack(f">{magic[3]}I", dims))
    if path.stat().st_size != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file ({path.stat().st_size} bytes, its header promises {expected})"
        )


def raw_files(root: str | Path, source: type[MNIST] = MNIST) -> list[Path]:
    """The four IDX files torchvision's MNIST-family class reads, under <root>/<its class name>/raw."""
    raw = Path(root) / source.__name__ / "raw"
    return [raw / Path(url).name.removesuffix(".gz") for url, _ in source.resources]


def load_mnist(
    root: str | Path, train: bool, download: bool = True, source: type[MNIST] = MNIST
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 `[N, 1, H, W]` in [0, 1] and int64 labels of `source` (torchvision's MNIST or a subclass
    such as FashionMNIST, the same IDX layout); downloads only if the raw files are missing."""
    files = raw_files(root, source)
    prefix = "train" if train else "t10k"
    for path in files:
        if path.name.startswith(prefix) and path.is_file():
            check_idx(path)
    missing = [str(path) for path in files if not path.is_file()]
    name, raw = source.__name__, files[0].parent
    where = f"Put the four raw IDX files there, or point data.root / SNN_DATA_DIR at the folder holding {name}/raw."
    expected = f": expected {', '.join(missing)}" if missing else ""
    if missing and not download:
        raise DataError(f"{name} is not in {raw} and data.download is false{expected}. {where}")
    made = [p for p in (raw, *raw.parents) if not p.exists()]  # torchvision creates them to download into
    try:
        dataset = source(str(root), train=train, download=download)
    except Exception as error:  # torchvision raises bare RuntimeErrors/URLErrors when offline
        for folder in made:  # deepest first; only while empty: what the failed download made and left empty
            try:
                folder.rmdir()
            except OSError:
                break
        reason = " ".join(str(error).split())[:200]
        raise DataError(
            f"{name} is not in {raw} and could not be downloaded ({type(error).__name__}: {reason}){expected}. {where}"
        ) from None
    return dataset.data.unsqueeze(1).float().div_(255), dataset.targets.long()


def random_shift(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by its own whole-pixel offset in [-max_shift, max_shift], filling with black."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), device=images.device)
    rows = (torch.arange(h, device=images.device) + dy)[:, :, None]  # [n, h, 1]
    cols = (torch.arange(w, device=images.device) + dx)[:, None, :]  # [n, 1, w]
    return padded[torch.arange(n, device=images.device)[:, None, None], 0, rows, cols].unsqueeze(1)


def random_rotate_scale(images: torch.Tensor, max_degrees: float, max_scale: float) -> torch.Tensor:
    """Rotate each image about its centre by up to +-max_degrees and zoom it by a factor in 1 +- max_scale."""
    n = len(images)
    angle = (torch.rand(n, device=images.device) * 2 - 1) * math.radians(max_degrees)
    zoom = 1 + (torch.rand(n, device=images.device) * 2 - 1) * max_scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # the grid maps output to input coordinates
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def _loader(images, labels, batch_size: int, shuffle: bool) -> DataLoader:
    dataset = TensorDataset(images, labels)
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    # batch_size=None + a BatchSampler: the dataset is indexed with a whole list of indices at once.
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


class MNISTDataModule(pl.LightningDataModule):
    """Train/val is a fixed split of the 60k training set (seeded by `split_seed`, not by the run's seed).
    Another dataset in the MNIST IDX layout is a subclass naming its torchvision class and what it yields."""

    source: type[MNIST] = MNIST  # read from <root>/MNIST/raw
    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    class_names: tuple[str, ...] = tuple("0123456789")

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 128,
        val_size: int = 5000,
        split_seed: int = 0,
        download: bool = True,
        max_shift: int = 0,
        max_rotation: float = 0.0,
        max_scale: float = 0.0,
    ):
        super().__init__()
        require(is_count(batch_size), "batch_size", batch_size, "an integer >= 1")
        require(is_count(val_size), "val_size", val_size, "an integer >= 1")
        require(is_count(max_shift, minimum=0), "max_shift", max_shift, "an integer >= 0")
        require(is_number(max_rotation) and max_rotation >= 0, "max_rotation", max_rotation, "a number >= 0")
        require(is_number(max_scale) and 0 <= max_scale < 1, "max_scale", max_scale, "a number in [0, 1)")
        self.max_shift, self.max_rotation, self.max_scale = max_shift, max_rotation, max_scale
        self.root, self.batch_size, self.val_size, self.split_seed = root, batch_size, val_size, split_seed
        self.download = download
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        """Loads what the stage needs (testing alone reads only the test set), once."""
        splits = {}
        if stage != "test" and "train" not in self.splits:
            images, labels = load_mnist(self.root, True, self.download, self.source)
            if not 0 < self.val_size < len(images):
                raise DataError(
                    f"data.val_size={self.val_size} must be between 1 and {len(images) - 1} "
                    f"(the training set under {self.root} has {len(images)} images)"
                )
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
            val, train = order[: self.val_size], order[self.val_size :]
            splits = {"train": (images[train], labels[train]), "val": (images[val], labels[val])}
        if stage in (None, "test") and "test" not in self.splits:
            splits["test"] = load_mnist(self.root, False, self.download, self.source)
        # On a GPU the whole dataset (about 200 MB) lives there: batches are gathered on the device.
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.splits.update({name: (x.to(device), y.to(device)) for name, (x, y) in splits.items()})

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch
        if self.max_rotation or self.max_scale:
            images = random_rotate_scale(images, self.max_rotation, self.max_scale)
        if self.max_shift:
            images = random_shift(images, self.max_shift)
        return images, labels

    def train_dataloader(self):
        return _loader(*self.splits["train"], self.batch_size, shuffle=True)

    def val_dataloader(self):
        return _loader(*self.splits["val"], self.batch_size, shuffle=False)

    def test_dataloader(self):
        return _loader(*self.splits["test"], self.batch_size, shuffle=False)


class FashionMNISTDataModule(MNISTDataModule):
    """Zalando's Fashion-MNIST: 28x28 grey images of 10 kinds of clothing, read from <root>/FashionMNIST/raw."""

    source = FashionMNIST
    class_names = tuple(FashionMNIST.classes)
