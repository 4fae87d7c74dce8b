"""PyTorch parity fixtures for the recurrent layers (tests/data/recurrent_*.safetensors).
Imported and run by make_fixtures.py.

Each file holds one case run by torch.nn.LSTM / torch.nn.GRU (float64, batch_first, 2 layers,
bidirectional) over a batch of variable-length sequences packed with pack_padded_sequence
(lengths not sorted, enforce_sorted=False), from a given initial state:

  - recurrent_lstm, recurrent_gru: dense weights, PyTorch's own parameters;
  - recurrent_phm_lstm, recurrent_phm_gru: the PHM-LSTM / PHM-GRU, every projection built as
    W = sum_i kron(A_i, S_i) (rules A (n, n, n), blocks S (n, G*h/n, in/n)) and handed to
    nn.LSTM / nn.GRU through torch.func.functional_call, so that autograd reaches A, S and the
    biases. phm-nn reads a PHM projection's G*h outputs component-major (row r*G*m + g*m + j
    is component r of unit j of gate g, m = h/n); PyTorch's gate-major row g*h + r*m + j is
    that row, so W and the bias are permuted accordingly before PyTorch sees them.

Loss L = sum(y * g) + sum(h_n * gh) (+ sum(c_n * gc)), y the padded outputs (zero past each
sequence's end, as pad_packed_sequence gives). The file holds x, lengths, h0 (c0), g, gh (gc),
y, h_n (c_n), dx, dh0 (dc0), every parameter under its phm-nn path (l0.ih.weight, l0.hh.bias,
l0_reverse.ih.rules, ...) and its gradient under "grad.<path>", and the sizes as metadata.
Values are drawn from one seeded generator and rounded to 4 decimals.
"""

import os

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from safetensors.torch import save_file

from transformer_fixtures import rounded, sort_metadata

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")

B, T, D, H, LAYERS = 3, 5, 4, 4, 2
LENGTHS = [3, 5, 1]
N = 2
SEED = 900


def kron_sum(a, s):
    return sum(torch.kron(a[i], s[i]) for i in range(a.shape[0]))


def gate_major(gates, n):
    """Row permutation taking phm-nn's component-major rows to PyTorch's gate-major rows."""
    m = H // n
    return [r * gates * m + g * m + j for g in range(gates) for r in range(n) for j in range(m)]


def case(cell, phm, seed):
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    gates = 4 if cell == "lstm" else 3
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(
        D, H, num_layers=LAYERS, bidirectional=True, batch_first=True, dtype=dt
    )
    x = rounded(gen, (B, T, D), dt)
    h0 = rounded(gen, (2 * LAYERS, B, H), dt, 0.5)
    c0 = rounded(gen, (2 * LAYERS, B, H), dt, 0.5) if cell == "lstm" else None
    # Our parameters, by phm-nn path, and how to build PyTorch's from them.
    ours = {}
    for layer in range(LAYERS):
        for rev in (False, True):
            ours_prefix = f"l{layer}" + ("_reverse" if rev else "")
            torch_suffix = f"_l{layer}" + ("_reverse" if rev else "")
            fan_in = D if layer == 0 else 2 * H
            for proj, width in (("ih", fan_in), ("hh", H)):
                if phm:
                    ours[f"{ours_prefix}.{proj}.rules"] = rounded(gen, (N, N, N), dt)
                    ours[f"{ours_prefix}.{proj}.blocks"] = rounded(
                        gen, (N, gates * H // N, width // N), dt, 1.5 / (N * width) ** 0.5
                    )
                else:
                    ours[f"{ours_prefix}.{proj}.weight"] = rounded(
                        gen, (gates * H, width), dt, 1.5 / width**0.5
                    )
                ours[f"{ours_prefix}.{proj}.bias"] = rounded(gen, (gates * H,), dt, 0.3)
    g = rounded(gen, (B, T, 2 * H), dt)
    gh = rounded(gen, (2 * LAYERS, B, H), dt)
    gc = rounded(gen, (2 * LAYERS, B, H), dt) if cell == "lstm" else None

    x = x.clone().requires_grad_(True)
    h0 = h0.clone().requires_grad_(True)
    if c0 is not None:
        c0 = c0.clone().requires_grad_(True)
    for t in ours.values():
        t.requires_grad_(True)

    def torch_params():
        out = {}
        perm = gate_major(gates, N) if phm else list(range(gates * H))
        for layer in range(LAYERS):
            for rev in (False, True):
                ours_prefix = f"l{layer}" + ("_reverse" if rev else "")
                torch_suffix = f"_l{layer}" + ("_reverse" if rev else "")
                for proj in ("ih", "hh"):
                    key = f"{ours_prefix}.{proj}"
                    if phm:
                        w = kron_sum(ours[f"{key}.rules"], ours[f"{key}.blocks"])
                    else:
                        w = ours[f"{key}.weight"]
                    out[f"weight_{proj}{torch_suffix}"] = w[perm]
                    out[f"bias_{proj}{torch_suffix}"] = ours[f"{key}.bias"][perm]
        return out

    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    state = (h0, c0) if cell == "lstm" else h0
    out, final = torch.func.functional_call(module, torch_params(), (packed, state))
    y, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    h_n = final[0] if cell == "lstm" else final
    loss = (y * g).sum() + (h_n * gh).sum()
    if cell == "lstm":
        c_n = final[1]
        loss = loss + (c_n * gc).sum()
    loss.backward()

    # Sanity: the packed run equals running each sequence alone at its length (PyTorch only).
    with torch.no_grad():
        for b, length in enumerate(LENGTHS):
            sb = (h0[:, b : b + 1], c0[:, b : b + 1]) if cell == "lstm" else h0[:, b : b + 1]
            yb, fb = torch.func.functional_call(module, torch_params(), (x[b : b + 1, :length], sb))
            assert (yb - y[b : b + 1, :length]).abs().max() < 1e-12
            hb = fb[0] if cell == "lstm" else fb
            assert (hb - h_n[:, b : b + 1]).abs().max() < 1e-12
            assert y[b, length:].abs().max() == 0 if length < T else True

    tensors = {
        "x": x.detach(),
        "lengths": torch.tensor(LENGTHS, dtype=dt),
        "h0": h0.detach(),
        "g": g,
        "gh": gh,
        "y": y.detach(),
        "h_n": h_n.detach(),
        "dx": x.grad,
        "dh0": h0.grad,
    }
    if cell == "lstm":
        tensors.update({"c0": c0.detach(), "gc": gc, "c_n": c_n.detach(), "dc0": c0.grad})
    for name, t in ours.items():
        tensors[name] = t.detach()
        tensors[f"grad.{name}"] = t.grad
    tensors = {k: t.contiguous() for k, t in tensors.items()}
    meta = {
        "cell": cell,
        "n": str(N if phm else 1),
        "input": str(D),
        "hidden": str(H),
        "layers": str(LAYERS),
        "bidirectional": "true",
    }
    name = f"recurrent_{'phm_' if phm else ''}{cell}.safetensors"
    path = os.path.join(OUT, name)
    save_file(tensors, path, metadata=meta)
    sort_metadata(path)
    print(f"{name}: |y| max {y.abs().max().item():.3f}, |dx| max {x.grad.abs().max().item():.3f}")


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (cell, phm) in enumerate([("lstm", False), ("gru", False), ("lstm", True), ("gru", True)]):
        case(cell, phm, SEED + i)


if __name__ == "__main__":
    main()
