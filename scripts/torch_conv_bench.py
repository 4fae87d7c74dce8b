#!/usr/bin/env python3
"""PyTorch side of `examples/bench_conv`: the same convolution layers, timed the same way.

Setup (a developer machine; CI does not need Python):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch
    /tmp/torchenv/bin/python scripts/torch_conv_bench.py              # 1 and 2 threads
    /tmp/torchenv/bin/python scripts/torch_conv_bench.py --threads 1 --quick

`cargo run --release --example bench_conv -- --torch /tmp/torchenv/bin/python` runs this
script itself and prints its figures beside phm-nn's.

Case (as bench_conv): a 3x3 convolution, 64 -> 64 channels, padding 1, 32x32 images, batch 32,
f32, NCHW (`--quick`: 16x16 images, batch 8). Contenders:

- conv:      torch.nn.Conv2d, the layer a user would pick;
- phc n=4:   a PHM convolution as PyTorch users write it (HyperNets / PHC): the kernel
             K = sum_i kron(A_i, F_i) rebuilt on every call by an einsum, then F.conv2d;
             autograd gives its backward.

Timing (as bench_conv): each contender is warmed up once, its sample sized to at least 40 ms,
then 7 samples are taken round-robin and the median per call is reported. "forward" runs
under torch.no_grad(); a "training step" zeroes the gradients, runs forward and backward
(input gradient included, as phm-nn's backward returns it) and changes every parameter in
place (as an optimizer step would).

Output: one line per (threads, contender) that bench_conv parses:

    torch threads=1 layer=conv forward_ms=34.1 step_ms=81.5
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SAMPLE = 0.040
SAMPLES = 7


def race(contenders):
    """Median seconds per call of each closure, sampled round-robin."""
    reps = []
    for f in contenders:
        f()
        start = time.perf_counter()
        f()
        once = max(time.perf_counter() - start, 1e-7)
        reps.append(int(min(max(-(-SAMPLE // once), 1), 100_000)))
    samples = [[] for _ in contenders]
    for _ in range(SAMPLES):
        for i, f in enumerate(contenders):
            start = time.perf_counter()
            for _ in range(reps[i]):
                f()
            samples[i].append((time.perf_counter() - start) / reps[i])
    return [statistics.median(s) for s in samples]


class Phc(torch.nn.Module):
    """K = sum_i kron(A_i, F_i) (A: (n, n, n), F: (n, out/n, in/n, k, k)), then conv2d."""

    def __init__(self, c_in, c_out, k, n, padding):
        super().__init__()
        self.n, self.padding = n, padding
        self.a = torch.nn.Parameter(torch.randn(n, n, n) / n)
        self.f = torch.nn.Parameter(torch.randn(n, c_out // n, c_in // n, k, k) * 0.05)
        self.bias = torch.nn.Parameter(torch.zeros(c_out))

    def forward(self, x):
        n = self.n
        _, o, i, kh, kw = self.f.shape
        kernel = torch.einsum("nrc,noikl->rocikl", self.a, self.f).reshape(n * o, n * i, kh, kw)
        return F.conv2d(x, kernel, self.bias, padding=self.padding)


def contenders_for(layer, x, g):
    params = list(layer.parameters())

    def forward():
        with torch.no_grad():
            layer(x)

    xg = x.clone().requires_grad_(True)

    def step():
        for p in params:
            p.grad = None
        xg.grad = None
        layer(xg).backward(g)
        with torch.no_grad():
            for p in params:
                p.mul_(1.0)

    return forward, step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    batch, size = (8, 16) if args.quick else (32, 32)
    c_in, c_out, k, n = 64, 64, 3, 4
    torch.manual_seed(0)
    x = torch.rand(batch, c_in, size, size) * 2 - 1
    g = torch.rand(batch, c_out, size, size) * 2 - 1
    layers = {
        "conv": torch.nn.Conv2d(c_in, c_out, k, padding=1),
        "phc4": Phc(c_in, c_out, k, n, 1),
    }
    print(f"# torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, "
          f"case 3x3 {c_in}->{c_out} padding 1, {size}x{size}, batch {batch}, f32")
    for threads in args.threads:
        torch.set_num_threads(threads)
        fns = []
        for layer in layers.values():
            fns.extend(contenders_for(layer, x, g))
        times = race(fns)
        for j, name in enumerate(layers):
            fwd, step = times[2 * j], times[2 * j + 1]
            print(f"torch threads={threads} layer={name} forward_ms={fwd * 1e3:.3f} "
                  f"step_ms={step * 1e3:.3f}", flush=True)


if __name__ == "__main__":
    main()
