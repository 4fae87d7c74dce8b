#!/usr/bin/env python3
"""PyTorch side of the bench report: nn.Linear and two PHM formulations, timed the way
`cargo run --release --example bench_report -- --key` times phm-nn (same cases, same method).

Setup (a developer machine; CI does not need Python):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch
    /tmp/torchenv/bin/python scripts/torch_bench.py            # 1 and 2 threads
    /tmp/torchenv/bin/python scripts/torch_bench.py --threads 1
    /tmp/torchenv/bin/python scripts/torch_bench.py --linear   # nn.Linear only, as
        # `bench_report -- --layouts` times dense Linear (run that at PHM_NN_NUM_THREADS=1, 2)

Formulations, all f32, with the crate's conventions (A: (n, n, n), S: (n, k/n, d/n),
W = sum_i kron(A_i, S_i) of shape (k, d), Y = X W^T + b):

- linear:    torch.nn.Linear(d, k), the dense layer a user would pick instead;
- compacter: the Compacter-style PHM layer PyTorch users run today: W rebuilt on every call by
             an einsum-batched Kronecker product summed over i, then F.linear;
- factored:  never builds W: one GEMM with the blocks and one batched product with the rules,
             mixing the narrower side (outputs when k <= d, inputs otherwise), as phm-nn's
             factored kernel does. Autograd gives its backward.

Timing (as the bench report): every contender is warmed up once, its sample sized to at
least 25 ms, then 7 samples are taken round-robin across the contenders and the median per
call is reported. A training step is forward + backward with the gradients reset (no
optimizer update) and the input's gradient computed, inference is a forward under
torch.no_grad().
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SAMPLE = 0.025
SAMPLES = 7

# (in, out, batch, n, train): the bench report's --key cases.
KEY_CASES = [
    (1024, 1024, 256, 4, True),
    (1024, 1024, 256, 4, False),
    (1024, 1024, 32, 4, False),
    (1024, 1024, 32, 4, True),
    (4096, 1024, 256, 8, True),
    (1024, 1024, 1, 4, False),
    (4096, 4096, 1, 4, False),
    (256, 256, 32, 4, True),
    (256, 256, 32, 8, True),
]


# (in, out, batch): dense nn.Linear alone, the cases `bench_report -- --layouts` ends with.
LINEAR_CASES = [(1024, 1024, 1), (1024, 1024, 32), (1024, 1024, 256), (4096, 1024, 32)]


def race(contenders):
    """Median seconds per call of each closure, sampled round-robin."""
    iters = []
    for f in contenders:
        start = time.perf_counter()
        f()
        once = max(time.perf_counter() - start, 5e-8)
        iters.append(int(min(max(-(-SAMPLE // once), 1), 1e6)))
    samples = [[] for _ in contenders]
    for _ in range(SAMPLES):
        for i, f in enumerate(contenders):
            start = time.perf_counter()
            for _ in range(iters[i]):
                f()
            samples[i].append((time.perf_counter() - start) / iters[i])
    return [statistics.median(s) for s in samples]


class CompacterPhm(torch.nn.Module):
    """W = sum_i kron(A_i, S_i) by a batched einsum on every call, then F.linear."""

    def __init__(self, d, k, n):
        super().__init__()
        self.n = n
        self.rules = torch.nn.Parameter(torch.randn(n, n, n) / n)
        self.blocks = torch.nn.Parameter(torch.randn(n, k // n, d // n) / d**0.5)
        self.bias = torch.nn.Parameter(torch.zeros(k))

    def forward(self, x):
        n, p, q = self.blocks.shape
        w = torch.einsum("irc,iuv->rucv", self.rules, self.blocks).reshape(n * p, n * q)
        return F.linear(x, w, self.bias)


class FactoredPhm(torch.nn.Module):
    """Never builds W; mixes the narrower side with the rules."""

    def __init__(self, d, k, n):
        super().__init__()
        self.n = n
        self.rules = torch.nn.Parameter(torch.randn(n, n, n) / n)
        self.blocks = torch.nn.Parameter(torch.randn(n, k // n, d // n) / d**0.5)
        self.bias = torch.nn.Parameter(torch.zeros(k))

    def forward(self, x):
        n, p, q = self.blocks.shape
        b = x.shape[0]
        if n * p <= n * q:
            # T[(b, c), (i, u)] = (S_i x_{b,c})_u: one GEMM with the blocks.
            t = x.reshape(b * n, q) @ self.blocks.reshape(n * p, q).t()
            # Y_b = Ã T_b, Ã[r, (c, i)] = A_i[r, c]: one batched product.
            mix = self.rules.permute(1, 2, 0).reshape(n, n * n)
            y = torch.matmul(mix, t.reshape(b, n * n, p))
            return y.reshape(b, n * p) + self.bias
        # Z_b = Â X_b, Â[(r, i), c] = A_i[r, c]; then Y[b, r] = sum_i S_i Z[b, r, i].
        mix = self.rules.permute(1, 0, 2).reshape(n * n, n)
        z = torch.matmul(mix, x.reshape(b, n, q))  # (b, n², q)
        s_cat = self.blocks.permute(0, 2, 1).reshape(n * q, p)  # row (i, v), column u
        y = z.reshape(b * n, n * q) @ s_cat
        return y.reshape(b, n * p) + self.bias


def run_case(d, k, batch, n, train):
    # The input requires its gradient in training, as a hidden layer's does (phm-nn's backward
    # always returns dX); otherwise autograd would skip one of the three GEMMs.
    x = (torch.rand(batch, d) * 2 - 1).requires_grad_(train)
    g = torch.rand(batch, k) * 2 - 1
    layers = [torch.nn.Linear(d, k), CompacterPhm(d, k, n), FactoredPhm(d, k, n)]

    def step(layer):
        for p in layer.parameters():
            p.grad = None
        x.grad = None
        layer(x).backward(g)

    def infer(layer):
        with torch.no_grad():
            layer(x)

    f = step if train else infer
    return race([lambda l=l: f(l) for l in layers])


def linear_table(threads_list):
    """nn.Linear inference and training step (forward + backward, input gradient included)."""
    for threads in threads_list:
        torch.set_num_threads(threads)
        print(f"\nnn.Linear, f32, {threads} thread(s)\n")
        print("| in×out | batch | pass | nn.Linear ms | GFLOP/s |")
        print("|---|---:|---|---:|---:|")
        for d, k, batch in LINEAR_CASES:
            x = (torch.rand(batch, d) * 2 - 1).requires_grad_(True)
            g = torch.rand(batch, k) * 2 - 1
            layer = torch.nn.Linear(d, k)

            def infer():
                with torch.no_grad():
                    layer(x)

            def step():
                for p in layer.parameters():
                    p.grad = None
                x.grad = None
                layer(x).backward(g)

            flops = 2.0 * batch * k * d
            (t,) = race([infer])
            print(f"| {d}×{k} | {batch} | infer | {t * 1e3:.3f} | {flops / t / 1e9:.1f} |")
            (t,) = race([step])
            print(f"| {d}×{k} | {batch} | train | {t * 1e3:.3f} | {3 * flops / t / 1e9:.1f} |",
                  flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--linear", action="store_true", help="nn.Linear cases only")
    args = parser.parse_args()
    torch.set_num_interop_threads(1)
    print(f"PyTorch {torch.__version__} · CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    if args.linear:
        linear_table(args.threads)
        return
    print(
        "\n| in×out | batch | n | pass | threads | nn.Linear ms | Compacter PHM ms | factored PHM ms "
        "| best PHM ms | best PHM/Linear |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for d, k, batch, n, train in KEY_CASES:
            lin, comp, fact = run_case(d, k, batch, n, train)
            best = min(comp, fact)
            print(
                f"| {d}×{k} | {batch} | {n} | {'train' if train else 'infer'} | {threads} "
                f"| {lin * 1e3:.3f} | {comp * 1e3:.3f} | {fact * 1e3:.3f} | {best * 1e3:.3f} "
                f"| {best / lin:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
