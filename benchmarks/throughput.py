"""Training throughput and activation memory of the 784-1000-10 spiking MLP and of the conv SNN, side by side.

    python benchmarks/throughput.py                  # the MLP: rate and direct input, T=25, batch 128 (float32, bf16)
    python benchmarks/throughput.py --net conv       # the conv SNN of baseline=csnn: direct input, T=4, batch 128
    python benchmarks/throughput.py --net rsnn       # the recurrent S-MNIST net 1-256-10, T=784 (--T 28: by rows)
    python benchmarks/throughput.py --device cuda    # the same on a GPU (--net rsnn too: Triton, cuBLAS)

Compared in one process: this project (fused multi-step LIF, event-driven input products; on CPU in C++, on a GPU
in Triton, and for reference with dense products and with no C++ or Triton kernels at all); the usual snnTorch loop
(nn.Linear + snntorch.Leaky per step); SpikingJelly's multi-step LIFNode (torch backend; on a GPU also its cupy and
triton backends where they run) when it is installed (`pip install -e .[bench]`). All use LIF beta=0.9
(SpikingJelly: tau=10, no input decay), threshold 1, subtract reset detached, the atan surrogate, cross-entropy on
output spike counts and Adam. The rows are written in `benchmarks/mlp_nets.py`, `benchmarks/conv_nets.py` and
`benchmarks/rsnn_nets.py`.
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as `import snn` sets it, before torch: alike for every row

import argparse
import platform
import statistics
import time
from functools import partial

import conv_nets
import mlp_nets
import rsnn_nets
import torch
import torch.nn.functional as F

from snn import kernels
from snn.data import load_mnist


def saved_for_backward_mib(model, images, labels) -> float:
    """Bytes of the distinct storages autograd keeps for backward in one training step."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(images), labels)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values()) / 2**20


class Trainer:
    """Times training steps of one model; rounds of all models are interleaved so that a noisy
    neighbour on the machine slows every implementation alike."""

    def __init__(self, model, batches, device):
        self.model, self.batches, self.device, self.i = model, batches, device, 0
        # this project's rows step Adam as train.py does (fused); the others as their tutorials do
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=getattr(model, "fused_optimizer", None))
        self.rates = []
        self.run(3)  # warm-up

    def run(self, steps: int) -> None:
        kernels.enabled = getattr(self.model, "kernels", True)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else lambda: None
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            images, labels = self.batches[self.i % len(self.batches)]
            self.i += 1
            self.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(images), labels).backward()
            self.optimizer.step()
        sync()
        self.rates.append(steps * len(labels) / (time.perf_counter() - start))

    def samples_per_second(self) -> float:
        return statistics.median(self.rates[1:])  # the first entry is the warm-up


def print_profile(title: str, trainer: Trainer, steps: int) -> None:
    """Where one training step's time goes: operations by their own time (children excluded), per step."""
    from torch.profiler import profile

    with profile() as prof:
        trainer.run(steps)
    trainer.rates.pop()  # not a timing round: the profiler slows it down
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\n{title}: {total / steps / 1e3:.1f} ms of operator time per step (profiled)\n")
    print("| operation | ms per step | share |\n|---|---:|---:|")
    for e in events[:12]:
        print(f"| {e.key} | {e.self_cpu_time_total / steps / 1e3:.1f} | {e.self_cpu_time_total / total:.0%} |")


def gemm_gflops(T, batch, hidden, device, dtype=torch.float32) -> float:
    a, b = (torch.randn(*shape, device=device, dtype=dtype) for shape in ((T * batch, 784), (784, hidden)))
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * T * batch * 784 * hidden * reps / (time.perf_counter() - start) / 1e9


def spikingjelly_gpu_rows(net, hidden, device):
    """Rows for SpikingJelly's fused GPU backends (cupy, triton), where they are installed and run here. None for
    the recurrent net: SpikingJelly's recurrent container steps a single-step neuron, which its fused backends do not
    run."""
    if net == "rsnn":
        return []
    try:
        from spikingjelly.activation_based import neuron
    except ImportError:
        return []
    rows = []
    for backend in ("cupy", "triton"):
        try:  # each needs its own package (cupy-cuda12x, triton) and a version SpikingJelly supports
            neuron.LIFNode(step_mode="m", backend=backend).to(device)(torch.zeros(2, 1, 8, device=device))
        except Exception as error:
            print(f"SpikingJelly's {backend} backend does not run here: skipped ({type(error).__name__}: {error})")
            continue
        name = f"SpikingJelly multi-step, {backend}"
        if net == "conv":
            rows.append(("direct", name, partial(conv_nets.SpikingJellyConvMultiStep, backend=backend)))
        else:
            model = partial(mlp_nets.SpikingJellyMultiStep, hidden=hidden, direct=False, backend=backend)
            rows.append(("rate", name, model))
    return rows


