#!/usr/bin/env python3
"""PyTorch side of `cargo run --release --example bench_report -- --models`: the same whole
models, timed the same way, printed with the same table columns (paste the two side by side).

    /work/torchenv/bin/python scripts/torch_models.py              # 1 and 2 threads
    /work/torchenv/bin/python scripts/torch_models.py --threads 1

Models, all f32 (the bench report's, with phm-nn's conventions):

- the tiny_lm Transformer (`examples/tiny_lm.rs`; the model of `torch_lm_step.py`): vocabulary
  73, d = 128, 4 heads, 2 pre-norm blocks, FFN 512 exact GELU, context 64, batch 16; dense, or
  PHM n = 4 (learned rules) in `torch_bench.py`'s two formulations (Compacter-style einsum,
  factored). Training step: gradients reset, forward, cross-entropy, backward,
  clip_grad_norm_(1.0), AdamW (lr 3e-3, weight decay 0.01). Forward: under no_grad.
- the digits CNN (`examples/digits_cnn.rs`): conv 3x3 -> 16 (padding 1), ReLU, max pool 2x2,
  conv 3x3 16 -> 32, ReLU, global average pool, linear 32 -> 10, 8x8 images, batch 32; PHC
  n = 4 replaces both convolutions and sees the image on 4 channels. Training step with Adam
  (lr 3e-3).
- the bench conv layer (`examples/bench_conv.rs`): 3x3, 64 -> 64, padding 1, 32x32, batch 32,
  nn.Conv2d or a PHC layer n = 4. Forward, forward with the PHC kernel K built once (then a plain
  conv2d, as phm-nn's `cache_weight`), training step = forward + backward with the input's
  gradient (as a hidden layer's), no optimizer (as bench_conv).

For every PHM/PHC model both formulations are timed and the faster (lower median at the first
thread count) fills the table; both are listed after it. PHC formulations: Compacter-style
(K = sum_i kron(A_i, F_i) by an einsum on every call, then conv2d) and factored (one conv2d of
the input's n channel groups with the stacked F_i, then the rules mix the groups).

Timing (as the bench report): 3 rounds; each runs every row (every formulation) at every
thread count in turn, 2 warm-up calls then 5 calls timed one by one; median and minimum over
the 15 timed calls of each.
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import torch_lm_step
from torch_bench import CompacterPhm, FactoredPhm

WARMUP, ROUNDS, REPS = 2, 3, 5


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_average():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def time_models(threads, runs):
    """(median, min) seconds of one call of each run at each thread count: [run][thread].
    Each round runs every run at every thread count in turn, so that the load of a shared
    machine, drifting over the run, hits them alike."""
    samples = [[[] for _ in threads] for _ in runs]
    for round_ in range(1, ROUNDS + 1):
        print(f"models: round {round_} of {ROUNDS}", file=sys.stderr, flush=True)
        for run, run_samples in zip(runs, samples):
            for t, thread_samples in zip(threads, run_samples):
                torch.set_num_threads(t)
                for _ in range(WARMUP):
                    run()
                for _ in range(REPS):
                    start = time.perf_counter()
                    run()
                    thread_samples.append(time.perf_counter() - start)
    return [[(statistics.median(s), min(s)) for s in run] for run in samples]


def per_second(items, unit, seconds):
    rate = items / seconds
    return f"{rate / 1e3:.1f} k {unit}/s" if rate >= 1e3 else f"{rate:.1f} {unit}/s"


def params(model):
    return sum(p.numel() for p in model.parameters())


# ---- the tiny_lm Transformer (torch_lm_step.py's model) ----


def lm_rows(kind):
    """(name, rows) for one formulation: rows are (pass, batch, params, items, unit, run)."""
    torch.manual_seed(7)
    m = torch_lm_step
    model = m.Lm(kind)
    ids = (torch.arange(m.BATCH)[:, None] * 13 + torch.arange(m.T + 1)[None, :] * 7) % m.VOCAB
    x, y = ids[:, : m.T], ids[:, 1:].reshape(-1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, eps=1e-8)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, m.VOCAB), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    frozen = m.Lm(kind)

    def forward():
        with torch.no_grad():
            frozen(x)

    batch, tokens = f"{m.BATCH}×{m.T}", m.BATCH * m.T
    return [
        ("train step", batch, params(model), tokens, "tok", step),
        ("forward", batch, params(frozen), tokens, "tok", forward),
    ]


# ---- PHM convolutions ----


class CompacterPhc(torch.nn.Module):
    """K = sum_i kron(A_i, F_i) by an einsum on every call, then conv2d."""

    def __init__(self, c_in, c_out, k, n, padding):
        super().__init__()
        self.padding = padding
        self.rules = torch.nn.Parameter(torch.randn(n, n, n) / n)
        self.filters = torch.nn.Parameter(
            torch.randn(n, c_out // n, c_in // n, k, k) / (c_in * k * k) ** 0.5
        )
        self.bias = torch.nn.Parameter(torch.zeros(c_out))

    def kernel(self):
        n, p, q, kh, kw = self.filters.shape
        return torch.einsum("irc,iuvhw->rucvhw", self.rules, self.filters).reshape(
            n * p, n * q, kh, kw
        )

    def forward(self, x):
        return F.conv2d(x, self.kernel(), self.bias, padding=self.padding)


class FactoredPhc(CompacterPhc):
    """Never builds K: Z[b, c, i] = F_i * x_c (one conv2d over the n input groups with the
    stacked F_i), then y[b, r] = sum_{c, i} A_i[r, c] Z[b, c, i]."""

    def forward(self, x):
        n, p, q, kh, kw = self.filters.shape
        b, _, h, w = x.shape
        z = F.conv2d(
            x.reshape(b * n, q, h, w), self.filters.reshape(n * p, q, kh, kw), padding=self.padding
        )
        z = z.reshape(b, n, n, p, *z.shape[-2:])
        y = torch.einsum("irc,bciuhw->bruhw", self.rules, z)
        return y.reshape(b, n * p, *z.shape[-2:]) + self.bias[:, None, None]


def conv(kind, c_in, c_out, k, n, padding):
    if kind == "dense":
        return torch.nn.Conv2d(c_in, c_out, k, padding=padding)
    return {"compacter": CompacterPhc, "factored": FactoredPhc}[kind](c_in, c_out, k, n, padding)


# ---- the digits CNN ----


def cnn_rows(kind, n=4):
    torch.manual_seed(1)
    channels = 1 if kind == "dense" else n

    def build():
        return torch.nn.Sequential(
            conv(kind, channels, 16, 3, n, 1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2, 2),
            conv(kind, 16, 32, 3, n, 1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(32, 10),
        )

    model, frozen = build(), build()
    x = torch.rand(32, channels, 8, 8)
    y = torch.arange(32) % 10
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def forward():
        with torch.no_grad():
            frozen(x)

    return [
        ("train step", "32", params(model), 32, "img", step),
        ("forward", "32", params(frozen), 32, "img", forward),
    ]


# ---- the bench conv layer ----


def conv_rows(kind, n=4):
    torch.manual_seed(0)
    batch, size, c = 32, 32, 64
    layer = conv(kind, c, c, 3, n, 1)
    x = torch.rand(batch, c, size, size) * 2 - 1
    g = torch.rand(batch, c, size, size) * 2 - 1
    xg = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            layer(x)

    def step():
        for p in layer.parameters():
            p.grad = None
        xg.grad = None
        layer(xg).backward(g)

    rows = [("forward", str(batch), params(layer), batch, "img", forward)]
    if kind == "compacter":
        # The same plain conv2d for either formulation once K is built: timed once.
        with torch.no_grad():
            k_cached = layer.kernel().clone()

        def cached():
            with torch.no_grad():
                F.conv2d(x, k_cached, layer.bias, padding=1)

        rows.append(("forward, K cached", str(batch), params(layer), batch, "img", cached))
    rows.append(("train step", str(batch), params(layer), batch, "img", step))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    threads = args.threads
    torch.set_num_interop_threads(1)
    print(
        f"CPU: {cpu_model()} · PyTorch {torch.__version__}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()} · threads: {threads} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})\n"
    )
    print(
        f"Whole models, f32; thread counts {threads}; {ROUNDS} rounds, each running every row "
        f"at every thread count in turn ({WARMUP} warm-up + {REPS} timed calls); median and min "
        f"of the {ROUNDS * REPS} timed calls; load average at start {load_average()}\n"
    )
    header, rule = "| model | pass | batch | params |", "|---|---|---:|---:|"
    for t in threads:
        s = "" if t == 1 else "s"
        header += f" {t} thread{s} median ms | {t} thread{s} min ms | {t} thread{s} throughput |"
        rule += "---:|---:|---:|"
    if len(threads) == 2:
        header += f" speed-up {threads[0]}→{threads[1]} |"
        rule += "---:|"
    print(header)
    print(rule, flush=True)

    def line(name, row, times):
        pass_, batch, n_params, items, unit, _ = row
        out = f"| {name} | {pass_.split(',')[0]} | {batch} | {n_params} |"
        for median, low in times:
            out += f" {median * 1e3:.2f} | {low * 1e3:.2f} | {per_second(items, unit, median)} |"
        if len(times) == 2:
            out += f" {times[0][0] / times[1][0]:.2f}× |"
        return out

    conv_name = "conv 3×3 64→64 32×32"
    models = [
        ("tiny_lm dense", {"nn.Linear": lm_rows("dense")}),
        ("tiny_lm PHM n=4", {f: lm_rows(f) for f in ("compacter", "factored")}),
        ("digits CNN dense", {"nn.Conv2d": cnn_rows("dense")}),
        ("digits CNN PHC n=4", {f: cnn_rows(f) for f in ("compacter", "factored")}),
        (f"{conv_name} Conv2d", {"nn.Conv2d": conv_rows("dense")}),
        (f"{conv_name} PhmConv2d n=4", {f: conv_rows(f) for f in ("compacter", "factored")}),
    ]
    # Every (model, pass, formulation) timed in the same rounds.
    entries = []
    for name, formulations in models:
        for pass_ in (row[0] for row in next(iter(formulations.values()))):
            # The formulations that have this pass (K cached: one plain conv2d for both).
            having = {f: r for f, rs in formulations.items() for r in rs if r[0] == pass_}
            entries.append((name, pass_, having))
    runs = [row[5] for _, _, having in entries for row in having.values()]
    times = iter(time_models(threads, runs))
    others = []
    for name, pass_, having in entries:
        timed = {f: next(times) for f in having}
        best = min(timed, key=lambda f: timed[f][0][0])
        row = having[best]
        label = name + (", K cached" if "K cached" in pass_ else "")
        if len(having) > 1:
            label += f" ({best})"
            for f, t in timed.items():
                medians = " / ".join(f"{m * 1e3:.2f}" for m, _ in t)
                others.append(f"{name}, {pass_}, {f}: {medians} ms")
        print(line(label, row, timed[best]), flush=True)
    print("\nPHM/PHC formulations, median ms at threads " + " / ".join(map(str, threads)) + ":")
    for o in others:
        print(f"- {o}")
    print(f"\nload average at end {load_average()}")


if __name__ == "__main__":
    main()
