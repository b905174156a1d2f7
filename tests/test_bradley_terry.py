"""Bradley-Terry loss: value, closed-form gradients, invariances and stability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.bradley_terry import bradley_terry_loss


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_loss_is_negative_mean_log_sigmoid_of_margin():
    r_w = np.array([0.3, -1.2, 2.0, 0.0])
    r_l = np.array([-0.5, 0.4, 1.0, 0.0])
    loss, m = bradley_terry_loss(jnp.asarray(r_w), jnp.asarray(r_l))
    expected = -np.mean(np.log(_sigmoid(r_w - r_l)))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert m["loss"] == loss
    np.testing.assert_allclose(m["accuracy"], 0.5)  # pairs 0 and 2 correct, 3 tied
    np.testing.assert_allclose(m["margin"], np.mean(r_w - r_l), rtol=1e-6)
    np.testing.assert_allclose(m["mean_reward"], np.mean(np.r_[r_w, r_l]), rtol=1e-6)
    np.testing.assert_allclose(m["min_reward"], -1.2)
    np.testing.assert_allclose(m["max_reward"], 2.0)


def test_equal_rewards_give_log_2():
    loss, _ = bradley_terry_loss(jnp.full(5, 0.7), jnp.full(5, 0.7))
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)


def test_gradients_match_closed_form():
    rng = np.random.default_rng(0)
    r_w, r_l = rng.normal(size=8), rng.normal(size=8)
    g_w, g_l = jax.grad(lambda a, b: bradley_terry_loss(a, b)[0], argnums=(0, 1))(
        jnp.asarray(r_w), jnp.asarray(r_l))
    B = len(r_w)
    # dL/dr_w,i = -sigmoid(r_l,i - r_w,i) / B ;  dL/dr_l,i = +sigmoid(r_l,i - r_w,i) / B
    np.testing.assert_allclose(g_w, -_sigmoid(r_l - r_w) / B, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_l, +_sigmoid(r_l - r_w) / B, rtol=1e-5, atol=1e-7)


def test_invariant_to_adding_a_constant():
    rng = np.random.default_rng(1)
    r_w, r_l = jnp.asarray(rng.normal(size=6)), jnp.asarray(rng.normal(size=6))
    base, _ = bradley_terry_loss(r_w, r_l)
    shifted, _ = bradley_terry_loss(r_w + 37.5, r_l + 37.5)
    np.testing.assert_allclose(base, shifted, rtol=1e-5)


@pytest.mark.parametrize("margin", [100.0, -100.0])
def test_finite_values_and_gradients_at_extreme_margins(margin):
    r_w, r_l = jnp.array([margin]), jnp.array([0.0])
    (loss, _), grads = jax.value_and_grad(
        lambda a, b: bradley_terry_loss(a, b), argnums=(0, 1), has_aux=True)(r_w, r_l)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(loss, max(-margin, 0.0), atol=1e-6)  # -log sigmoid(m) ~ relu(-m)
    np.testing.assert_allclose(grads[0], [-_sigmoid(-margin)], atol=1e-7)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="chosen_rewards"):
        bradley_terry_loss(jnp.zeros(3), jnp.zeros(4))
