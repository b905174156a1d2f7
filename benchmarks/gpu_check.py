"""On a GPU: the fused attention path (cuDNN flash attention on each row's real tokens moved to
the front, see
`minirlhf.fused_attention.real_first_causal_attention`) computes the same logits and
gradients as the written-out attention, for every padding layout.

    python3 benchmarks/gpu_check.py             # exits non-zero on a mismatch; needs a GPU
    python3 benchmarks/gpu_check.py --emulate   # the same path on a CPU, XLA as the kernel, fp32

Only logits at real tokens are compared: at a pad query the fused path gives 0 and the explicit
one an average of earlier real tokens, and nothing reads either.  So the loss whose gradients are
compared scores only tokens predicted from a real position ("after a real token"); the gradient of
a loss that also scores the first real token after a pad is printed too, for information: it reads
a pad position's logits, so the two paths differ there by design.
The CPU test-suite checks the same permutation (tests/test_model.py); only a GPU has the cuDNN
kernel.  On the GPU both paths run in bfloat16, so they agree to bf16 rounding.
"""
import argparse
import dataclasses
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf import fused_attention as fa
from minirlhf import model
from minirlhf.model import GPTConfig, cross_entropy_loss, forward, init_params


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def layouts(T, lengths):
    """Masks [B, T] with the given numbers of real tokens per row, in four padding layouts."""
    lengths = np.asarray(lengths)[:, None]
    col = np.arange(T)[None]
    start = (T - lengths) // 2
    holes = np.zeros((len(lengths), T), bool)
    for b, n in enumerate(lengths[:, 0]):       # n real tokens scattered over the row
        holes[b, np.sort(np.random.default_rng(b).choice(T, n, replace=False))] = True
    return {"right-padded": col < lengths,
            "left-padded": col >= T - lengths,
            "padded both sides": (col >= start) & (col < start + lengths),
            "holes": holes}


def emulate_gpu_path_on_cpu():
    """Make `fused_attention` take the GPU's causal path with XLA (not cuDNN) as the kernel."""
    xla = model.fused_attention

    def fused(q, k, v, key_mask, causal):
        if causal:
            return fa.real_first_causal_attention(q, k, v, key_mask, implementation=None)
        return xla(q, k, v, key_mask, causal)

    model.fused_attention = fused


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emulate", action="store_true", help="CPU: the GPU path with XLA as kernel, fp32")
    args = ap.parse_args()
    if args.emulate:
        emulate_gpu_path_on_cpu()
    else:
        assert jax.default_backend() == "gpu", "needs a GPU (or --emulate)"
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    cfg = GPTConfig(vocab_size=256, max_len=128, n_layer=2, n_head=2, d_model=128,
                    compute_dtype="float32" if args.emulate else "bfloat16", attention="explicit")
    params = init_params(jax.random.PRNGKey(0), cfg)
    rng = np.random.default_rng(0)
    B, T = 6, 128
    tokens = jnp.asarray(rng.integers(3, 256, (B, T)), jnp.int32)
    ok = True
    for name, mask in layouts(T, [128, 100, 64, 17, 128, 90]).items():
        mask = jnp.asarray(mask, jnp.int32)
        after_real = mask * jnp.pad(mask[:, :-1], ((0, 0), (1, 0)))     # token t and t-1 real
        out = {}
        for attention in ("explicit", "fused"):
            c = dataclasses.replace(cfg, attention=attention)

            def grads(p, c=c, mask=mask, after_real=after_real):
                loss = lambda p, m: cross_entropy_loss(forward(p, tokens, mask, c).logits, tokens, m)
                return (forward(p, tokens, mask, c).logits, jax.grad(loss)(p, after_real),
                        jax.grad(loss)(p, mask))

            compiled = jax.jit(grads).lower(params).compile()
            logits, g, g_all = compiled(params)
            hlo = compiled.as_text()
            out[attention] = (np.asarray(logits)[np.asarray(mask) > 0], g, g_all,
                              len(re.findall(r'custom_call_target="__cudnn\$fmha', hlo)),
                              len(re.findall(r"\sconditional\(", hlo)))
        e_logits = rel(out["fused"][0], out["explicit"][0])
        worst = lambda i, o=out: max(rel(a, b) for a, b in zip(jax.tree_util.tree_leaves(o["fused"][i]),
                                                             jax.tree_util.tree_leaves(o["explicit"][i])))
        e_grad, e_grad_all = worst(1), worst(2)
        finite = all(bool(jnp.isfinite(x).all()) for x in jax.tree_util.tree_leaves(out["fused"][1]))
        good = e_logits < 1e-2 and e_grad < 5e-2 and finite
        ok &= good
        print(f"{name:<18} logits rel err {e_logits:.1e}  worst grad rel err {e_grad:.1e} "
              f"(loss incl. tokens after pads: {e_grad_all:.1e})  finite={finite}  cuDNN attention "
              f"calls {out['fused'][3]}  conditionals {out['fused'][4]}  {'OK' if good else 'MISMATCH'}",
              flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
