"""The GPU path of attention: `jax.nn.dot_product_attention`, and cuDNN's flash-attention kernel
for causal passes in bfloat16/float16 (`GPTConfig(attention="fused")`).

`model.attend` writes attention out (scores, mask, softmax); this module computes the same
numbers through a fused kernel.  The one complication is padding: cuDNN takes it only as
per-row lengths (right padding), so `real_first_causal_attention` permutes each row's real
tokens to the front, attends, and permutes back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fused_attention(q, k, v, key_mask, causal: bool):
    """The same attention through `jax.nn.dot_product_attention` (shapes as in `attend`).

    On a CPU, or for a decoding step, it is XLA's implementation with the padding mask.  On a GPU
    in bfloat16/float16, the causal pass runs cuDNN's flash-attention kernel, which never builds
    the [T, T] score matrix, for every padding layout: see `real_first_causal_attention`.
    """
    if causal and jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
        return real_first_causal_attention(q, k, v, key_mask, implementation="cudnn")
    return jax.nn.dot_product_attention(q, k, v, mask=(key_mask > 0)[:, None, None, :], is_causal=causal)


def real_first_causal_attention(q, k, v, key_mask, implementation=None):
    """Causal self-attention among the real tokens of each row, for ANY padding layout, computed by
    a kernel that only understands "the first n tokens of the row are real" (per-row lengths).

    cuDNN's flash attention takes padding only as such lengths, i.e. right padding: the layout of
    training batches, but not of left-padded PPO rollouts.  Yet which keys a real query sees (the
    real tokens at or before it) depends only on the ORDER of the real tokens, not on where the
    pads sit.  So each row's real tokens are moved to the front by a stable per-row permutation
    (the identity on a right-padded row), attended with lengths, and moved back: exact for every
    layout, with nothing decided at run time (the permutation costs nothing measurable next to
    choosing between cuDNN and XLA's masked path with `lax.cond`: `benchmarks/gpu_step_variants.py`).
    Outputs at pad queries are 0 (the explicit path averages earlier real tokens there).  Only
    the log-prob of a token that follows a pad would read one; the package's losses score
    response tokens, which follow real ones.  implementation: as in
    `jax.nn.dot_product_attention` (None = XLA, for the CPU tests)."""
    real = key_mask > 0                                                    # [B, T]
    order = jnp.argsort(~real, axis=-1, stable=True)   # [B, T]: real columns first, in order, then pads
    inverse = jnp.argsort(order, axis=-1)                                  # order[b, inverse[b, t]] = t
    lengths = real.sum(-1).astype(jnp.int32)                               # [B] real tokens per row
    q, k, v = (permute_tokens(x, order, inverse) for x in (q, k, v))
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths,
                                       key_value_seq_lengths=lengths, implementation=implementation)
    return permute_tokens(out, inverse, order)


@jax.custom_vjp
def permute_tokens(x, order, inverse):
    """y[b, t] = x[b, order[b, t]]: a per-row permutation of the tokens of x [B, T, ...].
    `inverse` is the inverse permutation, used by the backward pass."""
    return jax.vmap(lambda row, idx: row[idx])(x, order)


# Speed note: the transpose of a permutation is its inverse, so the backward pass is one more
# gather, where JAX's default transpose of a gather would be a slower scatter-add.
def _permute_tokens_fwd(x, order, inverse):
    return permute_tokens(x, order, inverse), (order, inverse)


def _permute_tokens_bwd(res, g):
    order, inverse = res
    return permute_tokens(g, inverse, order), None, None


permute_tokens.defvjp(_permute_tokens_fwd, _permute_tokens_bwd)
