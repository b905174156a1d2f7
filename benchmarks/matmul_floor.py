"""How fast can a training step be on this CPU?  The step's matrix multiplications, timed alone.

    .venv/bin/python benchmarks/matmul_floor.py             # the reference config below
    .venv/bin/python benchmarks/matmul_floor.py --no-torch

A GPT training step is ~95% matmul FLOPs.  This script lists every matmul of one step at the
reference config (4 x 128, 4 heads, V = 512, T = 64, B = 32; N = B*T = 2048 token rows): per
layer the qkv, output, MLP-up and MLP-down projections and the two batched attention products,
plus the tied unembedding; each forward product y = x W comes with two backward products,
dx = dy W^T and dW = x^T dy, of the same FLOP count.  Each product is timed ALONE (one jitted
`jnp.matmul`, median of repeats, inputs already on the device), and the times are summed with
their multiplicities.  That sum is a floor for any step built from these matmuls on this
machine: the real step adds layer norms, softmax, GELU, AdamW and memory traffic on top.
With PyTorch installed the same products are timed with `torch.matmul` (its BLAS) too, and the
PyTorch training step of `torch_reference.py` is timed in the same run.

The point: a target such as "the JAX step at most 0.8 x the PyTorch step" is reachable only if
the floor of XLA's own matmuls is below it; above it, no rearrangement of the rest of the step
can reach the target.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.model import GPTConfig, cross_entropy_loss, forward

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import median_ms, train_step_fn  # same folder (path set above)


def step_matmuls(L: int, d: int, H: int, V: int, T: int, B: int) -> list[tuple[str, tuple, tuple, int]]:
    """(name, a shape, b shape, count) for every matmul of one fwd+bwd step, backward included.

    A forward product a [.., m, k] @ b [.., k, n] has backward products of shapes
    [.., m, n] @ [.., n, k] (d a) and [.., k, m] @ [.., m, n] (d b)."""
    N, Dh = B * T, d // H
    forward = [  # (name, a, b, count per step)
        ("qkv proj", (N, d), (d, 3 * d), L),
        ("attn q k^T", (B, H, T, Dh), (B, H, Dh, T), L),
        ("attn p v", (B, H, T, T), (B, H, T, Dh), L),
        ("out proj", (N, d), (d, d), L),
        ("mlp up", (N, d), (d, 4 * d), L),
        ("mlp down", (N, 4 * d), (4 * d, d), L),
        ("unembed", (N, d), (d, V), 1),
    ]
    out = []
    for name, a, b, count in forward:
        *batch, m, k = a
        n = b[-1]
        out.append((f"{name} fwd", a, b, count))
        out.append((f"{name} d_in", (*batch, m, n), (*batch, n, k), count))
        out.append((f"{name} d_weight", (*batch, k, m), (*batch, m, n), count))
    return out


def time_jax(a_shape, b_shape, repeats: int) -> float:
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal(a_shape, np.float32))
    b = jnp.asarray(rng.standard_normal(b_shape, np.float32))
    mm = jax.jit(jnp.matmul)
    return median_ms(lambda: mm(a, b).block_until_ready(), repeats) / 1e3   # seconds


def time_torch(a_shape, b_shape, repeats: int) -> float:
    import torch
    a, b = torch.randn(a_shape), torch.randn(b_shape)
    return median_ms(lambda: torch.matmul(a, b), repeats) / 1e3   # seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    L, d, H, V, T, B = 4, 128, 4, 512, 64, 32
    have_torch = not args.no_torch
    if have_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            have_torch = False
            print("(PyTorch not installed: JAX column only)")
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; reference config "
          f"L={L} d={d} H={H} V={V} T={T} B={B}")
    print(f"{'matmul':22s} {'a':>16s} {'b':>16s} {'x':>2s} {'GFLOP':>6s} {'JAX ms':>7s} {'GFLOP/s':>8s}"
          + (f" {'torch ms':>8s} {'GFLOP/s':>8s}" if have_torch else ""))
    total = {"flop": 0.0, "jax": 0.0, "torch": 0.0, "jax_fwd": 0.0}
    for name, a, b, count in step_matmuls(L, d, H, V, T, B):
        flop = 2 * np.prod(a) * b[-1]
        tj = time_jax(a, b, args.repeats)
        line = (f"{name:22s} {a!s:>16s} {b!s:>16s} {count:2d} {flop / 1e9:6.3f} "
                f"{1e3 * tj:7.3f} {flop / tj / 1e9:8.1f}")
        total["flop"] += count * flop
        total["jax"] += count * tj
        total["jax_fwd"] += count * tj if name.endswith(" fwd") else 0.0
        if have_torch:
            tt = time_torch(a, b, args.repeats)
            total["torch"] += count * tt
            line += f" {1e3 * tt:8.3f} {flop / tt / 1e9:8.1f}"
        print(line)
    print(f"\nall matmuls of one step: {total['flop'] / 1e9:.2f} GFLOP")
    print(f"  floor with XLA's matmuls (sum of standalone times): {1e3 * total['jax']:.1f} ms "
          f"({total['flop'] / total['jax'] / 1e9:.1f} GFLOP/s)")

    cfg = GPTConfig(vocab_size=V, max_len=T, n_layer=L, n_head=H, d_model=d)
    run, _, state, batch = train_step_fn(cfg, B, T)
    params = state[0].params

    def loss(p):
        return cross_entropy_loss(forward(p, batch["tokens"], batch["mask"], cfg).logits,
                                  batch["tokens"], batch["mask"])

    fwd, grad = jax.jit(loss), jax.jit(jax.grad(loss))
    fwd_ms = min(median_ms(lambda: fwd(params).block_until_ready(), 10) for _ in range(3))
    grad_ms = min(median_ms(lambda: jax.block_until_ready(grad(params)), 10) for _ in range(3))
    floor_fwd, floor_bwd = 1e3 * total["jax_fwd"], 1e3 * (total["jax"] - total["jax_fwd"])
    print(f"  our forward pass + loss: {fwd_ms:.1f} ms vs its matmuls' floor {floor_fwd:.1f} ms "
          f"(x{fwd_ms / floor_fwd:.2f})")
    print(f"  our backward pass (fwd+bwd - fwd): {grad_ms - fwd_ms:.1f} ms vs its matmuls' floor "
          f"{floor_bwd:.1f} ms (x{(grad_ms - fwd_ms) / floor_bwd:.2f})")
    jax_step = min(median_ms(run, 10) for _ in range(3))
    print(f"  our JAX training step (bench_model.py's): {jax_step:.1f} ms = the floor + "
          f"{jax_step - 1e3 * total['jax']:.1f} ms of everything else")
    if have_torch:
        import torch_reference  # same folder; optional
        torch_step = min(torch_reference.time_step(V, T, L, d, H, B, iters=10) for _ in range(3))
        print(f"  floor with PyTorch's matmuls: {1e3 * total['torch']:.1f} ms "
              f"({total['flop'] / total['torch'] / 1e9:.1f} GFLOP/s)")
        print(f"  PyTorch's whole training step (torch_reference.py): {torch_step:.1f} ms = its floor + "
              f"{torch_step - 1e3 * total['torch']:.1f} ms; JAX/PyTorch = {jax_step / torch_step:.2f}")
        print(f"  target: JAX step <= 0.8 x PyTorch's = {0.8 * torch_step:.1f} ms, which leaves "
              f"{0.8 * torch_step - 1e3 * total['jax']:.1f} ms beside XLA's matmuls")
        print(f"  XLA matmul floor / target = {1e3 * total['jax'] / (0.8 * torch_step):.2f} "
              f"(> 1 means the target is below what XLA's matmuls alone take)")


if __name__ == "__main__":
    main()
