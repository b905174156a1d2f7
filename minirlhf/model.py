"""The tiny GPT, written out as pure functions over a parameter pytree.

A decoder-only transformer (Radford et al. 2019, GPT-2 layout) with pre-LayerNorm
blocks, learned position embeddings and a weight-tied unembedding:

    h_0     = W_te[x_t] + W_pe[pos_t]
    h'_l    = h_{l-1} + Attn(LN(h_{l-1}))                      (causal, multi-head)
    h_l     = h'_l    + MLP(LN(h'_l))                          MLP(u) = W_2 gelu(W_1 u + b_1) + b_2
    logits  = LN(h_L) @ W_te^T                                  (weight tying)

No flax modules: `init_params(key, cfg)` returns a nested dict, `forward` is a
function of (params, tokens, attention_mask).  The layers' parameters are stacked
along a leading [L] axis and the blocks run under `lax.scan` (unrolled by default:
see `GPTConfig.unroll_layers`).

Padding convention (shared by the whole package): `attention_mask [B, T]` is 1 on
real tokens and 0 on pads; position ids are `cumsum(mask) - 1`, so right-padded
training batches and left-padded generation batches see the same positions for
the same real tokens, and a query never attends to a pad key.

Scalar heads (reward model, value function) are separate small pytrees so the
policy, the reward model and the value function can share a backbone or not.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from minirlhf.config import check_fields
from minirlhf.fused_attention import fused_attention  # the GPU path, in its own module

NEG_INF = -1e9  # finite "minus infinity": a fully masked row gives a uniform softmax, never NaN

@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of the tiny GPT."""

    vocab_size: int = 512
    """V: number of token ids (the tokenizer's vocabulary, padded up is fine)."""
    max_len: int = 64
    """Longest sequence (prompt + response) the position table covers."""
    n_layer: int = 4
    """L: number of transformer blocks."""
    n_head: int = 4
    """H: attention heads per block; d_model must be divisible by it."""
    d_model: int = 128
    """D: width of the residual stream."""
    mlp_ratio: int = 4
    """The MLP's hidden width is mlp_ratio * D."""
    attention: str = "explicit"
    """"explicit" (scores, mask, softmax written out) or "fused" (jax.nn.dot_product_attention)."""
    unroll_layers: bool = True
    """Run the L blocks as an unrolled loop over the stacked [L, ...] parameters (the default) or
    as a `lax.scan`.  Same numbers.  Scan traces one block once, so compile time stays flat in
    depth; but its backward pass stores every layer's activations in stacked buffers that XLA
    zero-fills and copies.  At our depths unrolling is faster (GPT-2 small on an H100, fwd+bwd
    58.3 -> 41.5 ms: `benchmarks/gpu_profile.py`, benchmarks/README.md).  Set
    False for deep models, where compile time matters."""
    compute_dtype: str = "float32"
    """dtype of matmuls/activations: "float32", "bfloat16" (mixed precision: params stay float32;
    softmax, LayerNorm statistics, logits and log-probs are computed in at least float32), or
    "float64" (for gradient checks; needs `jax.experimental.enable_x64`)."""

    def __post_init__(self):
        check_fields(self, counts=("vocab_size", "max_len", "n_layer", "n_head", "d_model",
                                   "mlp_ratio"))   # first: n_head = 0 must not reach the modulo
        if self.d_model % self.n_head:
            raise ValueError(f"GPTConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.attention not in ("explicit", "fused"):
            raise ValueError(f"GPTConfig.attention: expected 'explicit' or 'fused', got {self.attention!r}")
        if self.compute_dtype not in ("float32", "bfloat16", "float64"):
            raise ValueError("GPTConfig.compute_dtype: expected 'float32', 'bfloat16' or 'float64', "
                             f"got {self.compute_dtype!r}")

    @property
    def d_head(self) -> int:
        """Width of one attention head: d_model // n_head."""
        return self.d_model // self.n_head


# ----------------------------------------------------------------------------- init

@partial(jax.jit, static_argnames=("shapes", "which"))
def _standard_normals(key: jax.Array, shapes: tuple, which: tuple) -> tuple:
    """N(0, 1) draws of the given shapes, draw i with subkey split(key, 6)[which[i]]: one
    compiled program per group of shapes (op by op, each shape would compile its own small
    programs)."""
    keys = jax.random.split(key, 6)
    return tuple(jax.random.normal(keys[i], s, jnp.float32) for i, s in zip(which, shapes))


def init_params(key: jax.Array, cfg: GPTConfig) -> dict:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm gains, and the
    residual output projections scaled by 1/sqrt(2L) (Radford et al. 2019, sec. 2.3)."""
    L, D, F, V = cfg.n_layer, cfg.d_model, cfg.mlp_ratio * cfg.d_model, cfg.vocab_size
    # subkeys 0..5: wte, wpe, w_qkv, w_o, w_in, w_out.  wpe is drawn apart, so models that differ
    # only in max_len (lesson 10's sequence-length sweep) share the program of the other five.
    z_te, z_qkv, z_o, z_in, z_out = _standard_normals(
        key, ((V, D), (L, D, 3 * D), (L, D, D), (L, D, F), (L, F, D)), (0, 2, 3, 4, 5))
    (z_pe,) = _standard_normals(key, ((cfg.max_len, D),), (1,))
    resid_std = 0.02 / math.sqrt(2 * L)
    ln = lambda *lead: {"g": jnp.ones((*lead, D)), "b": jnp.zeros((*lead, D))}
    return {
        "wte": 0.02 * z_te,                              # [V, D] token embedding = unembedding
        "wpe": 0.02 * z_pe,                              # [Tmax, D]
        "blocks": {                                      # every leaf stacked over layers: [L, ...]
            "ln1": ln(L),
            "w_qkv": 0.02 * z_qkv, "b_qkv": jnp.zeros((L, 3 * D)),
            "w_o": resid_std * z_o, "b_o": jnp.zeros((L, D)),
            "ln2": ln(L),
            "w_in": 0.02 * z_in, "b_in": jnp.zeros((L, F)),
            "w_out": resid_std * z_out, "b_out": jnp.zeros((L, D)),
        },
        "ln_f": ln(),
    }


def init_scalar_head(key: jax.Array, cfg: GPTConfig) -> dict:
    """A linear head h -> w.h + b giving one scalar per position (reward or value head)."""
    return {"w": 0.02 * jax.random.normal(key, (cfg.d_model,)), "b": jnp.zeros(())}


def count_params(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


# ----------------------------------------------------------------------------- layers

def at_least_f32(x):
    """bf16 -> fp32; fp32 and fp64 unchanged: reductions never run in bf16."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def layer_norm(x, p, eps: float = 1e-5):
    """LN(x) = g * (x - mean) / sqrt(var + eps) + b over the last axis (stats in >= float32)."""
    x32 = at_least_f32(x)
    mean = x32.mean(-1, keepdims=True)
    var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps) * p["g"] + p["b"]).astype(x.dtype)


