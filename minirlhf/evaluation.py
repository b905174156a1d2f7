"""Sampling answers from a policy and scoring them with the capitals world's gold reward.

Every lesson from 02 on measures a policy the same way: sample `n` answers per prompt at
temperature 1 (the policy's own distribution, which is what PPO optimises and what a user
sees), decode them, and report the gold accuracy (right capital, no wrong one), the mean
gold reward r*, and the rate of answers that end with <eos>.  `evaluate_policy` adds the
KL to pi_ref of those same samples (`sequence_kl`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import Tokenizer

from minirlhf.model import GPTConfig, forward, token_logprobs
from minirlhf.sampling import Generation, generate
from minirlhf.tokenizer import decode_responses, encode_prompts
from minirlhf.worlds.capitals import gold_correct, gold_rewards, parse_country

PROMPT_LEN = 18       # left-padded prompt width (the longest prompt is 17 tokens with <bos>)
MAX_NEW_TOKENS = 30   # response budget: a canonical answer is ~12 tokens incl. <eos>


class Samples(NamedTuple):
    prompts: list[str]       # [B] prompt of each row (each input prompt repeated n times)
    texts: list[str]         # [B] decoded responses (up to the first eos)
    ended: np.ndarray        # [B] bool, answer ended with <eos>
    gold_reward: np.ndarray  # [B] r*(x, y)
    correct: np.ndarray      # [B] bool, gold accuracy
    generation: Generation   # the token-level result (tokens, masks, log-probs)


CHUNK_ROWS = 64   # the sampler's batch size for every evaluation (one compiled program)


def pad_rows(x, n_rows: int) -> np.ndarray:
    """x [B, ...] -> [n_rows, ...] (host numpy), the extra rows copies of the last one (a real
    prompt)."""
    x = np.asarray(x)
    return np.pad(x, ((0, n_rows - x.shape[0]),) + ((0, 0),) * (x.ndim - 1), mode="edge")


def in_chunks(fn, arrays, key=None, rows: int = CHUNK_ROWS):
    """fn(*chunk[, key_i]) on consecutive `rows`-row chunks of `arrays` (each [B, ...]; the
    last chunk padded with copies of the last row), outputs concatenated and cut back to B rows.

    Every evaluation then runs one compiled program whatever its number of rows (B = 64 is also
    where the CPU sampler's tokens/s levels off: benchmarks/bench_sampler.py).  Chunk i gets the
    key fold_in(key, i).  The chunks run concurrently (`map_concurrently`), each the same program
    on the same inputs as it would be alone.  Padding, slicing and concatenation are host-side
    numpy (the outputs are numpy arrays): the only device programs are fn's.
    """
    B = arrays[0].shape[0]
    padded = [pad_rows(x, -(-B // rows) * rows) for x in arrays]
    starts = range(0, padded[0].shape[0], rows)
    keys = [[] if key is None else [jax.random.fold_in(key, i // rows)] for i in starts]
    outs = map_concurrently(lambda i, k: fn(*[x[i:i + rows] for x in padded], *k), starts, keys)
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:B], *outs)


def worker_count() -> int:
    """Threads `map_concurrently` runs on: one per CPU core this process may use (at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


_THREAD_PREFIX = "minirlhf-chunk"


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix=_THREAD_PREFIX)


if hasattr(os, "register_at_fork"):     # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_pool.cache_clear)


def map_concurrently(fn: Callable, *iterables) -> list:
    """[fn(*args) for args in zip(*iterables)] as host numpy arrays, the calls run on
    `worker_count()` threads at once.

    Why threads: one XLA:CPU program of the decode loop keeps about one core busy (a decode
    step is a chain of small ops, too small to split across cores), and jax releases Python's
    GIL while a program runs, so programs called from different threads run on different
    cores at the same time.  Each call is the same program on the same inputs as it would be
    alone, so the results are the same bits in any order; a first call that must compile
    compiles once (jax's compilation cache is shared by the threads).  Called from one of these
    threads (a mapped call that maps in turn), it runs the calls in that thread.
    """
    calls = [lambda args=args: jax.device_get(fn(*args)) for args in zip(*iterables)]
    if len(calls) < 2 or threading.current_thread().name.startswith(_THREAD_PREFIX):
        return [call() for call in calls]      # nested in a worker: run here, never wait on the pool
    return list(_pool(worker_count()).map(lambda call: call(), calls))


def sample_answers(params, cfg: GPTConfig, tok: Tokenizer, prompts: Sequence[str], key: jax.Array,
                   n: int = 1, temperature: float = 1.0, top_k: int = 0) -> Samples:
    """Sample n answers to each prompt (rows ordered prompt-major) and score them with r*.

    The sampler runs on chunks of CHUNK_ROWS rows (`in_chunks`: the padding rows are sampled
    and dropped), so evaluations of every size share one compiled program.
    """
    rows = [p for p in prompts for _ in range(n)]
    enc = encode_prompts(tok, rows, max_len=PROMPT_LEN)
    sample = lambda tokens, mask, key_i: generate(params, tokens, mask, key_i, cfg=cfg,
                                                  max_new_tokens=MAX_NEW_TOKENS,
                                                  temperature=temperature, top_k=top_k)
    gen = Generation(*in_chunks(sample, [enc.tokens, enc.attention_mask], key))
    dec = decode_responses(tok, gen.tokens, gen.response_mask)
    countries = [parse_country(p) for p in rows]
    return Samples(rows, dec.texts, dec.ended, gold_rewards(countries, dec.texts, dec.ended),
                   gold_correct(countries, dec.texts), gen)


def gold_metrics(samples: Samples) -> dict:
    """{"gold/accuracy", "gold/reward", "gold/eos_rate"} averaged over the samples."""
    return {"gold/accuracy": float(samples.correct.mean()),
            "gold/reward": float(samples.gold_reward.mean()),
            "gold/eos_rate": float(samples.ended.mean())}


def evaluate_splits(params, cfg: GPTConfig, tok: Tokenizer, splits: dict, key: jax.Array,
                    n: int = 8, temperature: float = 1.0) -> dict:
    """gold_metrics for each split {name: prompts} -> {name: metrics}."""
    out = {}
    for name, key_i in zip(splits, jax.random.split(key, len(splits))):
        out[name] = gold_metrics(sample_answers(params, cfg, tok, splits[name], key_i, n, temperature))
    return out


@partial(jax.jit, static_argnames=("model_cfg",))
def sequence_kl(ref_params, gen: Generation, model_cfg: GPTConfig):
    """Monte-Carlo KL(pi || pi_ref) terms of sampled responses (temperature-1 samples of pi):
    sum_{t in y} log pi(y_t | .) - log pi_ref(y_t | .), with log pi from the sampler.  -> [B]."""
    ref_logps = token_logprobs(forward(ref_params, gen.tokens, gen.attention_mask, model_cfg).logits,
                               gen.tokens)
    return jnp.sum((gen.logprobs - ref_logps) * gen.response_mask, axis=1)


def samples_kl(ref_params, gen: Generation, model_cfg: GPTConfig) -> np.ndarray:
    """`sequence_kl` of any number of samples, in CHUNK_ROWS-row chunks (`in_chunks`): one
    compiled program for every evaluation of a model shape.  -> [B] numpy."""
    return in_chunks(lambda *g: sequence_kl(ref_params, Generation(*g), model_cfg), list(gen))


def evaluate_policy(params, ref_params, model_cfg: GPTConfig, tok: Tokenizer, splits: dict,
                    key: jax.Array, n: int = 8, kl_splits: Sequence[str] | None = None) -> dict:
    """{split: gold metrics of n temperature-1 samples per prompt (gold_metrics) plus
    "kl" = the mean KL(pi || pi_ref) estimate (nats per response)}.  kl_splits: the splits
    whose KL is wanted (None: every split); the others skip its pass of pi_ref over the samples."""
    out = {}
    for name, key_i in zip(splits, jax.random.split(key, len(splits))):
        samples = sample_answers(params, model_cfg, tok, splits[name], key_i, n)
        out[name] = gold_metrics(samples)
        if kl_splits is None or name in kl_splits:
            out[name]["kl"] = float(np.mean(samples_kl(ref_params, samples.generation, model_cfg),
                                            dtype=np.float64))
    return out


def format_table(results: dict, columns=("gold/accuracy", "gold/reward", "gold/eos_rate")) -> str:
    """A fixed-width table of {row: {metric: value}} for printing in lessons."""
    w = max([len(str(row)) for row in results] + [8]) + 2
    head = f"{'':<{w}}" + "".join(f"{c:>16}" for c in columns)
    lines = [head] + [f"{row:<{w}}" + "".join(f"{m[c]:>16.3f}" for c in columns)
                      for row, m in results.items()]
    return "\n".join(lines)
