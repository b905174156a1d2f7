"""Sampling from the GPT with a KV cache inside `lax.scan`.

Prompts are LEFT-padded (`tokenizer.encode_prompts`), so every row's next token
goes into the same column: at step i all rows write column P + i.  Position ids
come from the attention mask (pos = number of real tokens before), so a short
prompt padded on the left sees exactly the positions it would see alone.

Key/value cache: for every layer we keep k, v for all P + N columns
([L, B, P+N, H, Dh]); step i computes q, k, v for the one new token, writes k, v
into column P + i, and attends over the cache (pads and future columns masked).
Without the cache each new token would recompute the whole prefix:
O(T^2) work per sequence instead of O(T) (see benchmarks/bench_model.py).

Stopping: once a row has produced <eos> it emits <pad> with mask 0 from then on.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from minirlhf.model import (
    GPTConfig,
    at_least_f32,
    attend,
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


def sample_token(key, logits, temperature: float, top_k: int):
    """Draw y ~ softmax(logits / T) restricted to the top-k logits (top_k = 0: no restriction).

    temperature = 0 means greedy decoding (argmax).  Returns (token [B], log-prob [B]) where the
    log-prob is under the distribution actually sampled from (temperature-scaled, top-k
    renormalised); for greedy decoding it is the log-prob at temperature 1.
    """
    logits = at_least_f32(logits)
    if temperature == 0.0:
        token = jnp.argmax(logits, axis=-1)
        logp = jax.nn.log_softmax(logits, axis=-1)
    else:
        logits = logits / temperature
        if top_k > 0:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]                  # [B, 1]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        logp = jax.nn.log_softmax(logits, axis=-1)                           # [B, V]
        token = jax.random.categorical(key, logp, axis=-1)
    return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def decode_step(params, token, pos, col, cache, key_mask, cfg: GPTConfig):
    """Run one new token per row through the GPT using (and filling) the KV cache.

    token, pos: [B]; col: scalar column being written; cache: (k, v) each [L, B, S, H, Dh];
    key_mask: [B, S] (1 where a cached key is real; column `col` is included).
    Returns (logits [B, V], hidden [B, D], new cache).
    """
    dtype = jnp.dtype(cfg.compute_dtype)
    x = (params["wte"][token] + params["wpe"][pos])[:, None].astype(dtype)    # [B, 1, D]

    def layer(x, layer_in):
        p, k_cache, v_cache = layer_in                                         # [B, S, H, Dh]
        q, k, v = qkv_proj(layer_norm(x, p["ln1"]), p, cfg)                    # [B, 1, H, Dh]
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), col, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), col, axis=1)
        x = x + out_proj(attend(q, k_cache, v_cache, key_mask, cfg, causal=False), p)
        x = x + mlp(layer_norm(x, p["ln2"]), p)
        return x, (k_cache, v_cache)

    x, cache = jax.lax.scan(layer, x, (params["blocks"], *cache), unroll=cfg.unroll_layers)
    h = layer_norm(at_least_f32(x[:, 0]), params["ln_f"])               # [B, D] fp32
    return unembed(params, h, cfg), h, cache                                       # [B, V]


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
    pad_cache = lambda kv: jnp.pad(kv, ((0, 0), (0, 0), (0, N), (0, 0), (0, 0)))
    cache = (pad_cache(out.kv[0]), pad_cache(out.kv[1]))                      # [L, B, S, H, Dh]
    key_mask = jnp.pad(prompt_mask, ((0, 0), (0, N)))                           # [B, S]
    pos0 = positions_from_mask(prompt_mask)[:, -1] + 1                          # [B] next position

    # 2. decode: sample a token, feed it back, N times.
    def step(carry, i):
        logits, cache, key_mask, done, key = carry
        key, sub = jax.random.split(key)
        token, logp = sample_token(sub, logits, temperature, top_k)
        alive = ~done                                                           # row still generating
        token = jnp.where(alive, token, PAD_ID)
        col = P + i
        key_mask = key_mask.at[:, col].set(alive.astype(key_mask.dtype))
        # a finished row keeps running (static shapes); let it see its own column so its
        # attention row is never empty.  Nothing ever reads what it computes.
        step_mask = key_mask.at[:, col].set(1)
        logits, _, cache = decode_step(params, token, pos0 + i, col, cache, step_mask, cfg)
        done = done | (token == EOS_ID)
        return (logits, cache, key_mask, done, key), (token, jnp.where(alive, logp, 0.0), alive)

    init = (out.logits[:, -1], cache, key_mask, jnp.zeros((B,), bool), key)
    _, (toks, logps, alive) = jax.lax.scan(step, init, jnp.arange(N))           # each [N, B]
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
