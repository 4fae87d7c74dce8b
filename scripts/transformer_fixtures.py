"""PyTorch parity fixture for one pre-norm PHM Transformer block
(tests/data/transformer_block_f64.safetensors, transformer_block_f32.safetensors).
Imported and run by make_fixtures.py.

The block, with torch.nn.functional only, no dropout:

    h = x + attn(LN1(x))          y = h + FFN(LN2(h))

  - LN: F.layer_norm over the last axis (d), eps = 1e-5, random weight and bias;
  - each projection q, k, v, o, fc1, fc2 is a PHM layer: W = sum_i kron(A_i, S_i) with
    rules A (n, n, n), blocks S (n, out/n, in/n), W (out, in), y = F.linear(x, W, bias);
  - attn: u = LN1(x); Q, K, V = q(u), k(u), v(u), (B, T, d) -> heads (B, H, T, dh),
    dh = d/H, head h = columns h*dh .. (h+1)*dh; scores = Q K^T / sqrt(dh); masked (-inf)
    where key j > query i (causal) or key j is padding (pad[b, j] = 1, for every query);
    softmax over keys; O = P V; heads merged back in the same column order; out = o(O);
  - FFN: fc2(gelu(fc1(LN2(h)))), exact (erf) GELU, hidden width f.

Loss L = sum(y * g) with a seeded g; the file holds x, pad (0/1 in the file's dtype), g, y,
dx = dL/dx, every parameter under its name and its gradient under "grad.<name>", and the sizes
(B, T, d, H, f, n, eps) as metadata. Values are drawn from one seeded generator, rounded to 4
decimals in float64 (then cast: f32 and f64 use the same values), scaled so that activations
are O(1). In float64 the block is checked against torch.nn.TransformerEncoderLayer
(norm_first, GELU, dropout 0) holding the same built weights, and its attention against
F.scaled_dot_product_attention with the same boolean mask.
"""

import json
import math
import os
import struct

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")

B, T, D, H, FF, N = 2, 5, 16, 4, 32, 4
EPS = 1e-5
PAD = [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]
SEED = 700

# (name, in, out) of the six PHM projections, in drawing order.
PROJECTIONS = [
    ("attn.q", D, D),
    ("attn.k", D, D),
    ("attn.v", D, D),
    ("attn.o", D, D),
    ("ffn.fc1", D, FF),
    ("ffn.fc2", FF, D),
]


