"""Refuse a run whose time steps cannot fit in memory, before anything is allocated or written."""

import os

import torch
from omegaconf import DictConfig

from snn.config import ConfigError


def neurons_per_sample(net: torch.nn.Module) -> int:
    """The spiking neurons of one sample at one time step: the output size of each stage, which feeds a neuron."""
    h, count = torch.zeros(2, 1, 28, 28), 0
    with torch.no_grad():
        for stage in net.eval().stages:
            h = stage(h)
            count += h[0].numel()
    return count


def available_bytes(cfg: DictConfig) -> tuple[int, str]:
    """The memory a training step lives in: the first GPU's when training runs on one, else the RAM available now."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_properties(0).total_memory, "this GPU has"
    try:  # Linux: what can be allocated now without swapping, page cache included
        with open("/proc/meminfo") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
        return kib * 1024, "available now"
    except (OSError, StopIteration, ValueError, IndexError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine has"


def check_memory(cfg: DictConfig, net: torch.nn.Module) -> None:
    """A lower bound on what backpropagation through time keeps for one batch: per sample and step the encoded
    input (784 values) and, per neuron, its input current, membrane potential and spikes, at 4 bytes (2 under a
    16-bit precision). Weights, optimizer state and temporaries come on top (measured on CPU: the bound is within
    15 % of one training step's peak for the MLP and the conv net), so a refused run would not fit."""
    if not getattr(net, "spiking", False):
        return  # the ANN baselines have no time steps
    width = 2 if "16" in str(cfg.trainer.get("precision", "32")) else 4
    batch, neurons = cfg.data.batch_size, neurons_per_sample(net)
    needed = cfg.T * batch * (784 + 3 * neurons) * width
    have, where = available_bytes(cfg)
    if needed > have:
        raise ConfigError(
            f"T={cfg.T} is too large: one batch of {batch} through {cfg.T} steps needs at least {needed / 2**30:,.1f} "
            f"GiB for backpropagation through time ({neurons} neurons), more than the {have / 2**30:,.1f} GiB {where}; "
            "lower T or data.batch_size"
        )
