"""Where a GPT-2-small training step spends its time on a GPU (needs one: the `device` tool).

    python3 benchmarks/gpu_profile.py [B]

Times forward+backward for each attention path with the layers scanned or unrolled, then the
optimizer update alone, and says whether the compiled step calls cuDNN's attention kernel.
The step itself (with AdamW) is timed by `benchmarks/bench_model.py --gpu`.
"""
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchmarks_common import gpt2_small

from minirlhf.model import cross_entropy_loss, forward, init_params
from minirlhf.training import make_optimizer


def median_ms(fn, *args, repeats=10):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main():
    B, T = (int(sys.argv[1]) if len(sys.argv) > 1 else 16), 1024
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, 50304, (B, T)), jnp.int32)
    mask = jnp.ones((B, T), jnp.int32)
    flops = B * T * (6 * (12 * 12 * 768 ** 2 + 50304 * 768) + 12 * 12 * T * 768)
    for attention in ("explicit", "fused"):
        for unroll in (False, True):
            cfg = dataclasses.replace(gpt2_small(attention), unroll_layers=unroll)
            params = init_params(jax.random.PRNGKey(0), cfg)
            grad = jax.jit(jax.grad(lambda p, cfg=cfg: cross_entropy_loss(forward(p, tokens, mask, cfg).logits,
                                                                 tokens, mask)))
            cudnn = "cudnn" in grad.lower(params).compile().as_text().lower()
            ms = median_ms(grad, params)
            print(f"{attention:<8} {'unrolled' if unroll else 'scan':<8} fwd+bwd {ms:6.1f} ms "
                  f"({flops / ms / 1e9 / 989:.1%} MFU)  cuDNN attention compiled in: {cudnn}", flush=True)
    opt = make_optimizer(3e-4, 1000)
    grads = jax.tree_util.tree_map(lambda x: 1e-3 * jnp.ones_like(x), params)

    def update(params, state):
        updates, state = opt.update(grads, state, params)
        return jax.tree_util.tree_map(jnp.add, params, updates), state

    update = jax.jit(update, donate_argnums=(0, 1))
    state = [params, opt.init(params)]

    def run():
        state[0], state[1] = update(*state)
        return state[0]

    print(f"AdamW update alone (clip + schedule): {median_ms(run):.2f} ms")


if __name__ == "__main__":
    main()