def rounded(gen, shape, dtype, scale=1.0, offset=0.0):
    """offset + scale * U(-1, 1), rounded to 4 decimals in float64, then cast to dtype."""
    t = (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale + offset
    return (torch.round(t * 1e4) / 1e4).to(dtype)


def kron_sum(a, s):
    return sum(torch.kron(a[i], s[i]) for i in range(a.shape[0]))


def draw(dtype):
    gen = torch.Generator().manual_seed(SEED)
    x = rounded(gen, (B, T, D), dtype)
    p = {
        "ln1.weight": rounded(gen, (D,), dtype, 0.5, 1.0),
        "ln1.bias": rounded(gen, (D,), dtype, 0.2),
    }
    for name, fan_in, fan_out in PROJECTIONS:
        if name == "ffn.fc1":
            p["ln2.weight"] = rounded(gen, (D,), dtype, 0.5, 1.0)
            p["ln2.bias"] = rounded(gen, (D,), dtype, 0.2)
        # Var(W) = n Var(A) Var(S) = n (1/3) (s^2/3) = 1/fan_in for s = 3/sqrt(n fan_in).
        p[f"{name}.rules"] = rounded(gen, (N, N, N), dtype)
        p[f"{name}.blocks"] = rounded(gen, (N, fan_out // N, fan_in // N), dtype, 3 / math.sqrt(N * fan_in))
        p[f"{name}.bias"] = rounded(gen, (fan_out,), dtype, 0.1)
    g = rounded(gen, (B, T, D), dtype)
    pad = torch.tensor(PAD, dtype=torch.bool)
    return x, p, g, pad


def attention_mask(pad):
    """(B, 1, T, T) boolean, True where the score is masked: key j > query i, or key j padded."""
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    return causal[None, None, :, :] | pad[:, None, None, :]


def split_heads(t):
    return t.reshape(B, T, H, D // H).transpose(1, 2)  # (B, H, T, dh)


def merge_heads(t):
    return t.transpose(1, 2).reshape(B, T, D)


def block(x, p, pad, weights=None):
    """The block; `weights` (if a dict) receives each projection's built W (retaining grad)."""

    def phm(name, u):
        w = kron_sum(p[f"{name}.rules"], p[f"{name}.blocks"])
        if weights is not None:
            w.retain_grad()
            weights[name] = w
        return F.linear(u, w, p[f"{name}.bias"])

    u = F.layer_norm(x, (D,), p["ln1.weight"], p["ln1.bias"], eps=EPS)
    q, k, v = (split_heads(phm(f"attn.{c}", u)) for c in "qkv")
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)
    scores = scores.masked_fill(attention_mask(pad), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    heads = probs @ v
    h = x + phm("attn.o", merge_heads(heads))
    z = F.layer_norm(h, (D,), p["ln2.weight"], p["ln2.bias"], eps=EPS)
    y = h + phm("ffn.fc2", F.gelu(phm("ffn.fc1", z)))
    return y, (q, k, v, heads)


def check_f64(x, p, g, pad):
    """Compares the block with PyTorch's own layers (float64); prints the largest differences."""
    x1 = x.clone().requires_grad_(True)
    p = {name: t.clone().requires_grad_(True) for name, t in p.items()}
    weights = {}
    y, (q, k, v, heads) = block(x1, p, pad, weights)
    (y * g).sum().backward()

    # Attention alone: SDPA takes True = "may attend".
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=~attention_mask(pad))
    err_sdpa = (ref - heads).abs().max().item()

    # The whole block: nn.TransformerEncoderLayer with the same (built) weights.
    layer = torch.nn.TransformerEncoderLayer(
        D, H, FF, dropout=0.0, activation="gelu", layer_norm_eps=EPS, batch_first=True,
        norm_first=True, dtype=torch.float64,
    )
    layer.train()  # the reference (non-fused) path; dropout is 0
    with torch.no_grad():
        w = {name: t.detach() for name, t in weights.items()}
        layer.self_attn.in_proj_weight.copy_(torch.cat([w["attn.q"], w["attn.k"], w["attn.v"]]))
        layer.self_attn.in_proj_bias.copy_(torch.cat([p[f"attn.{c}.bias"] for c in "qkv"]))
        layer.self_attn.out_proj.weight.copy_(w["attn.o"])
        layer.self_attn.out_proj.bias.copy_(p["attn.o.bias"])
        layer.linear1.weight.copy_(w["ffn.fc1"])
        layer.linear1.bias.copy_(p["ffn.fc1.bias"])
        layer.linear2.weight.copy_(w["ffn.fc2"])
        layer.linear2.bias.copy_(p["ffn.fc2.bias"])
        for i in (1, 2):
            getattr(layer, f"norm{i}").weight.copy_(p[f"ln{i}.weight"])
            getattr(layer, f"norm{i}").bias.copy_(p[f"ln{i}.bias"])
    x2 = x.clone().requires_grad_(True)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    y2 = layer(x2, src_mask=causal, src_key_padding_mask=pad)
    (y2 * g).sum().backward()
    err_y = (y2 - y).abs().max().item()
    err_dx = (x2.grad - x1.grad).abs().max().item()
    in_grad = torch.cat([weights[f"attn.{c}"].grad for c in "qkv"])
    err_dw = max(
        (layer.self_attn.in_proj_weight.grad - in_grad).abs().max().item(),
        (layer.self_attn.out_proj.weight.grad - weights["attn.o"].grad).abs().max().item(),
        (layer.linear1.weight.grad - weights["ffn.fc1"].grad).abs().max().item(),
        (layer.linear2.weight.grad - weights["ffn.fc2"].grad).abs().max().item(),
    )
    print(
        "transformer block (f64) vs PyTorch: attention vs SDPA %.2e, y vs TransformerEncoderLayer "
        "%.2e, dx %.2e, dW %.2e" % (err_sdpa, err_y, err_dx, err_dw)
    )
    for what, err in [("sdpa", err_sdpa), ("y", err_y), ("dx", err_dx), ("dW", err_dw)]:
        assert err < 1e-12, f"{what}: {err}"
    assert torch.isfinite(y).all() and y.abs().max() < 10, "activations should be O(1)"


def write(dtype, suffix):
    x, p, g, pad = draw(dtype)
    if dtype == torch.float64:
        check_f64(x, p, g, pad)
    x = x.clone().requires_grad_(True)
    for t in p.values():
        t.requires_grad_(True)
    y, _ = block(x, p, pad)
    (y * g).sum().backward()
    tensors = {"x": x.detach(), "pad": pad.to(dtype), "g": g, "y": y.detach(), "dx": x.grad}
    for name, t in p.items():
        tensors[name] = t.detach()
        tensors[f"grad.{name}"] = t.grad
    tensors = {key: t.contiguous() for key, t in tensors.items()}
    meta = {"B": str(B), "T": str(T), "d": str(D), "H": str(H), "f": str(FF), "n": str(N), "eps": repr(EPS)}
    path = os.path.join(OUT, f"transformer_block_{suffix}.safetensors")
    save_file(tensors, path, metadata=meta)
    sort_metadata(path)


def sort_metadata(path):
    """Rewrites the header's metadata with sorted keys, in place.

    safetensors writes the metadata map in hash order, which changes from run to run; the
    sorted map has the same length, so only those header bytes change and the file becomes
    byte-for-byte reproducible.
    """
    with open(path, "rb") as f:
        data = bytearray(f.read())
    (size,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + size].decode("utf-8")
    meta = json.loads(header)["__metadata__"]
    start = header.index('"__metadata__":') + len('"__metadata__":')
    end = header.index("}", start) + 1
    old = header[start:end]
    new = json.dumps(dict(sorted(meta.items())), separators=(",", ":"))
    assert json.loads(old) == meta and len(new) == len(old), (old, new)
    data[8 + start : 8 + end] = new.encode("utf-8")
    with open(path, "wb") as f:
        f.write(bytes(data))


def main():
    os.makedirs(OUT, exist_ok=True)
    write(torch.float64, "f64")
    write(torch.float32, "f32")


if __name__ == "__main__":
    main()