def positions_from_mask(attention_mask):
    """pos_t = (number of real tokens before t) — identical for left and right padding."""
    return jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0)  # [B, T]


def attention_allowed(key_mask, causal: bool):
    """allowed[b, 1, i, j] = key j is not a pad, and (if causal) key column j <= query column i.

    key_mask: [B, Tk] -> [B, 1, 1, Tk] (not causal) or [B, 1, Tk, Tk] (causal: Tq = Tk).
    """
    allowed = (key_mask > 0)[:, None, None, :]                          # [B, 1, 1, Tk]
    if causal:
        Tk = key_mask.shape[-1]
        allowed = allowed & jnp.tril(jnp.ones((Tk, Tk), bool))[None, None]  # [B, 1, Tk, Tk]
    return allowed


def attend(q, k, v, key_mask, cfg: GPTConfig, causal: bool = True):
    """softmax(q k^T / sqrt(d_head) + mask) v  (Vaswani et al. 2017, eq. 1), per head.

    q: [B, Tq, H, Dh], k, v: [B, Tk, H, Dh], key_mask: [B, Tk] (0 on pads) -> [B, Tq, H, Dh].
    causal=True is the full pass (Tq = Tk, query i sees keys j <= i); causal=False is one decoding
    step, where the KV cache's key_mask already hides the columns not yet written.
    """
    if cfg.attention == "fused":
        return fused_attention(q, k, v, key_mask, causal)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                        preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))  # [B, H, Tq, Tk]
    scores = scores / math.sqrt(q.shape[-1])
    scores = jnp.where(attention_allowed(key_mask, causal), scores, NEG_INF)  # causal + padding mask
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)            # [B, H, Tq, Tk]
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)                      # [B, Tq, H, Dh]


