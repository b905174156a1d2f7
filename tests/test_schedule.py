"""The learning-rate schedule of `training.make_optimizer`, against its equation, and its numbers
as inputs of the compiled step (runs differing only in them compile one program)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minirlhf import model
from minirlhf.pretrain import lm_loss
from minirlhf.training import init_train_state, make_optimizer, make_train_step, warmup_cosine


def schedule_by_hand(t: int, peak: float, w: int, total: int) -> float:
    """Linear warmup to peak over w steps, then cosine from peak to 0.1 peak at `total`."""
    if t < w:
        return peak * t / w
    progress = min(t - w, total - w) / (total - w)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize(("peak", "w", "total"), [(3e-3, 20, 500), (1e-3, 20, 150), (1e-3, 1, 10)])
def test_warmup_cosine_is_the_equation(peak, w, total):
    for t in [0, 1, w // 2, w - 1, w, w + 1, total // 2, total - 1, total, total + 7]:
        got = float(warmup_cosine(t, peak, w, total))
        assert got == pytest.approx(schedule_by_hand(t, peak, w, total), rel=1e-5, abs=1e-12)
        reference = optax.warmup_cosine_decay_schedule(0.0, peak, w, total, end_value=0.1 * peak)
        assert got == pytest.approx(float(reference(t)), rel=1e-5, abs=1e-12)


@pytest.mark.parametrize(("peak", "w", "total"), [(3e-3, 20, 500), (1e-3, 20, 150), (1e-3, 1, 10)])
def test_traced_schedule_is_optax_bit_for_bit(peak, w, total):
    """Compiled with traced numbers, the same float32 values as optax's schedule compiled with
    constant ones: moving the numbers into the optimizer state changes no training run."""
    counts = jnp.arange(total + 3, dtype=jnp.int32)
    reference = optax.warmup_cosine_decay_schedule(0.0, peak, w, total, end_value=0.1 * peak)
    want = jax.jit(jax.vmap(reference))(counts)
    got = jax.jit(jax.vmap(warmup_cosine, in_axes=(0, None, None, None)))(
        counts, jnp.float32(peak), jnp.int32(w), jnp.int32(total))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    scalar_ref, scalar = jax.jit(reference), jax.jit(warmup_cosine)   # as in a train step
    got = [scalar(c, jnp.float32(peak), jnp.int32(w), jnp.int32(total)) for c in counts]
    want = [scalar_ref(c) for c in counts]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_the_optimizer_steps_with_the_schedule():
    """The first AdamW update's size is lr(0) = 0 (warmup), the second's about lr(1)."""
    params = {"w": np.ones(3, np.float32)}
    opt = make_optimizer(0.1, total_steps=10, warmup_steps=2)
    state = opt.init(params)
    grads = {"w": np.array([1.0, -2.0, 0.5], np.float32)}
    sizes = []
    for _ in range(2):
        updates, state = opt.update(grads, state, params)
        sizes.append(np.abs(np.asarray(updates["w"])))
    np.testing.assert_allclose(sizes[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(sizes[1], schedule_by_hand(1, 0.1, 2, 10), rtol=1e-3)   # Adam: |u| ~ lr


CFG = model.GPTConfig(vocab_size=32, max_len=8, n_layer=1, n_head=2, d_model=16)


def test_runs_differing_in_hyperparameters_share_one_program():
    cfg = CFG
    params = model.init_params(jax.random.PRNGKey(0), cfg)
    batch = {k: np.ones((2, 8), np.int32) for k in ("tokens", "attention_mask", "loss_mask")}
    texts = []
    for lr, steps, wd in [(3e-3, 500, 0.01), (1e-3, 150, 0.0)]:
        opt = make_optimizer(lr, steps, weight_decay=wd, traced=True)
        step = make_train_step(lambda p, b: lm_loss(p, b, cfg), opt)
        texts.append(step.lower(init_train_state(params, opt), batch).as_text(debug_info=False))
    assert texts[0] == texts[1]


@pytest.mark.parametrize(("lr", "steps", "wd"), [(3e-3, 40, 0.01), (1e-3, 30, 0.0)])
def test_the_lm_step_trains_the_same_with_traced_hyperparameters(lr, steps, wd):
    """pretrain.lm_train_step's traced optimizer gives the constant one's weights, bit for bit,
    through warmup and decay."""
    params = model.init_params(jax.random.PRNGKey(1), CFG)
    rng = np.random.default_rng(1)
    batch = {"tokens": rng.integers(3, CFG.vocab_size, (4, 8)).astype(np.int32),
             "attention_mask": np.ones((4, 8), np.int32),
             "loss_mask": (rng.random((4, 8)) < 0.7).astype(np.int32)}
    trained = []
    for traced in (False, True):
        opt = make_optimizer(lr, steps, warmup_steps=5, weight_decay=wd, traced=traced)
        step, state = make_train_step(lambda p, b: lm_loss(p, b, CFG), opt), init_train_state(params, opt)
        for _ in range(steps):
            state, _ = step(state, batch)
        trained.append(jax.tree_util.tree_leaves(state.params))
    for a, b in zip(*trained):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
