#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures the Rust tests read (tests/data/).

Run with a Python that has PyTorch (CPU is enough), safetensors and NumPy (which
safetensors.torch needs), from anywhere:

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch safetensors numpy
    /tmp/torchenv/bin/python scripts/make_fixtures.py

CI has no Python: the fixtures are committed, and this script is how they were made; running
it again reproduces them byte for byte.

  - linear_fixtures: the linear family, a Sequential with activations, softmax cross-entropy
    (f32 and f64), other libraries' PHM layouts, a dense MLP state dict (safetensors files);
  - conv_fixtures: 1-D and 2-D PHM convolutions (JSON files);
  - transformer_fixtures: one pre-norm PHM Transformer block (causal and key-padding masks,
    GELU FFN) with every parameter's gradient, f32 and f64 (safetensors files), checked
    against torch.nn.TransformerEncoderLayer in f64;
  - recurrent_fixtures: nn.LSTM and nn.GRU (2 layers, bidirectional, variable lengths through
    pack_padded_sequence, initial states) with dense weights and with PHM-built weights (the
    PHM-LSTM / PHM-GRU), every gradient, f64 (safetensors files).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import linear_fixtures  # noqa: E402
import conv_fixtures  # noqa: E402
import transformer_fixtures  # noqa: E402
import recurrent_fixtures  # noqa: E402


def main():
    linear_fixtures.main()
    conv_fixtures.main()
    transformer_fixtures.main()
    recurrent_fixtures.main()


if __name__ == "__main__":
    main()
