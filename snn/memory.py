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
    """The memory a training step lives in: the first GPU's when training runs on one, else the machine's RAM."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_properties(0).total_memory, "this GPU's"
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's"


def check_memory(cfg: DictConfig, net: torch.nn.Module) -> None:
    """A lower bound on what backpropagation through time keeps for one batch: per sample and step the encoded
    input (784 values) and, per neuron, its input current, membrane potential and spikes, at 4 bytes (2 under a
    16-bit precision). Optimizer state, weights and temporaries come on top, so a refused run could never fit."""
    if not getattr(net, "spiking", False):
        return  # the ANN baselines have no time steps
    width = 2 if "16" in str(cfg.trainer.get("precision", "32")) else 4
    batch, neurons = cfg.data.batch_size, neurons_per_sample(net)
    needed = cfg.T * batch * (784 + 3 * neurons) * width
    have, where = available_bytes(cfg)
    if needed > have:
        raise ConfigError(
            f"T={cfg.T} is too large: one batch of {batch} through {cfg.T} steps needs at least {needed / 2**30:,.1f} "
            f"GiB for backpropagation through time ({neurons} neurons), more than {where} {have / 2**30:,.1f} GiB; "
            "lower T or data.batch_size"
        )
