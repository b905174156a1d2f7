"""Scratch (session 8, not applied): where a KV-cache decoding step spends its time on the CPU.

    .venv/bin/python benchmarks/experiments/decode_attention/decode_attention.py   # needs runs/sft.ckpt

Times one `sampling.decode_step` of the lesson model (3 layers, 4 heads of 24) at B = 2048 rows,
a 48-column cache, and its parts; then the one-query attention of a step written three ways:
`model.attend` on the [B, S, H, Dh] cache (the code today), elementwise products and sums on the
same layout, and an einsum on a cache stored as [B, H, S, Dh].  Output in decode_attention.log.
"""
import time, jax, jax.numpy as jnp, numpy as np
from functools import partial
import minirlhf.sampling as S
from minirlhf.sft import ensure_sft_model
sft, cfg = ensure_sft_model(False)
B, Sl, L, H, Dh = 2048, 48, cfg.n_layer, cfg.n_head, cfg.d_model // cfg.n_head
k = jnp.asarray(np.random.randn(L, B, Sl, H, Dh).astype(np.float32)); v = k + 1
tok = jnp.ones((B,), jnp.int32); pos = jnp.full((B,), 20); mask = jnp.ones((B, Sl), jnp.int32)
f = jax.jit(lambda c, t: S.decode_step(sft, t, pos, 20, c, mask, cfg)[::2])
def timeit(fn, *a, n=10):
    r = fn(*a); jax.block_until_ready(r)
    t = time.time()
    for _ in range(n): r = fn(*a)
    jax.block_until_ready(r); return (time.time() - t) / n
print("decode_step", timeit(f, (k, v), tok))
# components
from minirlhf.model import attend, qkv_proj, layer_norm, mlp, out_proj
x = jnp.ones((B, 1, cfg.d_model))
p = jax.tree_util.tree_map(lambda a: a[0], sft["blocks"])
print("attend", timeit(jax.jit(lambda q, kk, vv: attend(q, kk, vv, mask, cfg, causal=False)), jnp.ones((B, 1, H, Dh)), k[0], v[0]))
print("mlp", timeit(jax.jit(lambda x: mlp(layer_norm(x, p["ln2"]), p)), x))
print("qkv", timeit(jax.jit(lambda x: qkv_proj(x, p, cfg)), x))
print("dus", timeit(jax.jit(lambda kk, n: jax.lax.dynamic_update_slice_in_dim(kk, n, 20, axis=1)), k[0], jnp.ones((B, 1, H, Dh))))
from minirlhf.model import unembed
h = jnp.ones((B, cfg.d_model))
print("unembed", timeit(jax.jit(lambda h: unembed(sft, h, cfg)), h))
print("categorical", timeit(jax.jit(lambda key, l: jax.random.categorical(key, l)), jax.random.PRNGKey(0), jnp.ones((B, 512))))
import math
from minirlhf.model import NEG_INF
def attend_one(q, k, v, key_mask):
    scores = jnp.sum(q * k, axis=-1) / math.sqrt(q.shape[-1])          # [B, S, H]
    scores = jnp.where(key_mask[:, :, None] > 0, scores, NEG_INF)
    w = jax.nn.softmax(scores, axis=1)
    return jnp.sum(w[..., None] * v, axis=1)[:, None]
def attend_t(q, k, v, key_mask):   # cache stored [B, H, S, Dh]
    scores = jnp.einsum("bhd,bhsd->bhs", q[:, 0], k) / math.sqrt(q.shape[-1])
    scores = jnp.where(key_mask[:, None, :] > 0, scores, NEG_INF)
    w = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhs,bhsd->bhd", w, v)[:, None]
q = jnp.ones((B, 1, H, Dh))
print("attend_one", timeit(jax.jit(attend_one), q, k[0], v[0], mask))
kt, vt = k[0].transpose(0, 2, 1, 3), v[0].transpose(0, 2, 1, 3)
print("attend_t", timeit(jax.jit(attend_t), q, kt, vt, mask))
