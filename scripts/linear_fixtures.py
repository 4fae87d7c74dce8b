"""PyTorch parity fixtures for the linear family, the losses and other libraries' layouts
(tests/data/linear_f32.safetensors, linear_f64.safetensors, layouts.safetensors,
dense_mlp.safetensors). Imported and run by make_fixtures.py.

Every case draws its inputs from a seeded generator, rounded to 4 decimals, and computes with
the plain formulas and autograd, in the file's float type:

  - PHM: W = sum_i kron(A_i, S_i) (torch.kron), y = x W^T + b (F.linear), for the loss
    L = sum(y * g) with a seeded g: dL/dx, dL/dA, dL/dS, dL/db;
  - dense Linear the same with a plain weight;
  - a Sequential PHM -> ReLU -> Linear -> Tanh -> PHM -> GELU -> Linear -> Sigmoid;
  - softmax cross-entropy (F.cross_entropy, mean) and its gradient;
  - layouts written with those libraries' formulas (coded here, not copied): Compacter /
    AdapterHub PHMLayer (y = x H + b, H = sum kron(A'_i, W'_i), W'_i (in/n, out/n), optionally
    W' = W_left @ W_right and rule = rule_left @ rule_right), HyperNets PHMLinear
    (y = F.linear(x, sum kron(A_i, F_i), bias));
  - a dense MLP state dict saved with safetensors.torch.save_file, for the compress tool.
"""

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")


def rounded(gen, shape, dtype):
    t = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1
    return (torch.round(t * 1e4) / 1e4).to(dtype)


def kron_sum(a, s):
    return sum(torch.kron(a[i], s[i]) for i in range(a.shape[0]))


# (name, n, in, out, input shape prefix, bias)
PHM_CASES = [
    ("phm_n1", 1, 5, 3, (4,), True),
    ("phm_n2_b1", 2, 6, 4, (1,), True),
    ("phm_n3_nobias", 3, 9, 6, (5,), False),
    ("phm_n4_wide", 4, 8, 12, (3,), True),
    ("phm_n8", 8, 16, 8, (2,), True),
    ("phm_n_eq_in", 4, 4, 8, (3,), True),
    ("phm_n_eq_out", 2, 6, 2, (3,), False),
    ("phm_rank3", 4, 8, 4, (2, 3), True),
]


