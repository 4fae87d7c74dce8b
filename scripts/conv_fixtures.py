#!/usr/bin/env python3
"""PyTorch parity fixtures for the convolutions (tests/data/conv1d.json, conv2d.json).
Imported and run by make_fixtures.py. Every
case draws inputs from a seeded generator, rounds them to 4 decimals (short JSON, and the Rust
side reads exactly the values PyTorch used), then computes in float64:

  - the PHM (PHC) kernel K = sum_i kron(A_i, F_i) over the first two axes (the formula of
    Grassucci et al.; F_i: (out/n, in/n, *k)), built with torch.kron;
  - y = F.conv1d / F.conv2d(x, K, bias, stride, padding, dilation);
  - for the loss L = sum(y * g) with a seeded g: dL/dx, dL/dA, dL/dF, dL/dbias and dL/dK by
    autograd (dL/dK is the dense convolution's weight gradient for the same kernel).

Only PyTorch and the standard library are needed (no NumPy).
"""

import json
import os

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")


def rounded(gen, *shape):
    """Uniform values in [-1, 1), rounded to 4 decimals."""
    t = torch.rand(*shape, generator=gen) * 2 - 1
    return torch.round(t * 1e4) / 1e4


def tensor_json(t):
    t = t.detach().contiguous()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def build_kernel(a, f):
    """K = sum_i kron(A_i, F_i), the Kronecker product over the two channel axes."""
    n = a.shape[0]
    out_n, in_n = f.shape[1], f.shape[2]
    spatial = f.shape[3:]
    k = torch.zeros((n * out_n, n * in_n) + tuple(spatial))
    for i in range(n):
        # kron over the channel axes only: (n, n, 1, ...) x (out/n, in/n, *k)
        ai = a[i].reshape((n, n) + (1,) * len(spatial))
        k = k + torch.kron(ai, f[i])
    return k


def case(seed, rank, batch, c_in, c_out, n, kernel, spatial, stride, padding, dilation, bias):
    gen = torch.Generator().manual_seed(seed)
    x = rounded(gen, batch, c_in, *spatial).requires_grad_(True)
    a = rounded(gen, n, n, n).requires_grad_(True)
    f = rounded(gen, n, c_out // n, c_in // n, *kernel).requires_grad_(True)
    b = rounded(gen, c_out).requires_grad_(True) if bias else None
    k = build_kernel(a, f)
    k.retain_grad()
    conv = F.conv1d if rank == 1 else F.conv2d
    y = conv(x, k, b, stride=stride, padding=padding, dilation=dilation)
    g = rounded(gen, *y.shape)
    (y * g).sum().backward()
    out = {
        "name": f"conv{rank}d_seed{seed}",
        "rank": rank,
        "n": n,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "x": tensor_json(x),
        "rules": tensor_json(a),
        "kernels": tensor_json(f),
        "weight": tensor_json(k),
        "y": tensor_json(y),
        "grad_output": tensor_json(g),
        "dx": tensor_json(x.grad),
        "drules": tensor_json(a.grad),
        "dkernels": tensor_json(f.grad),
        "dweight": tensor_json(k.grad),
    }
    if bias:
        out["bias"] = tensor_json(b)
        out["dbias"] = tensor_json(b.grad)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    conv2d = [
        # seed, rank, B, C_in, C_out, n, kernel, (H, W), stride, padding, dilation, bias
        case(1, 2, 2, 4, 4, 2, (3, 3), (5, 5), [1, 1], [0, 0], [1, 1], True),
        case(2, 2, 2, 4, 8, 4, (3, 3), (5, 6), [2, 2], [1, 1], [1, 1], True),
        case(3, 2, 1, 6, 4, 2, (2, 3), (6, 5), [1, 2], [2, 1], [2, 1], False),
        case(4, 2, 2, 3, 6, 3, (3, 2), (5, 4), [2, 1], [0, 1], [1, 2], True),
        case(5, 2, 1, 2, 3, 1, (3, 3), (4, 4), [1, 1], [1, 1], [1, 1], True),
    ]
    conv1d = [
        case(11, 1, 2, 4, 4, 2, (3,), (9,), [1], [0], [1], True),
        case(12, 1, 2, 4, 8, 4, (5,), (11,), [2], [2], [1], True),
        case(13, 1, 1, 6, 6, 3, (3,), (12,), [3], [1], [2], False),
    ]
    for name, cases in [("conv2d", conv2d), ("conv1d", conv1d)]:
        path = os.path.join(OUT, f"{name}.json")
        with open(path, "w") as fh:
            json.dump({"torch": torch.__version__, "cases": cases}, fh, separators=(",", ":"))
        print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
