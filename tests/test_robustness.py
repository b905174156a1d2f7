"""Bad input, clashing runs and numerical edges: each case ends in a finite answer with the
right gradient, or in one clear error naming the file and line (or the stage and step)."""


import jax
import jax.numpy as jnp
import numpy as np

from minirlhf import ppo

# ----------------------------------------------------------------------------- PPO's losses at the edges
#
# The clipped surrogate written out per token (Schulman et al. 2017, eq. 7), in float64 NumPy:
#     term_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps)),  loss = sum_valid term_t / n
#     d loss / d log pi_t = -A_t rho_t / n where the unclipped term is the max, else 0.


def surrogate_reference(logratio, adv, valid, eps):
    rho = np.exp(np.where(valid, logratio, 0.0))
    a = np.where(valid, adv, 0.0)
    term = np.maximum(-a * rho, -a * np.clip(rho, 1 - eps, 1 + eps))
    n = valid.sum()
    clipped = ((a > 0) & (rho > 1 + eps)) | ((a < 0) & (rho < 1 - eps)) | (a == 0)
    grad = np.where(valid & ~clipped, -a * rho / n, 0.0)
    return np.sum(np.where(valid, term, 0.0)) / n, grad


def _policy_loss_and_grad(new, old, adv, mask, eps):
    def f(lp):
        return ppo.policy_loss(lp[None], jnp.asarray(old, jnp.float32)[None],
                               jnp.asarray(adv, jnp.float32)[None],
                               jnp.asarray(mask, jnp.float32)[None], eps)[0]
    loss, grad = jax.value_and_grad(f)(jnp.asarray(new, jnp.float32))
    return float(loss), np.asarray(grad)


def test_policy_loss_huge_log_ratio_where_clipped_gives_finite_loss_and_zero_gradient():
    eps = 0.2
    old = np.full(6, -3.0)
    logratio = np.array([100.0, 95.0, 0.1, -0.4, 0.05, -100.0])   # exp(100) overflows float32
    adv = np.array([1.5, 0.0, -0.7, 0.8, 2.0, -1.0])                # clipped, A=0, ..., clipped
    loss, grad = _policy_loss_and_grad(old + logratio, old, adv, np.ones(6), eps)
    want_loss, want_grad = surrogate_reference(logratio, adv, np.ones(6, bool), eps)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)
    assert grad[0] == 0.0 and grad[1] == 0.0 and grad[5] == 0.0


def test_policy_loss_ignores_nan_and_inf_at_masked_positions():
    eps = 0.2
    new = np.array([-1.0, np.nan, -2.0, np.inf, -0.5])
    old = np.array([-1.1, -1.0, np.nan, -np.inf, -0.4])
    adv = np.array([0.5, 1.0, 2.0, np.nan, -1.5])
    mask = np.array([1.0, 0.0, 0.0, 0.0, 1.0])
    loss, grad = _policy_loss_and_grad(new, old, adv, mask, eps)
    valid = mask > 0
    want_loss, want_grad = surrogate_reference(np.where(valid, new - old, 0.0), adv, valid, eps)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)
    assert np.all(grad[~valid] == 0.0)


def test_policy_loss_keeps_a_nan_at_a_valid_position_visible():
    loss, _ = _policy_loss_and_grad(np.array([np.nan, -1.0]), np.array([-1.0, -1.0]),
                                    np.array([1.0, 1.0]), np.ones(2), 0.2)
    assert np.isnan(loss)


def test_value_loss_ignores_nan_and_inf_at_masked_positions():
    eps_v = 0.2
    v_new = np.array([0.9, np.nan, 1.4, -np.inf, 0.0])      # entry 0: the clipped square wins
    v_old = np.array([0.0, np.inf, 1.0, 0.0, np.nan])
    ret = np.array([1.0, 0.0, np.nan, 2.0, 1.0])
    mask = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    ret_valid = np.where(mask > 0, np.nan_to_num(ret, nan=0.7), 0.0)
    ret = np.where(mask > 0, ret_valid, ret)                         # valid returns are finite
    for clip in (eps_v, None):
        loss, grad = jax.value_and_grad(lambda v, clip=clip: ppo.value_loss(
            v, jnp.asarray(v_old, jnp.float32), jnp.asarray(ret, jnp.float32),
            jnp.asarray(mask, jnp.float32), clip)[0])(jnp.asarray(v_new, jnp.float32))
        # written out on the valid entries only: 0.5 * mean(max((V - R)^2, (V_clip - R)^2))
        i = np.flatnonzero(mask)
        v, vo, r = v_new[i], v_old[i], ret[i]
        sq = (v - r) ** 2
        if clip is not None:
            sq = np.maximum(sq, (vo + np.clip(v - vo, -clip, clip) - r) ** 2)
        np.testing.assert_allclose(float(loss), 0.5 * sq.mean(), rtol=1e-5)
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)) and np.all(grad[mask == 0] == 0.0)
        assert clip is None or grad[0] == 0.0
        # d/dV of 0.5 * mean((V - R)^2) = (V - R) / n where the unclipped square is the max
        unclipped = np.ones(len(i), bool) if clip is None else (
            (v - r) ** 2 >= (vo + np.clip(v - vo, -clip, clip) - r) ** 2)
        np.testing.assert_allclose(grad[i], np.where(unclipped, (v - r) / len(i), 0.0),
                                   rtol=1e-5, atol=1e-7)
