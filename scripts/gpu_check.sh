#!/usr/bin/env bash
# What a maintainer with a CUDA GPU runs: phm-burn's parity tests and examples on the GPU, with
# the same examples on the CPU backend beside them for throughput.
#
#   scripts/gpu_check.sh            # CUDA device 0 against the CPU (flex) backend
#   STEPS=2000 scripts/gpu_check.sh # longer runs
#
# Needs the CUDA driver and toolkit (nvcc not required: cubecl compiles kernels at run time)
# and network access on the first build: burn 0.22's `cuda` feature depends on cubecl-llvm,
# whose build script downloads an LLVM toolchain (tracel-llvm-bundler).
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS="${STEPS:-300}"
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || {
    echo "no NVIDIA GPU visible (nvidia-smi failed)" >&2
    exit 1
}
grep -m1 'model name' /proc/cpuinfo || true
echo "cores: $(nproc)   load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== build (release, cuda + flex)"
cargo build --release -p phm-burn --features cuda --examples --tests

# burn picks its device from BURN_DEVICE (cuda, flex, ...); the tests use Device::default().
echo "== parity tests on the GPU (f64; tolerances are the CPU's: a failure here is news)"
BURN_DEVICE=cuda cargo test --release -p phm-burn --features cuda -- --test-threads=1

echo "== examples: CPU (flex) then CUDA"
for ex in burn_digits_cnn burn_char_lm; do
    for dev in flex cuda; do
        echo "-- $ex on $dev"
        BURN_DEVICE="$dev" cargo run --release -q -p phm-burn --features cuda --example "$ex" -- \
            --steps "$STEPS" --out "target/gpu_check_${ex}_${dev}.svg" | tail -n 12
    done
done
echo "== done: compare the throughput lines above (CPU vs CUDA)"
