"""On a GPU: the fused attention path (cuDNN flash attention for right-padded rows, XLA for
any other padding) computes the same logits and gradients as the written-out attention.

    python3 benchmarks/gpu_check.py      # exits non-zero on a mismatch; needs a GPU

The CPU test-suite checks the XLA branch (tests/test_model.py); only a GPU has the cuDNN one.
"""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.model import GPTConfig, cross_entropy_loss, forward, init_params


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    assert jax.default_backend() == "gpu", "needs a GPU"
    cfg = GPTConfig(vocab_size=256, max_len=128, n_layer=2, n_head=2, d_model=128,
                    compute_dtype="bfloat16", attention="explicit")
    params = init_params(jax.random.PRNGKey(0), cfg)
    rng = np.random.default_rng(0)
    B, T = 6, 128
    tokens = jnp.asarray(rng.integers(3, 256, (B, T)), jnp.int32)
    lengths = np.array([128, 100, 64, 17, 128, 90])
    right = jnp.asarray(np.arange(T)[None] < lengths[:, None], jnp.int32)     # pads at the end
    left = jnp.asarray(np.arange(T)[None] >= (T - lengths)[:, None], jnp.int32)  # pads in front
    ok = True
    for name, mask in (("right-padded (cuDNN)", right), ("left-padded (XLA)", left)):
        out = {}
        for attention in ("explicit", "fused"):
            c = dataclasses.replace(cfg, attention=attention)
            loss = lambda p: cross_entropy_loss(forward(p, tokens, mask, c).logits, tokens, mask)
            lg = jax.jit(lambda p: forward(p, tokens, mask, c).logits)(params)
            g = jax.jit(jax.grad(loss))(params)
            hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text().lower()
            out[attention] = (np.asarray(lg)[np.asarray(mask) > 0], g, "cudnn" in hlo)
        e_logits = rel(out["fused"][0], out["explicit"][0])
        e_grad = max(rel(a, b) for a, b in zip(jax.tree_util.tree_leaves(out["fused"][1]),
                                                jax.tree_util.tree_leaves(out["explicit"][1])))
        finite = all(bool(jnp.isfinite(x).all()) for x in jax.tree_util.tree_leaves(out["fused"][1]))
        good = e_logits < 1e-2 and e_grad < 5e-2 and finite
        ok &= good
        print(f"{name:<22} logits rel err {e_logits:.1e}  worst grad rel err {e_grad:.1e}  "
              f"finite={finite}  cuDNN call compiled in={out['fused'][2]}  {'OK' if good else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
