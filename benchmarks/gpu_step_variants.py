"""GPT-2-small training step (AdamW, bf16, T=1024) under three ways of running fused attention on
a GPU, compiled side by side and timed interleaved, so the comparison is on the same machine:

    python3 benchmarks/gpu_step_variants.py [--batch 16 24] [--variants real-first cond right-only]

  real-first   the package's `fused_attention`: each row's real tokens permuted to the front,
               cuDNN flash attention with per-row lengths, permuted back (exact for any padding)
  cond         an alternative design: `lax.cond` on "is the batch right-padded?" between cuDNN
               and a rematerialised XLA masked path (exact for any padding)
  right-only   cuDNN with per-row lengths and nothing else: exact only for right-padded rows;
               the floor the other two are measured against
  real-first-scatter  real-first with the permutation's default backward (a scatter-add)

Prints ms/step (best of 3 interleaved medians), MFU against 989 TFLOP/s, the compiled step's
memory, and whether its HLO calls cuDNN attention / contains a conditional.  --tiny runs a small
config with XLA as the kernel (a smoke test of this script on a CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import median_ms, model_flops_per_token, train_step_fn  # same folder
from benchmarks_common import gpt2_small

from minirlhf import fused_attention as fa
from minirlhf import model

KERNEL = "cudnn" if jax.default_backend() == "gpu" else None  # None = XLA (CPU smoke test)
PACKAGE_FUSED, PACKAGE_PERMUTE = model.fused_attention, fa.permute_tokens


def xla_masked(q, k, v, key_mask, causal):
    return jax.nn.dot_product_attention(q, k, v, mask=(key_mask > 0)[:, None, None, :], is_causal=causal)


def cond_attention(q, k, v, key_mask, causal):
    """Fused attention as a `lax.cond`: cuDNN when every row is right-padded, else a
    rematerialised XLA masked path (exact for any padding, one conditional per layer)."""
    pad = (key_mask > 0)[:, None, None, :]

    @jax.checkpoint
    def xla_path(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=pad, is_causal=causal)

    if not causal:
        return xla_path(q, k, v)
    T = key_mask.shape[-1]
    lengths = key_mask.sum(-1).astype(jnp.int32)
    right_padded = jnp.all((key_mask > 0) == (jnp.arange(T)[None, :] < lengths[:, None]))

    def cudnn_path(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths,
                                            key_value_seq_lengths=lengths, implementation=KERNEL)

    return jax.lax.cond(right_padded, cudnn_path, xla_path, q, k, v)


def right_only_attention(q, k, v, key_mask, causal):
    if not causal:
        return xla_masked(q, k, v, key_mask, causal)
    lengths = key_mask.sum(-1).astype(jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths,
                                        key_value_seq_lengths=lengths, implementation=KERNEL)


def real_first_attention(q, k, v, key_mask, causal):
    if KERNEL == "cudnn":
        return PACKAGE_FUSED(q, k, v, key_mask, causal)   # exactly the package's code
    if not causal:
        return xla_masked(q, k, v, key_mask, causal)
    return fa.real_first_causal_attention(q, k, v, key_mask, implementation=KERNEL)


def plain_permute(x, order, inverse):
    return jax.vmap(lambda row, idx: row[idx])(x, order)


VARIANTS = {"real-first": (real_first_attention, PACKAGE_PERMUTE),
            "cond": (cond_attention, PACKAGE_PERMUTE),
            "right-only": (right_only_attention, PACKAGE_PERMUTE),
            "real-first-scatter": (real_first_attention, plain_permute)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 24])
    ap.add_argument("--variants", nargs="+", default=["real-first", "cond", "right-only"],
                    choices=list(VARIANTS))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="small config (CPU smoke test)")
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}", flush=True)
    cfg = gpt2_small("fused")
    T = 1024
    if args.tiny:
        cfg, T = dataclasses.replace(cfg, vocab_size=64, max_len=32, n_layer=2, n_head=2, d_model=32), 32
    for B in args.batch:
        runs = {}
        for name in args.variants:
            model.fused_attention, fa.permute_tokens = VARIANTS[name]
            t0 = time.perf_counter()
            _, step, state, batch = train_step_fn(cfg, B, T)
            compiled = step.lower(state[0], batch).compile()
            model.fused_attention, fa.permute_tokens = PACKAGE_FUSED, PACKAGE_PERMUTE
            hlo = compiled.as_text()
            mem = compiled.memory_analysis()
            mem_mb = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**20

            def call(compiled=compiled, state=state, batch=batch):
                state[0], metrics = compiled(state[0], batch)
                jax.block_until_ready(metrics["loss"])

            call()
            runs[name] = call
            print(f"  B={B} {name:<19} compiled+first step {time.perf_counter() - t0:5.1f} s  "
                  f"memory {mem_mb:,.0f} MB  cuDNN attention in HLO: {'cudnn' in hlo.lower()}  "
                  f"conditional in HLO: {'conditional' in hlo}", flush=True)
        best = {name: float("inf") for name in runs}
        for _ in range(args.rounds):  # interleaved, so every variant sees the same machine state
            for name, call in runs.items():
                best[name] = min(best[name], median_ms(call, args.repeats))
        flops = model_flops_per_token(cfg, T) * B * T
        for name, ms in best.items():
            print(f"B={B:<3} {name:<19} step {ms:6.1f} ms  {B * T / ms * 1000:>9,.0f} tok/s  "
                  f"MFU {flops / (ms / 1000) / 989e12:.1%} of 989 TFLOP/s", flush=True)
        del runs


if __name__ == "__main__":
    main()