def mlp(x, p):
    """W_out gelu(W_in x + b_in) + b_out on a flat [N, D] view.

    Speed note: the matmuls run on 2-D [B*T, D] arrays rather than 3-D [B, T, D]
    einsums; XLA's CPU backend emits much faster backward passes for plain 2-D dots.
    """
    B, T, D = x.shape
    h = x.reshape(B * T, D) @ p["w_in"].astype(x.dtype) + p["b_in"].astype(x.dtype)   # [BT, F]
    h = jax.nn.gelu(h, approximate=True)
    out = h @ p["w_out"].astype(x.dtype) + p["b_out"].astype(x.dtype)                 # [BT, D]
    return out.reshape(B, T, D)


def qkv_proj(x, p, cfg: GPTConfig):
    """x [B, T, D] -> q, k, v each [B, T, H, Dh]."""
    B, T, D = x.shape
    qkv = x.reshape(B * T, D) @ p["w_qkv"].astype(x.dtype) + p["b_qkv"].astype(x.dtype)  # [BT, 3D]
    q, k, v = jnp.split(qkv.reshape(B, T, 3, cfg.n_head, cfg.d_head), 3, axis=2)
    return q[:, :, 0], k[:, :, 0], v[:, :, 0]


def out_proj(a, p):
    """a [B, T, H, Dh] -> [B, T, D]: concatenate heads and project."""
    B, T, H, Dh = a.shape
    return (a.reshape(B * T, H * Dh) @ p["w_o"].astype(a.dtype) + p["b_o"].astype(a.dtype)).reshape(B, T, H * Dh)


def block(x, p, key_mask, cfg: GPTConfig):
    """One pre-LN block: x + Attn(LN(x)), then + MLP(LN(.)).  Also returns this block's k, v."""
    q, k, v = qkv_proj(layer_norm(x, p["ln1"]), p, cfg)
    x = x + out_proj(attend(q, k, v, key_mask, cfg, causal=True), p)                    # [B, T, D]
    x = x + mlp(layer_norm(x, p["ln2"]), p)                               # [B, T, D]
    return x, (k, v)


# ----------------------------------------------------------------------------- forward

def embed(params, tokens, positions, cfg: GPTConfig):
    """h_0 = W_te[x_t] + W_pe[pos_t] in the compute dtype. tokens, positions [B, T] -> [B, T, D]."""
    dtype = jnp.dtype(cfg.compute_dtype)
    return (params["wte"][tokens] + params["wpe"][positions]).astype(dtype)  # [B, T, D]


class ForwardOut(NamedTuple):
    logits: jax.Array   # [B, T, V] float32
    hidden: jax.Array   # [B, T, D] final hidden states (after ln_f) for scalar heads
    kv: tuple           # (k, v) each [L, B, T, H, Dh]: the KV cache of this pass


def forward(params: dict, tokens, attention_mask, cfg: GPTConfig) -> ForwardOut:
    """Run the GPT on tokens [B, T] with attention_mask [B, T] (1 = real token)."""
    B, T = tokens.shape
    if T > cfg.max_len:
        raise ValueError(f"forward: sequence length {T} exceeds GPTConfig.max_len={cfg.max_len}")
    x = embed(params, tokens, positions_from_mask(attention_mask), cfg)    # [B, T, D]

    def layer(x, p):
        return block(x, p, attention_mask, cfg)

    x, kv = jax.lax.scan(layer, x, params["blocks"], unroll=cfg.unroll_layers)  # over L layers
    h = layer_norm(at_least_f32(x), params["ln_f"])                        # >= fp32 from here on
    return ForwardOut(unembed(params, h, cfg), h, kv)