def load_batches(args, device):
    root = args.data or os.environ.get("SNN_DATA_DIR")
    n = args.batch * 8
    if root:
        images, labels = load_mnist(root, train=True, download=False)
        images, labels = images[:n], labels[:n]
    else:  # MNIST-like sparsity: about 19% of pixels lit
        images = torch.rand(n, 1, 28, 28) * (torch.rand(n, 1, 28, 28) < 0.19)
        labels = torch.randint(0, 10, (n,))
    # contiguous copies: a batch must not keep the whole dataset's storage alive (and counted as saved)
    batches = [
        (images[i : i + args.batch].clone().to(device), labels[i : i + args.batch].clone().to(device))
        for i in range(0, n, args.batch)
    ]
    return batches, bool(root)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", choices=["mlp", "conv", "rsnn"], default="mlp")
    parser.add_argument("--T", type=int, help="time steps (default: 25 for the MLP, 4 for the conv net, 784 rsnn)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", help="MNIST root (default: $SNN_DATA_DIR, else synthetic images)")
    parser.add_argument("--only", help="run only the implementations whose name contains this text")
    parser.add_argument("--profile", action="store_true", help="then print torch.profiler's top operations per row")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    batches, real = load_batches(args, device)

    if args.net == "conv":
        args.T = args.T or 4
        candidates = conv_nets.candidates()
    elif args.net == "rsnn":
        args.T = args.T or 784
        if 784 % args.T:
            parser.error(f"--T {args.T} is not allowed for --net rsnn: a divisor of 784 (784 pixels, 28 rows)")
        candidates = rsnn_nets.candidates()
    else:
        args.T = args.T or 25
        candidates = mlp_nets.candidates(args.hidden)
    if device.type == "cuda":
        candidates += spikingjelly_gpu_rows(args.net, args.hidden, device)

    candidates = [c for c in candidates if not args.only or args.only in c[1] or c[1] == "snnTorch loop"]
    trainers, memories, peaks = [], [], []
    for encoding, name, cls in candidates:
        torch.manual_seed(0)
        model = cls(args.T).to(device)
        kernels.enabled = getattr(model, "kernels", True)
        memories.append(saved_for_backward_mib(model, *batches[0]))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainers.append(Trainer(model, batches, device))
        peaks.append(torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None)
    for _ in range(args.rounds):
        for trainer in trainers:
            trainer.run(args.steps)
    rows = [
        (encoding, name, trainer.samples_per_second(), memory, peak)
        for (encoding, name, _), trainer, memory, peak in zip(candidates, trainers, memories, peaks)
    ]

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {device}{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}, "
        f"{'MNIST' if real else 'synthetic'} images"
    )
    net = {
        "conv": "conv3x3-BN-LIF x [32,64,128], max-pool, FC 128, FC 10",
        "rsnn": f"{784 // args.T}-{rsnn_nets.HIDDEN} (recurrent, all-to-all)-10",
    }.get(args.net, f"784-{args.hidden}-10")
    print(
        f"{net} LIF, T={args.T}, batch {args.batch}, Adam, {torch.get_num_threads()} threads; median of "
        f"{args.rounds} interleaved rounds of {args.steps} training steps\n"
    )
    print(
        "| input | implementation | samples/s | vs snnTorch | saved for backward (MiB) |"
        + (" peak CUDA (MiB) |" if device.type == "cuda" else "")
    )
    print("|---|---|---:|---:|---:|" + ("---:|" if device.type == "cuda" else ""))
    for encoding, name, speed, memory, peak in rows:
        base = next(r[2] for r in rows if r[0] == encoding and r[1] == "snnTorch loop")
        line = f"| {encoding} | {name} | {speed:,.0f} | {speed / base:.2f}x | {memory:,.1f} |"
        print(line + (f" {peak:,.0f} |" if peak is not None else ""))
    if args.net == "mlp":
        print()
        for dtype in (torch.float32, torch.bfloat16):
            gflops = gemm_gflops(args.T, args.batch, args.hidden, device, dtype)
            # Linear layers per sample: forward, weight gradients, and the input gradient of layer 2.
            roofline = gflops * 1e9 / (2 * args.T * (784 * args.hidden * 2 + args.hidden * 10 * 3))
            print(
                f"dense {str(dtype)[6:]} GEMM ({args.T * args.batch}x784 @ 784x{args.hidden}): {gflops:,.0f} GFLOP/s ",
                end="",
            )
            print(f"-> roofline for the linear layers alone: {roofline:,.0f} samples/s")
    ours = {r[0]: r[2] for r in rows if r[1] == "this project"}
    for encoding, name, speed, _, _ in rows:
        if name != "this project" and encoding in ours:
            print(f"{encoding}: this project / {name} = {ours[encoding] / speed:.2f}x")
    if args.net == "rsnn":
        print(f"\nload average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for _, name, speed, _, _ in rows:
            print(f"{name}: {60000 / speed:,.0f} s per 60,000-sample epoch")
        ours = next((t.model for t in trainers if type(t.model) is rsnn_nets.OursRecurrent), None)
        if ours is not None:
            rsnn_nets.breakdown(ours, batches[0][0])
    if args.profile:
        for (encoding, name, _), trainer in zip(candidates, trainers):
            print_profile(f"{encoding}, {name}", trainer, args.steps)


if __name__ == "__main__":
    main()
