"""Sampling answers from a policy and scoring them with the capitals world's gold reward.

Every lesson from 02 on measures a policy the same way: sample `n` answers per prompt at
temperature 1 (the policy's own distribution, which is what PPO optimises and what a user
sees), decode them, and report the gold accuracy (right capital, no wrong one), the mean
gold reward r*, and the rate of answers that end with <eos>.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from tokenizers import Tokenizer

from minirlhf.model import GPTConfig
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


def sample_answers(params, cfg: GPTConfig, tok: Tokenizer, prompts: Sequence[str], key: jax.Array,
                   n: int = 1, temperature: float = 1.0, top_k: int = 0) -> Samples:
    """Sample n answers to each prompt (rows ordered prompt-major) and score them with r*."""
    rows = [p for p in prompts for _ in range(n)]
    enc = encode_prompts(tok, rows, max_len=PROMPT_LEN)
    gen = generate(params, enc.tokens, enc.attention_mask, key, cfg=cfg,
                   max_new_tokens=MAX_NEW_TOKENS, temperature=temperature, top_k=top_k)
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


def format_table(results: dict, columns=("gold/accuracy", "gold/reward", "gold/eos_rate")) -> str:
    """A fixed-width table of {row: {metric: value}} for printing in lessons."""
    w = max([len(str(row)) for row in results] + [8]) + 2
    head = f"{'':<{w}}" + "".join(f"{c:>16}" for c in columns)
    lines = [head] + [f"{row:<{w}}" + "".join(f"{m[c]:>16.3f}" for c in columns)
                      for row, m in results.items()]
    return "\n".join(lines)
