"""The Threefry-2x32 hash behind every `jax.random` draw, written out, and used as jax's CPU
lowering of it.

jax draws random bits by hashing counters under the key with Threefry-2x32 (Salmon et al. 2011,
"Parallel random numbers: as easy as 1, 2, 3"): `split`, `fold_in`, `normal`, `randint`,
`permutation` and `categorical` all come down to this one primitive.  On the CPU jax lowers its
20 rounds as a 5-step while loop, 4 rounds per step, each step a pass over the whole array, and
XLA compiles each such loop, body and all, into the program that draws.
`use_unrolled_lowering` (called when minirlhf is imported) lowers the hash as the 20 rounds
written out instead, as jax already does on GPUs.  These are the same integer operations in the
same order, so every draw gives the same bits.  XLA fuses the rounds into one elementwise loop,
which compiles faster: about 2.5x faster for the exact world's construction, which draws three
times (benchmarks/bench_threefry.py compares the two lowerings).
"""

from __future__ import annotations

import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir


def threefry2x32(k1, k2, x1, x2):
    """The Threefry-2x32 block cipher, 20 rounds: key words k1, k2 (uint32) encrypt the counter
    pairs (x1, x2) (uint32 arrays, one shape) -> two uint32 arrays.

    Rounds of  x1 += x2;  x2 = rotl(x2, r) ^ x1  with rotations r cycling through (13, 15, 26, 6)
    and (17, 29, 16, 24); every 4 rounds the key schedule (k1, k2, k1 ^ k2 ^ 0x1BD11BDA) is
    added, with the group number.  Written with plain integer ops, so XLA fuses the whole hash.
    """
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for group in range(5):
        for r in rotations[group % 2]:
            x1 = x1 + x2
            x2 = x1 ^ ((x2 << np.uint32(r)) | (x2 >> np.uint32(32 - r)))
        x1 = x1 + ks[(group + 1) % 3]
        x2 = x2 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x1, x2


def use_unrolled_lowering() -> None:
    """Lower jax's threefry2x32 primitive on the CPU as `threefry2x32` (the rounds written
    out) instead of jax's rolled loop; other platforms keep their own lowering."""
    mlir.register_lowering(threefry2x32_p, mlir.lower_fun(threefry2x32, multiple_results=True),
                           platform="cpu")
