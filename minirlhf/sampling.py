"""Sampling from the GPT with a KV cache inside `lax.scan`.

Prompts are LEFT-padded (`tokenizer.encode_prompts`), so every row's next token
goes into the same column: at step i all rows write column P + i.  Position ids
come from the attention mask (pos = number of real tokens before), so a short
prompt padded on the left sees exactly the positions it would see alone.

Key/value cache: for every layer we keep k, v for all P + N columns, head-major
(L arrays [B, H, P+N, Dh]: see `prefill_cache`); step i computes q, k, v for the
one new token, writes k, v into column P + i in place, and attends over the cache
(pads and future columns masked).
Without the cache each new token would recompute the whole prefix:
O(T^2) work per sequence instead of O(T) (see benchmarks/bench_model.py).

Stopping: once a row has produced <eos> it emits <pad> with mask 0 from then on.

What keeps a decode step small (one step is a few small matmuls, so anything else in the loop
body shows; benchmarks/bench_sampler.py measures the sampler):
  * Sampling noise drawn before the loop.  `jax.random.categorical(key, logp)` is
    argmax(logp + g) with g = `jax.random.gumbel(key, logp.shape)` (the Gumbel-max trick).  The N
    per-step keys are the same chain of `key, sub = split(key)` as a per-step draw would use, so
    all steps' g [N, B, V] are drawn in one vectorised pass (`jax.random.gumbel` vmapped over the
    keys) and step i only adds g[i]: the same tokens as drawing inside the loop (g takes
    N * B * V floats: as much memory as the logits of one forward pass over the B responses).
    XLA fuses the draw into one loop: minirlhf has jax lower its Threefry hash as the rounds
    written out (threefry.py).
  * The per-layer weights are sliced out of the stacked [L, ...] arrays and W_te is transposed
    once, before the loop (`decode_params`): inside the loop body each slice would be a copy of
    that layer's weights at every step.
  * The argmax is max, then the first index equal to it (`first_argmax`): two plain reductions
    instead of XLA's slower (value, index) pair reduction; the same index as `jnp.argmax`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from minirlhf.fused_attention import fused_attention
from minirlhf.model import (
    NEG_INF,
    GPTConfig,
    at_least_f32,
    forward,
    layer_norm,
    mlp,
    out_proj,
    positions_from_mask,
    qkv_proj,
    unembed,
)

PAD_ID, EOS_ID = 0, 2


class Generation(NamedTuple):
    tokens: jax.Array          # [B, P+N] left-padded prompt, then the sampled response
    attention_mask: jax.Array  # [B, P+N] 1 on prompt and response tokens (incl. eos)
    response_mask: jax.Array   # [B, P+N] 1 on response tokens (incl. eos), 0 elsewhere
    logprobs: jax.Array        # [B, P+N] log-prob of each sampled token under the sampling
                               #          distribution (0 outside the response)


def sampling_logprobs(logits, temperature: float, top_k: int):
    """log softmax(logits / T) restricted to the top-k logits (top_k = 0: no restriction), the
    distribution `sample_token` draws from: logits [B, V] -> log-probs [B, V] in >= float32
    (-inf outside the top k).  temperature = 0 (greedy) gives the log-probs at temperature 1."""
    logits = at_least_f32(logits)
    if temperature == 0.0:
        return jax.nn.log_softmax(logits, axis=-1)
    logits = logits / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]                      # [B, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.nn.log_softmax(logits, axis=-1)                               # [B, V]


def sample_token(key, logits, temperature: float, top_k: int):
    """Draw y ~ softmax(logits / T) restricted to the top-k logits (top_k = 0: no restriction).

    temperature = 0 means greedy decoding (argmax).  Returns (token [B], log-prob [B]) where the
    log-prob is under the distribution actually sampled from (temperature-scaled, top-k
    renormalised); for greedy decoding it is the log-prob at temperature 1.
    """
    logp = sampling_logprobs(logits, temperature, top_k)
    if temperature == 0.0:
        token = jnp.argmax(at_least_f32(logits), axis=-1)
    else:
        token = jax.random.categorical(key, logp, axis=-1)
    return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def first_argmax(z):
    """jnp.argmax(z, -1) for z without NaN: the first index where z equals its row maximum.
    z [B, V] -> [B] int32."""
    is_max = z == jnp.max(z, axis=-1, keepdims=True)                           # [B, V]
    return jnp.min(jnp.where(is_max, jnp.arange(z.shape[-1], dtype=jnp.int32), z.shape[-1]), axis=-1)


def step_keys(key, n: int):
    """The keys `sub` of n successive `key, sub = jax.random.split(key)`: [n, *key.shape]."""
    return jax.lax.scan(lambda k, _: tuple(jax.random.split(k)), key, None, length=n)[1]


def prefill_cache(kv, max_new_tokens: int):
    """The forward pass's (k, v), each [L, B, P, H, Dh], as the decode cache: a tuple of L
    head-major arrays [B, H, P+N, Dh] for k and another for v, columns P.. zero until written.

    Head-major puts one head's keys for all S columns in one contiguous [S, Dh] slab, so a decode
    step's q.k and weights.v are plain batched matrix-vector products over contiguous memory.
    One array per layer (not one stacked [L, ...] array) lets each layer's attention read its
    cache without slicing a copy out of the stack.
    """
    pad = ((0, 0), (0, 0), (0, max_new_tokens), (0, 0))
    to_cache = lambda x: tuple(jnp.pad(x_l.transpose(0, 2, 1, 3), pad) for x_l in x)
    return to_cache(kv[0]), to_cache(kv[1])                     # each L x [B, H, S, Dh]


def attend_cached(q, k_cache, v_cache, key_mask, cfg: GPTConfig):
    """One query per row against the cache: softmax(q k^T / sqrt(d_head) + mask) v (Vaswani et
    al. 2017, eq. 1), the same numbers as `model.attend(..., causal=False)` with Tq = 1.

    q: [B, H, Dh], k_cache, v_cache: [B, H, S, Dh] (head-major), key_mask: [B, S] -> [B, H, Dh].
    """
    if cfg.attention == "fused":   # the GPU path takes [B, T, H, Dh]
        kt, vt = k_cache.transpose(0, 2, 1, 3), v_cache.transpose(0, 2, 1, 3)
        return fused_attention(q[:, None], kt, vt, key_mask, causal=False)[:, 0]
    scores = jnp.einsum("bhd,bhsd->bhs", q, k_cache,
                        preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))  # [B, H, S]
    scores = scores / math.sqrt(q.shape[-1])
    scores = jnp.where((key_mask > 0)[:, None, :], scores, NEG_INF)                 # pads, future
    weights = jax.nn.softmax(scores, axis=-1).astype(v_cache.dtype)                 # [B, H, S]
    return jnp.einsum("bhs,bhsd->bhd", weights, v_cache)                            # [B, H, Dh]


def decode_params(params: dict) -> dict:
    """The GPT's parameters as `decode_step` reads them fastest: "blocks" as a tuple of L
    per-layer dicts (sliced out of the stacked [L, ...] leaves) and "wte_t" = W_te^T [D, V] for
    the unembedding.  Made once per `generate` call, outside its decode loop."""
    L = params["blocks"]["w_qkv"].shape[0]
    blocks = tuple(jax.tree_util.tree_map(lambda a, l=l: a[l], params["blocks"]) for l in range(L))
    return {**params, "blocks": blocks, "wte_t": params["wte"].T}


def decode_step(params, token, pos, col, cache, key_mask, cfg: GPTConfig):
    """Run one new token per row through the GPT using (and filling) the KV cache.

    params: the GPT's parameters, stacked as `init_params` makes them or laid out by
    `decode_params` (same numbers); token, pos: [B]; col: scalar column being written; cache:
    (k, v), each a tuple of L head-major arrays [B, H, S, Dh] (`prefill_cache`); key_mask: [B, S]
    (1 where a cached key is real; column `col` is included).  Returns (logits [B, V], hidden
    [B, D], new cache).

    Column `col` is written with dynamic_update_slice: inside `generate`'s scan the cache is
    the loop carry, which XLA updates in place (no per-step copy of the cache).  The layers run
    as a Python loop whatever `cfg.unroll_layers` says: one token per row is a small program.
    """
    dtype = jnp.dtype(cfg.compute_dtype)
    blocks = params["blocks"]
    if isinstance(blocks, dict):                                   # stacked [L, ...] leaves
        blocks = [jax.tree_util.tree_map(lambda a, l=l: a[l], blocks) for l in range(cfg.n_layer)]
    x = (params["wte"][token] + params["wpe"][pos]).astype(dtype)              # [B, D]
    k_cache, v_cache = list(cache[0]), list(cache[1])
    for l, p in enumerate(blocks):
        q, k, v = qkv_proj(layer_norm(x, p["ln1"])[:, None], p, cfg)           # [B, 1, H, Dh]
        write = lambda c, new: jax.lax.dynamic_update_slice(                   # column col
            c, new.swapaxes(1, 2).astype(c.dtype), (0, 0, col, 0))             # [B, H, 1, Dh]
        k_cache[l], v_cache[l] = write(k_cache[l], k), write(v_cache[l], v)
        a = attend_cached(q[:, 0], k_cache[l], v_cache[l], key_mask, cfg)      # [B, H, Dh]
        x = x + out_proj(a[:, None], p)[:, 0]                                  # [B, D]
        x = x + mlp(layer_norm(x, p["ln2"])[:, None], p)[:, 0]
    h = layer_norm(at_least_f32(x), params["ln_f"])                            # [B, D] fp32
    if "wte_t" in params:   # = unembed: h W_te^T, with W_te^T laid out [D, V] once
        logits = at_least_f32(h.astype(dtype) @ params["wte_t"].astype(dtype))  # [B, V]
    else:
        logits = unembed(params, h, cfg)
    return logits, h, (tuple(k_cache), tuple(v_cache))


@partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "temperature", "top_k"))
def generate(params, prompt_tokens, prompt_mask, key, *, cfg: GPTConfig, max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0) -> Generation:
    """Sample up to `max_new_tokens` tokens per prompt with a KV cache inside `lax.scan`.

    prompt_tokens, prompt_mask: [B, P] LEFT-padded (`<bos> prompt`; the last column must be a real
    token of every row, since its logits give the first sampled token); key: PRNG key (required).
    """
    B, P = prompt_tokens.shape
    N, S = max_new_tokens, prompt_tokens.shape[1] + max_new_tokens
    if S > cfg.max_len:
        raise ValueError(f"generate: prompt length {P} + max_new_tokens {N} exceeds max_len={cfg.max_len}")
    # 1. prefill: one forward pass over the prompt gives its KV cache and the first logits.
    out = forward(params, prompt_tokens, prompt_mask, cfg)
    cache = prefill_cache(out.kv, N)                                  # (k, v): L x [B, H, S, Dh]
    key_mask = jnp.pad(prompt_mask, ((0, 0), (0, N)))                           # [B, S]
    pos0 = positions_from_mask(prompt_mask)[:, -1] + 1                          # [B] next position

    # 2. the sampling noise of all N steps, drawn before the loop (module docstring).
    greedy = temperature == 0.0
    logits0 = out.logits[:, -1]                                                  # [B, V]
    if greedy:
        noise = jnp.zeros((N, 0), logits0.dtype)                                # unused
    else:
        noise = jax.vmap(lambda k: jax.random.gumbel(k, logits0.shape, logits0.dtype))(
            step_keys(key, N))                                                  # [N, B, V]
    dparams = decode_params(params)

    # 3. decode: sample a token, feed it back, N times.
    def step(carry, xs):
        i, g = xs
        logits, cache, key_mask, done = carry
        logp = sampling_logprobs(logits, temperature, top_k)                    # [B, V]
        # greedy: argmax of the logits; else Gumbel-max, = jax.random.categorical(sub_i, logp)
        token = first_argmax(at_least_f32(logits) if greedy else logp + g)      # [B]
        logp = jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]         # [B]
        alive = ~done                                                           # row still generating
        token = jnp.where(alive, token, PAD_ID)
        col = P + i
        key_mask = key_mask.at[:, col].set(alive.astype(key_mask.dtype))
        # a finished row keeps running (static shapes); let it see its own column so its
        # attention row is never empty.  Nothing ever reads what it computes.
        step_mask = key_mask.at[:, col].set(1)
        logits, _, cache = decode_step(dparams, token, pos0 + i, col, cache, step_mask, cfg)
        done = done | (token == EOS_ID)
        return (logits, cache, key_mask, done), (token, jnp.where(alive, logp, 0.0), alive)

    init = (logits0, cache, key_mask, jnp.zeros((B,), bool))
    _, (toks, logps, alive) = jax.lax.scan(step, init, (jnp.arange(N), noise))  # each [N, B]
    resp_mask = alive.T.astype(prompt_mask.dtype)                               # [B, N]
    tokens = jnp.concatenate([prompt_tokens, toks.T.astype(prompt_tokens.dtype)], axis=1)
    return Generation(
        tokens=tokens,
        attention_mask=jnp.concatenate([prompt_mask, resp_mask], axis=1),
        response_mask=jnp.concatenate([jnp.zeros_like(prompt_mask), resp_mask], axis=1),
        logprobs=jnp.concatenate([jnp.zeros((B, P), jnp.float32), logps.T], axis=1),
    )


@partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "temperature", "top_k"))
def generate_without_cache(params, prompt_tokens, prompt_mask, key, *, cfg: GPTConfig,
                           max_new_tokens: int, temperature: float = 1.0, top_k: int = 0) -> Generation:
    """The same sampler, but every step recomputes the full forward pass over the whole buffer.

    Exists to measure what the KV cache buys (benchmarks) and to test `generate` against.
    """
    B, P = prompt_tokens.shape
    N = max_new_tokens
    tokens = jnp.pad(prompt_tokens, ((0, 0), (0, N)))
    mask = jnp.pad(prompt_mask, ((0, 0), (0, N)))

    def step(carry, i):
        tokens, mask, done, key = carry
        key, sub = jax.random.split(key)
        logits = forward(params, tokens, mask, cfg).logits                    # [B, S, V]
        last = jax.lax.dynamic_index_in_dim(logits, P + i - 1, axis=1, keepdims=False)
        token, logp = sample_token(sub, last, temperature, top_k)
        alive = ~done
        token = jnp.where(alive, token, PAD_ID)
        tokens = tokens.at[:, P + i].set(token.astype(tokens.dtype))
        mask = mask.at[:, P + i].set(alive.astype(mask.dtype))
        return (tokens, mask, done | (token == EOS_ID), key), (jnp.where(alive, logp, 0.0), alive)

    (tokens, mask, _, _), (logps, alive) = jax.lax.scan(
        step, (tokens, mask, jnp.zeros((B,), bool), key), jnp.arange(N))
    resp_mask = alive.T.astype(prompt_mask.dtype)
    return Generation(tokens, mask, jnp.concatenate([jnp.zeros_like(prompt_mask), resp_mask], axis=1),
                      jnp.concatenate([jnp.zeros((B, P), jnp.float32), logps.T], axis=1))
