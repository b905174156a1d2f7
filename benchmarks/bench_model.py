"""Speed of the tiny GPT: training step, sampling with and without the KV cache, memory.

    .venv/bin/python benchmarks/bench_model.py            # lesson config + the PyTorch comparison
    .venv/bin/python benchmarks/bench_model.py --gpu      # GPT-2-small-sized config (needs a GPU)

Prints, for each config: ms per training step (median over repeats, after compilation),
training tokens/s, sampling tokens/s with the KV cache and without it (recomputing the whole
prefix for every new token), and the compiled step's memory (XLA's memory_analysis:
arguments + outputs + temporaries, deterministic on CPU).  With PyTorch installed
(`pip install torch`, not a dependency) it times `benchmarks/torch_reference.py` at the same
config in the same run, interleaved with the JAX timing, and prints the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.model import GPTConfig, count_params, cross_entropy_loss, forward, init_params
from minirlhf.sampling import generate, generate_without_cache
from minirlhf.training import init_train_state, make_optimizer, make_train_step

sys.path.insert(0, str(Path(__file__).parent))
from benchmarks_common import gpt2_small


def median_ms(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def train_step_fn(cfg: GPTConfig, B: int, T: int):
    """A ready-to-call closure running one jitted AdamW step on random tokens, and the jitted step."""
    params = init_params(jax.random.PRNGKey(0), cfg)
    opt = make_optimizer(3e-4, 1000)

    def loss_fn(p, batch):
        logits = forward(p, batch["tokens"], batch["mask"], cfg).logits
        return cross_entropy_loss(logits, batch["tokens"], batch["mask"]), {}

    step = make_train_step(loss_fn, opt, donate=True)
    rng = np.random.default_rng(0)
    batch = {"tokens": jnp.asarray(rng.integers(3, cfg.vocab_size, (B, T)), jnp.int32),
             "mask": jnp.ones((B, T), jnp.int32)}
    state = [init_train_state(params, opt)]

    def run():
        state[0], metrics = step(state[0], batch)
        jax.block_until_ready(metrics["loss"])

    return run, step, state, batch


def model_flops_per_token(cfg: GPTConfig, T: int) -> float:
    """Training FLOPs per token: 6 N (matmul params, fwd + bwd) + 12 L T d (attention scores/values)."""
    d, L = cfg.d_model, cfg.n_layer
    n_matmul = L * 12 * d * d + cfg.vocab_size * d
    return 6 * n_matmul + 12 * L * T * d


def bench_config(cfg: GPTConfig, B: int, T: int, repeats: int, sample_B: int, sample_new: int,
                 torch_ref: bool) -> dict:
    run, step, state, batch = train_step_fn(cfg, B, T)
    mem = step.lower(state[0], batch).compile().memory_analysis()
    mem_mb = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**20
    out = {"params": count_params(state[0].params), "mem_MB": mem_mb}
    if torch_ref:
        sys.path.insert(0, str(Path(__file__).parent))
        import torch_reference
        jax_ms, torch_ms = [], []
        for _ in range(3):  # interleave so both see the same machine load
            jax_ms.append(median_ms(run, repeats))
            torch_ms.append(torch_reference.time_step(cfg.vocab_size, T, cfg.n_layer, cfg.d_model,
                                                      cfg.n_head, B, iters=repeats))
        out["step_ms"], out["torch_step_ms"] = min(jax_ms), min(torch_ms)
    else:
        out["step_ms"] = median_ms(run, repeats)
    out["train_tok_s"] = B * T / (out["step_ms"] / 1000)
    out["tflops"] = model_flops_per_token(cfg, T) * out["train_tok_s"] / 1e12

    params = state[0].params
    P = 8
    prompts = jnp.ones((sample_B, P), jnp.int32)
    mask = jnp.ones((sample_B, P), jnp.int32)
    for name, fn in (("cache", generate), ("nocache", generate_without_cache)):
        def sample(fn=fn):
            g = fn(params, prompts, mask, jax.random.PRNGKey(1), cfg=cfg, max_new_tokens=sample_new)
            jax.block_until_ready(g.tokens)
        ms = median_ms(sample, max(repeats // 4, 2))
        out[f"sample_{name}_tok_s"] = sample_B * sample_new / (ms / 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true", help="GPT-2-small config (12 x 768, T=1024, bf16)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--batch", type=int, default=16, help="--gpu: sequences per step (T = 1024)")
    ap.add_argument("--attention", choices=("explicit", "fused", "both"), default="both",
                    help="--gpu: which attention path(s) to time")
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.device_count()} device(s))")
    configs = []
    if args.gpu:
        paths = ("explicit", "fused") if args.attention == "both" else (args.attention,)
        for attention in paths:
            cfg = gpt2_small(attention)
            configs.append((f"gpt2-small {attention} bf16 B={args.batch}", cfg, args.batch, 1024, 64, 256))
    else:
        lesson = GPTConfig(vocab_size=512, max_len=64, n_layer=3, n_head=4, d_model=96)
        configs.append(("lesson (3x96, T=48, B=32)", lesson, 32, 48, 64, 30))
        bench = GPTConfig(vocab_size=512, max_len=64, n_layer=4, n_head=4, d_model=128)
        configs.append(("reference (4x128, T=64, B=32)", bench, 32, 64, 64, 48))
    have_torch = False
    if not args.no_torch and not args.gpu:
        try:
            import torch  # noqa: F401
            have_torch = True
        except ImportError:
            print("(PyTorch not installed: skipping the comparison; pip install torch to enable)")
    for name, cfg, B, T, sB, sN in configs:
        r = bench_config(cfg, B, T, args.repeats, sB, sN, torch_ref=have_torch and name.startswith("reference"))
        line = (f"{name:<32} {r['params']:>10,} params  step {r['step_ms']:7.1f} ms  "
                f"{r['train_tok_s']:>9,.0f} train tok/s  {r['tflops'] * 1000:6.1f} GFLOP/s  "
                f"sampling {r['sample_cache_tok_s']:>8,.0f} tok/s with KV cache vs "
                f"{r['sample_nocache_tok_s']:>7,.0f} without (x{r['sample_cache_tok_s'] / r['sample_nocache_tok_s']:.1f})  "
                f"step memory {r['mem_MB']:.0f} MB")
        print(line)
        if "torch_step_ms" in r:
            print(f"{'':<32} PyTorch {r['torch_step_ms']:.1f} ms/step -> JAX/PyTorch = "
                  f"{r['step_ms'] / r['torch_step_ms']:.2f} (target <= 0.80)")
        if args.gpu:
            peak = 989e12
            print(f"{'':<32} MFU {r['tflops'] * 1e12 / peak:.1%} of 989 TFLOP/s (H100/H200 dense bf16 peak)")


if __name__ == "__main__":
    main()
