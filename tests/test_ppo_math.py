"""PPO pieces against brute-force loops, closed forms and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

from minirlhf import ppo


def _random_masks(rng, B, T):
    """Contiguous response spans starting at random columns (left-offset) of random length."""
    mask = np.zeros((B, T))
    for b in range(B):
        start = rng.integers(0, T - 1)
        end = rng.integers(start + 1, T + 1)
        mask[b, start:end] = 1.0
    return mask


def _gae_loop(rewards, values, mask, gamma, lam):
    """Brute force: walk each row's valid steps backwards in time."""
    adv = np.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        steps = [t for t in range(rewards.shape[1]) if mask[b, t] > 0]
        next_value, next_adv = 0.0, 0.0
        for t in reversed(steps):
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            next_adv = delta + gamma * lam * next_adv
            next_value = values[b, t]
            adv[b, t] = next_adv
    return adv, (adv + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.7), (1.0, 1.0), (0.99, 0.0)])
def test_gae_equals_python_loop_float64(gamma, lam):
    rng = np.random.default_rng(0)
    B, T = 7, 9
    rewards, values = rng.normal(size=(B, T)), rng.normal(size=(B, T))
    mask = _random_masks(rng, B, T)
    mask[0, 2] = 0.0 if mask[0].sum() > 2 else mask[0, 2]  # holes are just skipped steps
    with jax.enable_x64(True):
        adv, ret = ppo.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma, lam)
        adv_ref, ret_ref = _gae_loop(rewards, values, mask, gamma, lam)
        np.testing.assert_allclose(adv, adv_ref, atol=1e-12)
        np.testing.assert_allclose(ret, ret_ref, atol=1e-12)


