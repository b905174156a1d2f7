"""The Threefry-2x32 hash written out (`threefry.threefry2x32`) and its use as jax's CPU
lowering: the published known answers, jax.random's bits against an independent NumPy hash,
and the lowering itself (no while loop left in a program that draws)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

from minirlhf.threefry import threefry2x32

KNOWN_ANSWERS = [   # Random123's kat_vectors, threefry2x32_20: key, counter -> output
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


def numpy_threefry(k1: int, k2: int, x1: np.ndarray, x2: np.ndarray):
    """Threefry-2x32, 20 rounds, in NumPy uint32 (wrap-around) arithmetic, one round at a time
    as Salmon et al. 2011 (fig. 2 and table 4) state it: the test's own reference."""
    rotations = [13, 15, 26, 6, 17, 29, 16, 24]
    ks = [np.uint32(k1), np.uint32(k2), np.uint32(k1 ^ k2 ^ 0x1BD11BDA)]
    x = [x1.astype(np.uint32) + ks[0], x2.astype(np.uint32) + ks[1]]
    for rnd in range(20):
        r = rotations[rnd % 8]
        x[0] = x[0] + x[1]
        x[1] = ((x[1] << np.uint32(r)) | (x[1] >> np.uint32(32 - r))) ^ x[0]
        if rnd % 4 == 3:                              # key injection s = 1 .. 5
            s = rnd // 4 + 1
            x[0] = x[0] + ks[s % 3]
            x[1] = x[1] + ks[(s + 1) % 3] + np.uint32(s)
    return x


@pytest.mark.parametrize("key,counter,expected", KNOWN_ANSWERS)
def test_threefry2x32_known_answers(key, counter, expected):
    """The written-out hash, and jax's primitive as lowered on this platform (jitted), both give
    the published outputs."""
    out = threefry2x32(np.uint32(key[0]), np.uint32(key[1]),
                       jnp.uint32(counter[0]), jnp.uint32(counter[1]))
    assert [int(x) for x in out] == list(expected)
    primitive = jax.jit(threefry_2x32)(jnp.asarray(key, jnp.uint32), jnp.asarray(counter, jnp.uint32))
    assert [int(x) for x in primitive] == list(expected)
    np_out = numpy_threefry(*key, np.array([counter[0]]), np.array([counter[1]]))
    assert [int(x[0]) for x in np_out] == list(expected)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_jax_random_bits_are_the_numpy_hash_of_the_counters(seed):
    """jax.random.bits (jitted, so through the registered lowering) = word 1 xor word 2 of the
    hash of counter i under the key, for every i: the partitionable layout of the draw."""
    assert jax.config.jax_threefry_partitionable
    key = jax.random.PRNGKey(seed)
    bits = np.asarray(jax.jit(lambda k: jax.random.bits(k, (1000,), jnp.uint32))(key))
    k1, k2 = (int(w) for w in np.asarray(key))
    y1, y2 = numpy_threefry(k1, k2, np.zeros(1000, np.uint32), np.arange(1000, dtype=np.uint32))
    np.testing.assert_array_equal(bits, y1 ^ y2)


def test_cpu_programs_that_draw_have_no_while_loop():
    """The hash is lowered as its rounds written out: nothing loops in a program of draws."""
    if jax.default_backend() != "cpu":
        pytest.skip("the lowering replaced is the CPU one")
    draw = lambda k: (jax.random.normal(k, (8, 8)), jax.random.randint(k, (5,), 0, 9),
                      jax.random.permutation(k, 16), jax.random.split(k, 3))
    assert "while" not in jax.jit(draw).lower(jax.random.PRNGKey(0)).as_text()