def unembed(params, h, cfg: GPTConfig):
    """logits = h W_te^T (weight tying): h [..., D] -> [..., V], returned in >= float32.

    Under bfloat16 compute the matmul runs in bfloat16 (on a GPU this product is ~30% of a
    GPT-2-small step's FLOPs); the logits are then upcast, so log-softmax runs in float32.
    """
    dtype = jnp.dtype(cfg.compute_dtype)
    logits = jnp.einsum("...d,vd->...v", h.astype(dtype), params["wte"].astype(dtype))
    # Speed note: the product is left in the compute dtype and upcast afterwards (as PyTorch's
    # autocast does), so its cotangent is bfloat16 too and both backward matmuls run in bfloat16.
    return at_least_f32(logits)


def tempered(params: dict, temperature: float) -> dict:
    """The same GPT at sampling temperature T, as weights: ln_f's gain and bias divided by T.

    logits = (g * xhat + b) W^T is linear in (g, b), so (g/T, b/T) gives logits / T exactly:
    softmax(logits / T) is pi at temperature T.  Temperature is thus one direction inside the
    "final_norm" regime (training.TRAINABLE) that lesson 09 aligns: a baseline that regime can
    always reach.  The hidden states change too (by 1/T), so a scalar head read from them would
    not be tempered; only the logits are.
    """
    if not temperature > 0:
        raise ValueError(f"tempered: expected temperature > 0, got {temperature}")
    return {**params, "ln_f": jax.tree_util.tree_map(lambda x: x / temperature, params["ln_f"])}


# ----------------------------------------------------------------------------- log-probs

def token_logprobs(logits, tokens, temperature: float = 1.0):
    """logps[b, t] = log softmax(logits[b, t-1] / temperature)[tokens[b, t]], logps[:, 0] = 0.

    The log-prob is aligned with the token it scores (see the package conventions).  It is
    computed as z[y] - logsumexp(z), which never materialises the [B, T, V] log-softmax.
    logits: [B, T, V], tokens: [B, T] -> [B, T] float32.
    """
    z = at_least_f32(logits[:, :-1]) / temperature                                   # [B, T-1, V]
    picked = jnp.take_along_axis(z, tokens[:, 1:, None], axis=-1)[..., 0]             # [B, T-1]
    return jnp.pad(picked - jax.nn.logsumexp(z, axis=-1), ((0, 0), (1, 0)))           # [B, T]


def masked_sum(x, mask):
    """sum_t x[b, t] * mask[b, t] -> [B]: e.g. log pi(y|x) = sum over response tokens."""
    return jnp.sum(x * mask, axis=-1)


def sequence_logprobs(params, tokens, attention_mask, response_mask, cfg: GPTConfig,
                      temperature: float = 1.0):
    """log pi(y | x) = sum_{t in response} log pi(y_t | x, y_<t)  -> [B] (summed, not averaged)."""
    logits = forward(params, tokens, attention_mask, cfg).logits
    return masked_sum(token_logprobs(logits, tokens, temperature), response_mask)


def cross_entropy_loss(logits, tokens, loss_mask):
    """Next-token cross-entropy averaged over the tokens where loss_mask = 1:

        L = - (1/N) sum_{t: m_t=1} log softmax(z_{t-1})[x_t]

    Its gradient w.r.t. z_{t-1} is (softmax(z_{t-1}) - onehot(x_t)) m_t / N.
    """
    logps = token_logprobs(logits, tokens)                                  # [B, T]
    loss_mask = jnp.asarray(loss_mask).at[:, 0].set(0)   # column 0 has no prediction (nothing before it)
    n = jnp.maximum(loss_mask.sum(), 1)
    return -(logps * loss_mask).sum() / n


# ----------------------------------------------------------------------------- heads

def last_token_index(attention_mask):
    """Column of the last real (non-pad) token of each row, for left or right padding. -> [B]"""
    T = attention_mask.shape[-1]
    return T - 1 - jnp.argmax(attention_mask[:, ::-1] > 0, axis=-1)


def scalar_head(head, hidden):
    """s[b, t] = w . h[b, t] + b  -> [B, T] (the value head V(s_t))."""
    return at_least_f32(hidden) @ head["w"] + head["b"]


def reward_from_hidden(head, hidden, attention_mask):
    """r(x, y) = w . h_last + b, read at the last non-pad token (the eos when there is one). -> [B]"""
    idx = last_token_index(attention_mask)                                  # [B]
    h_last = jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0]  # [B, D]
    return at_least_f32(h_last) @ head["w"] + head["b"]