def phm_case(tensors, meta, name, n, d, k, lead, bias, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = rounded(gen, lead + (d,), dtype).requires_grad_(True)
    a = rounded(gen, (n, n, n), dtype).requires_grad_(True)
    s = rounded(gen, (n, k // n, d // n), dtype).requires_grad_(True)
    b = rounded(gen, (k,), dtype).requires_grad_(True) if bias else None
    y = F.linear(x, kron_sum(a, s), b)
    g = rounded(gen, tuple(y.shape), dtype)
    (y * g).sum().backward()
    parts = {"x": x, "A": a, "S": s, "y": y, "g": g, "dx": x.grad, "dA": a.grad, "dS": s.grad}
    if bias:
        parts.update({"b": b, "db": b.grad})
    for key, t in parts.items():
        tensors[f"{name}.{key}"] = t.detach().contiguous()
    meta[name] = json.dumps({"kind": "phm", "n": n, "in": d, "out": k, "bias": bias})


def linear_case(tensors, meta, name, d, k, lead, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = rounded(gen, lead + (d,), dtype).requires_grad_(True)
    w = rounded(gen, (k, d), dtype).requires_grad_(True)
    b = rounded(gen, (k,), dtype).requires_grad_(True)
    y = F.linear(x, w, b)
    g = rounded(gen, tuple(y.shape), dtype)
    (y * g).sum().backward()
    for key, t in {"x": x, "W": w, "b": b, "y": y, "g": g, "dx": x.grad, "dW": w.grad, "db": b.grad}.items():
        tensors[f"{name}.{key}"] = t.detach().contiguous()
    meta[name] = json.dumps({"kind": "linear", "in": d, "out": k})


def sequential_case(tensors, meta, dtype, seed):
    """PHM(8->8, n=2) ReLU Linear(8->6) Tanh PHM(6->4, n=2) GELU Linear(4->3) Sigmoid."""
    gen = torch.Generator().manual_seed(seed)
    x = rounded(gen, (5, 8), dtype).requires_grad_(True)
    p = {
        "0.rules": rounded(gen, (2, 2, 2), dtype),
        "0.blocks": rounded(gen, (2, 4, 4), dtype),
        "0.bias": rounded(gen, (8,), dtype),
        "2.weight": rounded(gen, (6, 8), dtype),
        "2.bias": rounded(gen, (6,), dtype),
        "4.rules": rounded(gen, (2, 2, 2), dtype),
        "4.blocks": rounded(gen, (2, 2, 3), dtype),
        "4.bias": rounded(gen, (4,), dtype),
        "6.weight": rounded(gen, (3, 4), dtype),
        "6.bias": rounded(gen, (3,), dtype),
    }
    for t in p.values():
        t.requires_grad_(True)
    h = torch.relu(F.linear(x, kron_sum(p["0.rules"], p["0.blocks"]), p["0.bias"]))
    h = torch.tanh(F.linear(h, p["2.weight"], p["2.bias"]))
    h = F.gelu(F.linear(h, kron_sum(p["4.rules"], p["4.blocks"]), p["4.bias"]))
    y = torch.sigmoid(F.linear(h, p["6.weight"], p["6.bias"]))
    g = rounded(gen, tuple(y.shape), dtype)
    (y * g).sum().backward()
    tensors["seq.x"], tensors["seq.y"], tensors["seq.g"] = x.detach(), y.detach(), g
    tensors["seq.dx"] = x.grad.detach()
    for key, t in p.items():
        tensors[f"seq.p.{key}"] = t.detach().contiguous()
        tensors[f"seq.grad.{key}"] = t.grad.detach().contiguous()
    meta["seq"] = json.dumps({"kind": "sequential"})


def cross_entropy_case(tensors, meta, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = (rounded(gen, (6, 5), dtype) * 8).requires_grad_(True)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    tensors["ce.logits"] = logits.detach()
    tensors["ce.labels"] = labels.to(dtype)
    tensors["ce.loss"] = loss.detach().reshape(1)
    tensors["ce.dlogits"] = logits.grad.detach()
    meta["ce"] = json.dumps({"kind": "cross_entropy"})


def linear_family(dtype, suffix):
    tensors, meta = {}, {}
    for i, (name, n, d, k, lead, bias) in enumerate(PHM_CASES):
        phm_case(tensors, meta, name, n, d, k, lead, bias, dtype, 100 + i)
    linear_case(tensors, meta, "linear", 5, 3, (4,), dtype, 200)
    linear_case(tensors, meta, "linear_rank3", 4, 6, (2, 3), dtype, 201)
    sequential_case(tensors, meta, dtype, 300)
    cross_entropy_case(tensors, meta, dtype, 400)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    # No metadata: the case parameters follow from the tensor shapes, and the file stays
    # byte-for-byte reproducible.
    save_file(tensors, os.path.join(OUT, f"linear_{suffix}.safetensors"))


def layouts():
    """State dicts in other libraries' layouts, with an input and PyTorch's output."""
    dtype = torch.float64
    gen = torch.Generator().manual_seed(500)
    n, d, k, r = 4, 8, 12, 2
    t = {}
    x = rounded(gen, (3, d), dtype)
    t["x"] = x
    # Compacter / AdapterHub PHMLayer: y = x H + b, H = sum kron(rule_i, W_i), W_i (in/n, out/n).
    rule = rounded(gen, (n, n, n), dtype)
    w = rounded(gen, (n, d // n, k // n), dtype)
    b = rounded(gen, (k,), dtype)
    t["compacter.phm_rule"], t["compacter.W"], t["compacter.b"] = rule, w, b
    t["compacter.y"] = x @ kron_sum(rule, w) + b
    # Low-rank: W_i = W_left_i @ W_right_i; factorized rule: rule_i = rule_left_i @ rule_right_i.
    w_left = rounded(gen, (n, d // n, r), dtype)
    w_right = rounded(gen, (n, r, k // n), dtype)
    rule_left = rounded(gen, (n, n, 1), dtype)
    rule_right = rounded(gen, (n, 1, n), dtype)
    t["compacter_lr.phm_rule_left"], t["compacter_lr.phm_rule_right"] = rule_left, rule_right
    t["compacter_lr.W_left"], t["compacter_lr.W_right"], t["compacter_lr.b"] = w_left, w_right, b.clone()
    t["compacter_lr.y"] = x @ kron_sum(rule_left @ rule_right, w_left @ w_right) + b
    # HyperNets PHMLinear: y = F.linear(x, sum kron(A_i, F_i), bias), F_i (out/n, in/n).
    a = rounded(gen, (n, n, n), dtype)
    f = rounded(gen, (n, k // n, d // n), dtype)
    t["hypernets.A"], t["hypernets.F"], t["hypernets.bias"] = a, f, b.clone()
    t["hypernets.y"] = F.linear(x, kron_sum(a, f), b)
    save_file({key: v.contiguous() for key, v in t.items()}, os.path.join(OUT, "layouts.safetensors"))


def dense_mlp():
    """A dense MLP's state dict as PyTorch saves it: nn.Sequential(Linear, ReLU, Linear)."""
    torch.manual_seed(600)
    f32 = torch.float32  # PyTorch's default, whatever another module set
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 8, dtype=f32), torch.nn.ReLU(), torch.nn.Linear(8, 4, dtype=f32)
    )
    state = {key: v.detach().contiguous() for key, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, "dense_mlp.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    linear_family(torch.float64, "f64")
    linear_family(torch.float32, "f32")
    layouts()
    dense_mlp()


if __name__ == "__main__":
    main()
