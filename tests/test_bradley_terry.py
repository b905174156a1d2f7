"""Bradley-Terry loss: value, closed-form gradients, invariances and stability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.bradley_terry import bradley_terry_loss, grouped_bradley_terry_loss


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


# ----------------------------------------------------------------------------- K-wise groups


def _random_groups(rng, G=5, K=4):
    """Rewards [G, K] and a comparison matrix W[g, i, j] = 1 when response i beat j: each pair
    of a group compared at most once, some never, one group with no comparison at all."""
    rewards = rng.normal(size=(G, K))
    wins = np.zeros((G, K, K))
    for g in range(G - 1):
        for i in range(K):
            for j in range(i + 1, K):
                u = rng.random()
                if u < 0.4:
                    wins[g, i, j] = 1
                elif u < 0.8:
                    wins[g, j, i] = 1
    wins[0] = 0
    wins[0, 1, 2] = 1             # group 0: a single comparison
    return rewards, wins          # group G - 1: none


def _loop_loss(rewards, wins):
    """InstructGPT eq. 1, one group at a time: -1/|C_g| sum_{(w, l) in C_g} log sigmoid(r_w - r_l),
    averaged over the groups that hold at least one comparison."""
    per_group = []
    for r, w in zip(rewards, wins):
        terms = [-np.log(_sigmoid(r[i] - r[j])) for i in range(len(r)) for j in range(len(r)) if w[i, j]]
        if terms:
            per_group.append(np.mean(terms))
    return np.mean(per_group)


def test_grouped_loss_equals_the_loop_over_comparisons():
    rewards, wins = _random_groups(np.random.default_rng(2))
    loss, m = grouped_bradley_terry_loss(jnp.asarray(rewards), jnp.asarray(wins))
    np.testing.assert_allclose(loss, _loop_loss(rewards, wins), rtol=1e-6)
    g, i, j = np.nonzero(wins)
    margins = rewards[g, i] - rewards[g, j]
    np.testing.assert_allclose(m["accuracy"], np.mean(margins > 0), rtol=1e-6)
    np.testing.assert_allclose(m["margin"], np.mean(margins), rtol=1e-6)


def test_grouped_loss_with_groups_of_two_is_the_pair_loss():
    rng = np.random.default_rng(3)
    r_w, r_l = rng.normal(size=7), rng.normal(size=7)
    wins = np.zeros((7, 2, 2))
    wins[:, 0, 1] = 1
    grouped, _ = grouped_bradley_terry_loss(jnp.asarray(np.stack([r_w, r_l], 1)), jnp.asarray(wins))
    pair, _ = bradley_terry_loss(jnp.asarray(r_w), jnp.asarray(r_l))
    np.testing.assert_allclose(grouped, pair, rtol=1e-6)


def test_grouped_gradient_matches_closed_form():
    rewards, wins = _random_groups(np.random.default_rng(4))
    grad = jax.grad(lambda r: grouped_bradley_terry_loss(r, jnp.asarray(wins))[0])(jnp.asarray(rewards))
    # dL/dr_gi = 1/(n_groups |C_g|) sum_j [ -W_gij sigmoid(r_gj - r_gi) + W_gji sigmoid(r_gi - r_gj) ]
    n_g = wins.sum((1, 2))
    n_groups = np.sum(n_g > 0)
    d = rewards[:, None, :] - rewards[:, :, None]                    # [G, K, K]: r_j - r_i at [g, i, j]
    expected = (-(wins * _sigmoid(d)).sum(2) + (wins.transpose(0, 2, 1) * _sigmoid(-d)).sum(2))
    expected = expected / np.maximum(n_g, 1)[:, None] / n_groups
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert np.all(grad[-1] == 0)                                     # the group with no comparison


def test_grouped_loss_is_finite_at_extreme_margins_and_rejects_bad_shapes():
    wins = jnp.asarray([[[0.0, 1.0], [0.0, 0.0]]])
    for margin in (100.0, -100.0):
        loss, grad = jax.value_and_grad(lambda r: grouped_bradley_terry_loss(r, wins)[0])(
            jnp.asarray([[margin, 0.0]]))
        assert np.isfinite(loss) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="wins"):
        grouped_bradley_terry_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3, 2)))
