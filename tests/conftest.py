"""A tiny MNIST (or FashionMNIST) in the real IDX format, read by the same torchvision code as the real files."""

import struct
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY = ["data.batch_size=16", "data.val_size=16"]
# experiment=smnist's first net (T = 784, recurrent learnable ALIF on the neuron's own scale), whose gradients explode
EXPLODING_SMNIST = ["model=rsnn", "neuron=alif", "encoder=sequential", "T=784", "neuron.learnable=true"]
SIZES = {"input_shape": (1, 28, 28), "num_classes": 10}  # what snn.data.MNISTDataModule yields, for nets built directly


def write_idx(path: Path, array: np.ndarray) -> None:
    kind = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_tiny_mnist(root: Path, n_train: int = 96, n_test: int = 32, folder: str = "MNIST") -> Path:
    """Each class is a bright horizontal bar at its own height, plus noise: learnable in a few steps. `folder`: the
    torchvision class whose layout it takes, <root>/<folder>/raw (MNIST, FashionMNIST)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 3 + 2 * label : 5 + 2 * label, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def train_tiny(run: Path, mnist_root: Path, *overrides: str) -> Path:
    """A real training run of the composed config on the tiny data, in this process; returns its folder."""
    from omegaconf import open_dict

    from snn.training import train

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True, overrides=[f"data.root={mnist_root}", *TINY, *overrides])
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg.hydra
    train(cfg, run, choices)
    return run


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    return make_tiny_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture
def compose_cfg(mnist_root):
    """Compose the real config with overrides, pointed at the tiny dataset."""

    def _compose(*overrides: str, hydra: bool = False):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                "config", overrides=[f"data.root={mnist_root}", *TINY, *overrides], return_hydra_config=hydra
            )

    return _compose


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Build the C++ kernels once up front (about a minute on a fresh machine), not inside a timed subprocess."""
    from snn import kernels

    return kernels.load()
