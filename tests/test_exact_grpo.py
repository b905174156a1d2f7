"""The exact world's GRPO / RLOO analysis against closed forms, written-out objectives and
enumeration of every group."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.exact import grpo as eg
from minirlhf.exact import world as exact

SMALL = exact.ExactWorldConfig(n_prompts=2, alphabet_size=3, length=3, seed=1)


@pytest.fixture(scope="module")
def world():
    with jax.enable_x64(True):
        w = exact.make_exact_world(SMALL)
        return w._replace(reward=jnp.asarray(np.asarray(w.reward), jnp.float64),
                          logp_ref=jnp.asarray(np.asarray(w.logp_ref), jnp.float64))


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("beta", [0.05, 0.3, 2.0])
def test_fixed_point_solves_the_stationary_condition(world, beta):
    """pi (r - c) = beta (pi - pi_ref) with c = E_pi[r], checked in NumPy float64."""
    with jax.enable_x64(True):
        lp = np.asarray(eg.grpo_fixed_point(world.logp_ref, world.reward, beta))
    pi, pi_ref, r = np.exp(lp), np.exp(np.asarray(world.logp_ref)), np.asarray(world.reward)
    c = (pi * r).sum(-1, keepdims=True)
    np.testing.assert_allclose(pi.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(pi * (r - c), beta * (pi - pi_ref), atol=1e-12)
    assert np.all(c > r.max(-1, keepdims=True) - beta)  # every denominator positive


def test_fixed_point_accepts_one_beta_per_prompt(world):
    betas = jnp.array([[0.1], [0.7]])
    with jax.enable_x64(True):
        both = eg.grpo_fixed_point(world.logp_ref, world.reward, betas)
        for p in range(2):
            one = eg.grpo_fixed_point(world.logp_ref[p:p + 1], world.reward[p:p + 1],
                                      float(betas[p, 0]))
            np.testing.assert_allclose(both[p], one[0], atol=1e-12)


def test_expected_k1_gradient_is_the_gradient_of_the_regularised_objective(world):
    """d/dz of the surrogate = -d/dz (E_pi[r] - beta KL(pi || pi_ref)), the objective written
    out as a function of z; the baseline (none / mean) changes nothing in expectation."""
    beta = 0.4
    rng = np.random.default_rng(0)
    z = rng.normal(size=world.reward.shape)
    r, lr = np.asarray(world.reward), np.asarray(world.logp_ref)

    def objective(z):  # mean over prompts of sum_y pi (r - beta (log pi - log pi_ref))
        logp = jax.nn.log_softmax(z, -1)
        return jnp.mean(jnp.sum(jnp.exp(logp) * (r - beta * (logp - lr)), -1))

    with jax.enable_x64(True):
        want = -np.asarray(jax.grad(objective)(jnp.asarray(z)))
        for baseline in ("none", "mean"):
            cfg = eg.ExactPGConfig(kl_in="reward", baseline=baseline)
            got = jax.grad(eg.expected_loss)(jnp.asarray(z), world.logp_ref, world.reward,
                                             beta, cfg)
            np.testing.assert_allclose(got, want, atol=1e-12)


def test_expected_k3_gradient_is_the_forward_kl_gradient(world):
    """E_pi[d k3] = d KL(pi_ref || pi): with r = 0 the k3-in-loss surrogate's gradient equals
    beta * d/dz sum_y pi_ref log(pi_ref / pi), a different function of z."""
    beta = 0.7
    z = np.random.default_rng(1).normal(size=world.reward.shape)
    pi_ref = np.exp(np.asarray(world.logp_ref))
    with jax.enable_x64(True):
        def forward_kl(z):
            return jnp.mean(jnp.sum(pi_ref * (np.log(pi_ref) - jax.nn.log_softmax(z, -1)), -1))

        cfg = eg.ExactPGConfig(kl_in="loss", baseline="mean")
        got = jax.grad(eg.expected_loss)(jnp.asarray(z), world.logp_ref,
                                         jnp.zeros_like(world.reward), beta, cfg)
        np.testing.assert_allclose(got, beta * jax.grad(forward_kl)(jnp.asarray(z)), atol=1e-12)
        # and the closed form d/dz_y = beta (pi(y) - pi_ref(y)) / P
        np.testing.assert_allclose(got, beta * (_softmax(z) - pi_ref) / z.shape[0], atol=1e-12)


def test_grpo_gradient_vanishes_at_the_fixed_point(world):
    beta = 0.25
    cfg = eg.ExactPGConfig(kl_in="loss", baseline="mean")
    with jax.enable_x64(True):
        z = eg.grpo_fixed_point(world.logp_ref, world.reward, beta)
        g = jax.grad(eg.expected_loss)(z, world.logp_ref, world.reward, beta, cfg)
    np.testing.assert_allclose(g, 0.0, atol=1e-12)


def test_std_only_rescales_the_gradient_when_the_kl_is_in_the_reward(world):
    z = np.random.default_rng(2).normal(size=world.reward.shape)
    with jax.enable_x64(True):
        z = jnp.asarray(z)
        grads = {b: np.asarray(jax.grad(eg.expected_loss)(
            z, world.logp_ref, world.reward, 0.3, eg.ExactPGConfig(baseline=b, eps=0.0)))
            for b in ("mean", "mean_std")}
    ratio = grads["mean"] / grads["mean_std"]  # per prompt, the same positive number: std_pi R
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-9)
    assert np.all(ratio > 0)


def test_training_converges_to_pi_star_with_k1_and_to_the_fixed_point_with_k3():
    w = exact.make_exact_world(SMALL)
    beta = 0.3
    _, h1 = eg.train_exact_pg(w.logp_ref, w.reward, beta, eg.ExactPGConfig(kl_in="reward"))
    assert float(h1["kl_to_optimum"][-1]) <= 1e-6
    assert float(h1["kl_to_optimum"][0]) >= 10 * max(float(h1["kl_to_optimum"][-1]), 1e-7)
    _, h3 = eg.train_exact_pg(w.logp_ref, w.reward, beta, eg.ExactPGConfig(kl_in="loss"))
    assert float(h3["kl_to_grpo_fixed_point"][-1]) <= 1e-6
    assert float(h3["kl_to_optimum"][-1]) > 0.05  # a different policy from pi*_beta
    fp_vs_star = exact.kl(eg.grpo_fixed_point(w.logp_ref, w.reward, beta),
                          exact.optimal_policy(w.logp_ref, w.reward, beta)).mean()
    np.testing.assert_allclose(h3["kl_to_optimum"][-1], fp_vs_star, rtol=1e-3)


def test_grpo_std_training_reaches_the_fixed_point_of_its_effective_beta():
    """A / std: the endpoint is the fixed point for beta_eff = beta * (std_pi(r) + eps),
    per prompt, with the std measured at the endpoint itself."""
    w = exact.make_exact_world(SMALL)
    beta, cfg = 0.3, eg.ExactPGConfig(kl_in="loss", baseline="mean_std")
    lp, _ = eg.train_exact_pg(w.logp_ref, w.reward, beta, cfg)
    pi = np.exp(np.asarray(lp, np.float64))
    r = np.asarray(w.reward, np.float64)
    std = np.sqrt((pi * (r - (pi * r).sum(-1, keepdims=True)) ** 2).sum(-1, keepdims=True))
    fp = eg.grpo_fixed_point(w.logp_ref, w.reward, jnp.asarray(beta * (std + cfg.eps)))
    assert float(exact.kl(lp, fp).mean()) <= 1e-5


def test_frontier_points_never_lie_above_the_optimal_frontier(world):
    with jax.enable_x64(True):
        f = eg.frontier(world.logp_ref, world.reward, np.geomspace(0.02, 3.0, 12))
        kl_star, r_star = np.asarray(f["optimal_kl"]), np.asarray(f["optimal_reward"])
        for kl, r in zip(np.asarray(f["grpo_kl"]), np.asarray(f["grpo_reward"])):
            # pi*_beta maximises E r - beta KL, so for any policy E r <= E r* + beta (KL - KL*)
            betas = np.geomspace(0.02, 3.0, 12)
            assert np.all(r <= r_star + betas * (kl - kl_star) + 1e-9)


# ----------------------------------------------------------------------------- finite groups


def _tiny():
    rng = np.random.default_rng(3)
    logp = np.log(_softmax(rng.normal(size=4)))
    return logp, rng.normal(size=4)


def _group_gradient_loop(logp, reward, group, kind):
    """(1/G) sum_i A_i (e_{y_i} - pi), advantages written out per answer."""
    G, pi = len(group), np.exp(logp)
    rs = [reward[y] for y in group]
    mean = sum(rs) / G
    std = np.sqrt(sum((x - mean) ** 2 for x in rs) / G)
    g = np.zeros_like(pi)
    for i, y in enumerate(group):
        if kind == "rloo":
            a = rs[i] - (sum(rs) - rs[i]) / (G - 1)
        elif kind == "drgrpo":
            a = rs[i] - mean
        else:
            a = (rs[i] - mean) / (std + 1e-4)
        e = np.zeros_like(pi)
        e[y] = 1.0
        g += a * (e - pi) / G
    return g


@pytest.mark.parametrize("G", [2, 3, 4])
def test_enumerated_group_gradients_rloo_unbiased_drgrpo_scaled(G):
    logp, reward = _tiny()
    pi = np.exp(logp)
    exact_grad = pi * (reward - (pi * reward).sum())
    with jax.enable_x64(True):
        means = {k: np.asarray(eg.enumerated_group_gradient(jnp.asarray(logp),
                                                            jnp.asarray(reward), k, G)[0])
                 for k in ("rloo", "drgrpo", "grpo")}
    np.testing.assert_allclose(means["rloo"], exact_grad, atol=1e-12)
    np.testing.assert_allclose(means["drgrpo"], (G - 1) / G * exact_grad, atol=1e-12)
    assert np.max(np.abs(means["grpo"] - exact_grad)) > 1e-3  # the std division biases it


def test_enumeration_and_group_gradient_equal_the_loop():
    logp, reward = _tiny()
    G, pi = 3, np.exp(logp)
    for kind in ("rloo", "drgrpo", "grpo"):
        gs, ws = [], []
        for group in itertools.product(range(4), repeat=G):
            gs.append(_group_gradient_loop(logp, reward, group, kind))
            ws.append(np.prod(pi[list(group)]))
        gs, ws = np.array(gs), np.array(ws)
        mean = ws @ gs
        var = ws @ ((gs - mean) ** 2).sum(-1)
        with jax.enable_x64(True):
            got_mean, got_var = eg.enumerated_group_gradient(jnp.asarray(logp),
                                                             jnp.asarray(reward), kind, G)
        np.testing.assert_allclose(got_mean, mean, atol=1e-12)
        np.testing.assert_allclose(got_var, var, rtol=1e-10)


def test_sampled_moments_match_enumeration():
    """Moments of 20000 sampled groups are within 5 standard errors of the enumerated mean."""
    logp, reward = _tiny()
    G, D = 3, 20000
    with jax.enable_x64(True):
        logp, reward = jnp.asarray(logp), jnp.asarray(reward)
        groups = jax.random.categorical(jax.random.key(0), logp, shape=(D, G))
        for kind in ("rloo", "grpo"):
            draws = jax.vmap(lambda grp, k=kind: eg.group_gradient(logp, reward, grp, k))(groups)
            mean, _ = eg.group_gradient_moments(logp, reward, groups, kind)
            exact_mean, _ = eg.enumerated_group_gradient(logp, reward, kind, G)
            stderr = np.asarray(draws).std(0) / np.sqrt(D)
            assert np.all(np.abs(np.asarray(mean - exact_mean)) <= 5 * stderr + 1e-9)


def test_finite_group_table_rloo_scale_one_drgrpo_scaled():
    w = exact.make_exact_world(SMALL)
    table = eg.finite_group_table(w.logp_ref, w.reward, (2, 4), jax.random.key(0), 20000)
    for G in (2, 4):
        assert abs(table["rloo", G]["scale"] - 1.0) < 0.05
        # the same groups: RLOO is G/(G-1) times Dr. GRPO draw by draw
        np.testing.assert_allclose(table["rloo", G]["scale"],
                                   G / (G - 1) * table["drgrpo", G]["scale"], rtol=1e-4)
        np.testing.assert_allclose(table["rloo", G]["rel_variance"],
                                   (G / (G - 1)) ** 2 * table["drgrpo", G]["rel_variance"],
                                   rtol=1e-3)


def test_config_validation():
    with pytest.raises(ValueError, match="kl_in"):
        eg.ExactPGConfig(kl_in="critic")
    with pytest.raises(ValueError, match="baseline"):
        eg.ExactPGConfig(baseline="median")
    with pytest.raises(ValueError, match="n_steps"):
        eg.ExactPGConfig(n_steps=0)


def test_group_gradient_moments_equal_the_explicit_draws():
    """The O(G^2)-per-group moments equal the mean and mean squared norm of g_hat [D, N]."""
    logp, reward = _tiny()
    with jax.enable_x64(True):
        logp, reward = jnp.asarray(logp), jnp.asarray(reward)
        groups = jax.random.categorical(jax.random.key(1), logp, shape=(500, 5))  # repeats
        for kind in ("rloo", "drgrpo", "grpo"):
            g = jax.vmap(lambda grp, k=kind: eg.group_gradient(logp, reward, grp, k))(groups)
            mean, sq = eg.group_gradient_moments(logp, reward, groups, kind)
            np.testing.assert_allclose(mean, g.mean(0), atol=1e-12)
            np.testing.assert_allclose(sq, np.mean(np.sum(np.asarray(g) ** 2, -1)), rtol=1e-10)
