"""Refuse time steps that cannot fit in memory, before anything is allocated or written: one estimate for a
training run (train.py) and for an evaluation (evaluate.py of a checkpoint or a .nir graph)."""

import math
import os

import torch

from snn.checks import ConfigError


def available_bytes(accelerator: str = "auto") -> tuple[int, str]:
    """The memory the steps live in: the first GPU's when they run on one, else the RAM available now."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_properties(0).total_memory, "this GPU has"
    try:  # Linux: what can be allocated now without swapping, page cache included
        with open("/proc/meminfo") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
        return kib * 1024, "available now"
    except (OSError, StopIteration, ValueError, IndexError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine has"


def gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB" if size >= 2**28 else f"{size / 2**20:,.1f} MiB"


def neurons_per_sample(net: torch.nn.Module) -> int:
    """The spiking neurons of one sample at one time step: every layer's neurons, as the layers were built."""
    return sum(math.prod(neuron.shape) for neuron in net.neurons)


def time_steps_bytes(T: int, batch: int, input_shape, net: torch.nn.Module, training: bool, width: int = 4) -> int:
    """A lower bound on what one batch keeps over T steps: per sample and step the encoded input and, per neuron,
    its membrane and spikes (+ its input current, kept for backpropagation through time when training), at `width`
    bytes (2 under a 16-bit precision). Weights, optimizer state and temporaries come on top (measured on CPU: the
    training bound is within 15 % of one training step's peak for the MLP and the conv net)."""
    per_neuron = 3 if training else 2
    return T * batch * (math.prod(input_shape) + per_neuron * neurons_per_sample(net)) * width


def check_training(cfg, net: torch.nn.Module, input_shape) -> None:
    """train.py: T, data.batch_size and the precision against the memory training runs in."""
    if not getattr(net, "spiking", False):
        return  # the ANN baselines have no time steps
    width = 2 if "16" in str(cfg.trainer.get("precision", "32")) else 4
    batch = cfg.data.batch_size
    needed = time_steps_bytes(cfg.T, batch, input_shape, net, training=True, width=width)
    have, where = available_bytes(str(cfg.trainer.get("accelerator", "auto")))
    if needed > have:
        neurons = neurons_per_sample(net)
        raise ConfigError(
            f"T={cfg.T} is too large: one batch of {batch} through {cfg.T} steps needs at least {gib(needed)} for "
            f"backpropagation through time ({neurons} neurons), more than the {gib(have)} {where}; "
            "lower T or data.batch_size"
        )


def check_evaluation(source, T: int, batch: int, input_shape, net: torch.nn.Module) -> None:
    """evaluate.py: a stored or given T whose activity cannot fit in memory for `batch` images at once."""
    needed = time_steps_bytes(T, batch, input_shape, net, training=False)
    have, where = available_bytes()
    if needed > have:
        raise ConfigError(
            f"{source}: T={T} needs about {gib(needed)} for a batch of {batch}, more than the {gib(have)} {where}; "
            "give a smaller T=<time steps>"
        )
