"""Configs and a timer shared by the benchmark scripts."""
import time

import jax
import numpy as np

from minirlhf.model import GPTConfig


def gpt2_small(attention: str) -> GPTConfig:
    """GPT-2 small (124M): 12 layers, d=768, 12 heads, T=1024, vocab padded to 50304, bf16 compute."""
    return GPTConfig(vocab_size=50304, max_len=1024, n_layer=12, n_head=12, d_model=768,
                     attention=attention, compute_dtype="bfloat16")


def timed(fn, repeats: int):
    """(seconds of the first call, median seconds of `repeats` further calls, last result)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), out