def test_gae_lambda_limits():
    rng = np.random.default_rng(1)
    B, T, gamma = 4, 6, 0.9
    rewards, values = rng.normal(size=(B, T)), rng.normal(size=(B, T))
    mask = np.zeros((B, T))
    mask[:, 2:5] = 1.0  # steps 2, 3, 4; V after step 4 is 0
    with jax.enable_x64(True):
        args = (jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask))
        adv1, _ = ppo.gae(*args, gamma, 1.0)
        adv0, _ = ppo.gae(*args, gamma, 0.0)
    for t in (2, 3, 4):
        mc_return = sum(gamma ** (s - t) * rewards[:, s] for s in range(t, 5))
        np.testing.assert_allclose(adv1[:, t], mc_return - values[:, t], atol=1e-12)  # lam = 1
        next_v = values[:, t + 1] if t < 4 else 0.0
        td = rewards[:, t] + gamma * next_v - values[:, t]
        np.testing.assert_allclose(adv0[:, t], td, atol=1e-12)  # lam = 0: TD error
    assert np.all(np.asarray(adv1)[:, [0, 1, 5]] == 0.0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_clipped_surrogate_gradient(sign):
    eps = 0.2
    ratio = np.array([0.5, 0.79, 0.9, 1.0, 1.1, 1.21, 1.5, 3.0])
    advantages = sign * np.linspace(0.5, 2.0, len(ratio))
    old = np.full_like(ratio, -2.0)
    new = old + np.log(ratio)
    mask = np.ones_like(ratio)
    n = len(ratio)
    grad = jax.grad(lambda lp: -ppo.policy_loss(lp[None], jnp.asarray(old)[None],
                                                jnp.asarray(advantages)[None],
                                                jnp.asarray(mask)[None], eps)[0])(jnp.asarray(new))
    # d(objective)/d log pi = rho A / n unless the clip is active: rho > 1 + eps with A > 0,
    # or rho < 1 - eps with A < 0 (then exactly 0)
    clipped = (ratio > 1 + eps) & (advantages > 0) | (ratio < 1 - eps) & (advantages < 0)
    expected = np.where(clipped, 0.0, ratio * advantages / n)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert clipped.any() and (~clipped).any()
    assert np.all(np.asarray(grad)[clipped] == 0.0)


def test_policy_loss_metrics():
    """approxkl is k3, an unbiased estimator of KL(pi_old || pi_theta) over tokens drawn from
    pi_old: on tokens that appear exactly in proportion to pi_old (1/2, 1/4, 1/4 -> a, a, b, c)
    its mean IS that KL, which the test computes from the two distributions.  clipfrac counts the
    tokens whose ratio leaves [1 - eps, 1 + eps]; the masked column counts for nothing."""
    p_old, p_new = np.array([0.5, 0.25, 0.25]), np.array([0.45, 0.4, 0.15])
    actions = [0, 0, 1, 2]
    new_logps = np.log(p_new[actions])[None, :]
    old_logps = np.log(p_old[actions])[None, :]
    pad = np.array([[9.0]])                                   # a masked token with a huge ratio
    mask = np.array([[1.0, 1.0, 1.0, 1.0, 0.0]])
    _, m = ppo.policy_loss(jnp.asarray(np.c_[new_logps, pad]), jnp.asarray(np.c_[old_logps, 0 * pad]),
                           jnp.ones((1, 5)), jnp.asarray(mask), 0.2)
    kl_old_new = float(np.sum(p_old * np.log(p_old / p_new)))
    np.testing.assert_allclose(m["policy/approxkl"], kl_old_new, rtol=1e-4)
    # ratios 0.9, 0.9, 1.6, 0.6: |rho - 1| > 0.2 for the last two only
    np.testing.assert_allclose(m["policy/clipfrac"], 2.0 / 4.0, rtol=1e-6)


def _two_categoricals():
    p = np.array([0.5, 0.2, 0.2, 0.1])
    q = np.array([0.25, 0.25, 0.3, 0.2])
    return p, q, float(np.sum(p * np.log(p / q)))


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_k1_k3_unbiased_for_exact_kl(kind):
    p, q, exact_kl = _two_categoricals()
    samples = jax.random.choice(jax.random.key(0), 4, shape=(200_000,), p=jnp.asarray(p))
    logratio = jnp.log(jnp.asarray(p))[samples] - jnp.log(jnp.asarray(q))[samples]
    est = np.asarray(ppo.kl_estimate(logratio, kind), np.float64)
    stderr = est.std() / np.sqrt(len(est))
    assert abs(est.mean() - exact_kl) < 4 * stderr


def test_k2_is_biased_k3_nonnegative_and_stable():
    p, q, exact_kl = _two_categoricals()
    logratio = np.log(p / q)
    k2_mean = np.sum(p * np.asarray(ppo.kl_k2(jnp.asarray(logratio))))
    assert abs(k2_mean - exact_kl) > 1e-3  # k2 is biased (exact expectation, not MC)
    x = jnp.linspace(-50.0, 50.0, 1001)
    k3 = np.asarray(ppo.kl_k3(x))
    assert np.all(np.isfinite(k3)) and np.all(k3 >= 0)
    small = jnp.array([1e-3, -1e-3, 1e-4])
    np.testing.assert_allclose(ppo.kl_k3(small), np.asarray(small) ** 2 / 2, rtol=2e-3)
    with pytest.raises(ValueError, match="kind"):
        ppo.kl_estimate(x, "k4")


def test_shaped_rewards_sum_to_score_minus_beta_logratio():
    rng = np.random.default_rng(2)
    B, T, beta = 5, 8, 0.3
    mask = _random_masks(rng, B, T)
    logratio, scores = rng.normal(size=(B, T)), rng.normal(size=B)
    rewards = np.asarray(ppo.shape_rewards(jnp.asarray(scores), jnp.asarray(logratio),
                                           jnp.asarray(mask), beta, "k1"))
    np.testing.assert_allclose(rewards.sum(-1), scores - beta * (logratio * mask).sum(-1),
                               rtol=1e-5)
    assert np.all(rewards[mask == 0] == 0.0)
    last = np.array([np.nonzero(m)[0].max() for m in mask])
    np.testing.assert_allclose(rewards[np.arange(B), last],
                               scores - beta * logratio[np.arange(B), last], rtol=1e-5)


def test_adaptive_kl_controller_moves_beta_the_right_way():
    cfg = ppo.KLControllerConfig(init_beta=0.1, adaptive=True, target=6.0, horizon=1000.0)
    state = ppo.kl_controller_init(cfg)
    up = ppo.kl_controller_update(state, 12.0, 100, cfg)
    down = ppo.kl_controller_update(state, 1.0, 100, cfg)
    np.testing.assert_allclose(up.beta, 0.1 * (1 + 0.2 * 100 / 1000), rtol=1e-6)  # clipped +0.2
    np.testing.assert_allclose(down.beta, 0.1 * (1 - 0.2 * 100 / 1000), rtol=1e-6)
    near = ppo.kl_controller_update(state, 6.6, 100, cfg)
    np.testing.assert_allclose(near.beta, 0.1 * (1 + 0.1 * 100 / 1000), rtol=1e-6)
    fixed_cfg = ppo.KLControllerConfig(init_beta=0.1, adaptive=False)
    assert ppo.kl_controller_update(ppo.kl_controller_init(fixed_cfg), 100.0, 100,
                                    fixed_cfg).beta == jnp.float32(0.1)


def test_value_loss_matches_formula():
    rng = np.random.default_rng(3)
    B, T, eps = 4, 5, 0.2
    v_new, v_old, ret = (rng.normal(size=(B, T)) for _ in range(3))
    mask = _random_masks(rng, B, T)
    loss, m = ppo.value_loss(*(jnp.asarray(x) for x in (v_new, v_old, ret, mask)), eps)
    v_clip = v_old + np.clip(v_new - v_old, -eps, eps)
    per_token = 0.5 * np.maximum((v_new - ret) ** 2, (v_clip - ret) ** 2)
    np.testing.assert_allclose(loss, (per_token * mask).sum() / mask.sum(), rtol=1e-5)
    unclipped, _ = ppo.value_loss(*(jnp.asarray(x) for x in (v_new, v_old, ret, mask)), None)
    np.testing.assert_allclose(unclipped, 0.5 * ((v_new - ret) ** 2 * mask).sum() / mask.sum(),
                               rtol=1e-5)
    assert 0.0 < m["value/clipfrac"] < 1.0


def test_whiten_entropy_explained_variance():
    rng = np.random.default_rng(4)
    x, mask = rng.normal(3.0, 2.0, size=(3, 6)), _random_masks(rng, 3, 6)
    w = np.asarray(ppo.whiten(jnp.asarray(x), jnp.asarray(mask)))
    vals = w[mask > 0]
    np.testing.assert_allclose([vals.mean(), vals.std()], [0.0, 1.0], atol=1e-4)
    assert np.all(w[mask == 0] == 0.0)
    w_noshift = np.asarray(ppo.whiten(jnp.asarray(x), jnp.asarray(mask), shift_mean=False))
    np.testing.assert_allclose(w_noshift[mask > 0].mean(), x[mask > 0].mean(), rtol=1e-4)
    logits = rng.normal(size=(2, 5))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(ppo.entropy_from_logits(jnp.asarray(logits)),
                               -(p * np.log(p)).sum(-1), rtol=1e-5)
    ret = jnp.asarray(x)
    np.testing.assert_allclose(ppo.explained_variance(ret, ret, jnp.asarray(mask)), 1.0)
    ev = ppo.explained_variance(jnp.full_like(ret, x[mask > 0].mean()), ret, jnp.asarray(mask))
    np.testing.assert_allclose(ev, 0.0, atol=1e-5)


def test_appending_padding_changes_no_loss():
    rng = np.random.default_rng(5)
    B, T = 3, 5
    arrays = [rng.normal(size=(B, T)) for _ in range(5)]  # new, old logps, adv, values, returns
    mask = _random_masks(rng, B, T)

    def pad(a, value):
        return np.concatenate([a, np.full((B, 3), value)], axis=1)

    garbage = [pad(a, v) for a, v in zip(arrays, [-np.inf, 7.0, 1e6, np.nan, -3.0])]
    mask_p = pad(mask, 0.0)
    for args, m in [(arrays, mask), (garbage, mask_p)]:
        new, old, adv, vals, ret = (jnp.asarray(a) for a in args)
        out = (ppo.policy_loss(new, old, adv, jnp.asarray(m), 0.2)[0],
               ppo.value_loss(vals, old, ret, jnp.asarray(m), 0.2)[0],
               ppo.gae(ret, vals, jnp.asarray(m), 1.0, 0.9)[0][:, :T].sum(),
               ppo.whiten(adv, jnp.asarray(m))[:, :T].sum())
        if m is mask:
            reference = out
    np.testing.assert_allclose(out, reference, rtol=1e-6)


def test_ppo_update_scans_epochs_and_minibatches_with_fresh_permutations():
    """A linear least-squares loss: the update must equal a hand-written loop."""
    rng = np.random.default_rng(6)
    batch = {"x": jnp.asarray(rng.normal(size=(8, 3))), "y": jnp.asarray(rng.normal(size=8))}

    def loss_fn(params, mb):
        loss = jnp.mean((mb["x"] @ params["w"] - mb["y"]) ** 2)
        return loss, {"loss": loss}

    cfg = ppo.PPOUpdateConfig(n_epochs=3, n_minibatches=2)
    state = TrainState.create(apply_fn=None, params={"w": jnp.zeros(3)}, tx=optax.sgd(0.1))
    key = jax.random.key(7)
    new_state, metrics = ppo.ppo_update(state, batch, key, loss_fn, cfg)
    assert metrics["loss"].shape == (3, 2)
    w = np.zeros(3)
    perms = [np.asarray(jax.random.permutation(k, 8)) for k in jax.random.split(key, 3)]
    assert not np.array_equal(perms[0], perms[1])  # a fresh permutation every epoch
    for perm in perms:
        for mb in perm.reshape(2, 4):
            x, y = np.asarray(batch["x"])[mb], np.asarray(batch["y"])[mb]
            w = w - 0.1 * 2 * x.T @ (x @ w - y) / 4
    np.testing.assert_allclose(new_state.params["w"], w, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        ppo.ppo_update(state, batch, key, loss_fn, ppo.PPOUpdateConfig(1, 3))
