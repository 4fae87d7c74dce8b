#!/usr/bin/env python3
"""PyTorch side of `bench_burn`'s tiny-LM row: one training step (forward, cross-entropy,
backward; no optimizer update) of the same decoder-only Transformer, timed the same way.

The model is the root crate's `examples/tiny_lm` (and `bench_burn`'s): vocabulary 73,
d = 128, 4 heads, 2 pre-norm blocks (h = x + attn(ln1 x), y = h + ffn(ln2 h)), FFN 512 with
exact GELU, causal attention, learned positions, context 64, batch 16, f32. Its six
projections per block are dense (`torch.nn.Linear`) or PHM n = 4 in the two PyTorch
formulations of `torch_bench.py` (Compacter-style einsum, factored); the faster is reported.

    /work/torchenv/bin/python scripts/torch_lm_step.py --threads 1
"""

import argparse

import torch
import torch.nn.functional as F

from torch_bench import CompacterPhm, FactoredPhm, race

VOCAB, D, HEADS, LAYERS, FFN, T, BATCH = 73, 128, 4, 2, 512, 64, 16


def projection(kind, d, k):
    if kind == "dense":
        return torch.nn.Linear(d, k)
    layer = {"compacter": CompacterPhm, "factored": FactoredPhm}[kind](d, k, 4)

    class Rows(torch.nn.Module):
        """The PHM layers of torch_bench take (rows, d): flatten the leading axes."""

        def __init__(self):
            super().__init__()
            self.inner = layer

        def forward(self, x):
            return self.inner(x.reshape(-1, d)).reshape(*x.shape[:-1], k)

    return Rows()


class Block(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (projection(kind, D, D) for _ in range(4))
        self.fc1, self.fc2 = projection(kind, D, FFN), projection(kind, FFN, D)

    def forward(self, x):
        b, t, _ = x.shape
        h = self.ln1(x)

        def heads(z):
            return z.reshape(b, t, HEADS, D // HEADS).transpose(1, 2)

        a = F.scaled_dot_product_attention(
            heads(self.q(h)), heads(self.k(h)), heads(self.v(h)), is_causal=True
        )
        x = x + self.o(a.transpose(1, 2).reshape(b, t, D))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Lm(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.pos = torch.nn.Parameter(torch.randn(T, D) * 0.02)
        self.blocks = torch.nn.ModuleList(Block(kind) for _ in range(LAYERS))
        self.ln = torch.nn.LayerNorm(D)
        self.head = torch.nn.Linear(D, VOCAB)

    def forward(self, ids):
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    torch.manual_seed(0)
    ids = (torch.arange(BATCH)[:, None] * 13 + torch.arange(T + 1)[None, :] * 7) % VOCAB
    x, y = ids[:, :T], ids[:, 1:]
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\nPyTorch {torch.__version__}, {threads} thread(s): tiny LM training step, ms")
        models = {kind: Lm(kind) for kind in ("dense", "compacter", "factored")}

        def step(model):
            for p in model.parameters():
                p.grad = None
            logits = model(x)
            F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)).backward()

        times = race([lambda m=m: step(m) for m in models.values()])
        for kind, t in zip(models, times):
            print(f"| {kind:<10} | {t * 1e3:8.2f} |")
        print(f"| PHM n = 4 best | {min(times[1:]) * 1e3:8.2f} |")


if __name__ == "__main__":
    main()
