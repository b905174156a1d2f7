"""Lesson 08's experiments: the frontier property, the best-of-n KL bound, the OOD headline."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.exact import compare as C
from minirlhf.exact import ood as O
from minirlhf.exact import training as et
from minirlhf.exact import world as exact

TINY = exact.ExactWorldConfig(n_prompts=2, alphabet_size=3, length=2)  # N = 9


def _frontier_at(logp_ref, reward, target_kl):
    """max E_pi[r] over KL(pi || pi_ref) = target_kl, by bisection on beta (float64 numpy):
    KL(pi*_beta) decreases monotonically in beta, and pi*_beta attains the maximum."""
    def point(beta):
        logits = logp_ref + reward / beta
        logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        p = np.exp(logp)
        return np.mean(np.sum(p * (logp - logp_ref), -1)), np.mean(np.sum(p * reward, -1))

    lo, hi = np.log(1e-4), np.log(1e4)  # log beta
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if point(np.exp(mid))[0] > target_kl:
            lo = mid
        else:
            hi = mid
    return point(np.exp(hi))[1]


def test_no_policy_beats_the_frontier_at_its_own_kl():
    world = exact.make_exact_world(TINY)
    logp_ref, reward = (np.asarray(x, np.float64) for x in (world.logp_ref, world.reward))
    keys = jax.random.split(jax.random.key(0), 2)
    # PPO runs are checked in the OOD test; here the cheaper-to-compile DPO and IPO
    ipo = C.sweep(partial(C.pref_point, world, C.PrefTrainConfig("ipo", 50), 256),
                  [0.05, 0.3], keys)
    dpo = C.sweep(partial(C.pref_point, world, C.PrefTrainConfig("dpo", 50), 256),
                  [0.05, 0.3], keys)
    random = jax.vmap(lambda k: jax.nn.log_softmax(3.0 * jax.random.normal(k, (2, 9))))(
        jax.random.split(jax.random.key(1), 20))  # [20, P, N] arbitrary policies
    rand_pts = jax.vmap(lambda lp: C.exact_point(lp, world))(random)
    kls = np.concatenate([np.ravel(p.kl) for p in (ipo, dpo, rand_pts)])
    rewards = np.concatenate([np.ravel(p.reward) for p in (ipo, dpo, rand_pts)])
    assert np.all(kls > 1e-3)  # the runs moved: the check is not vacuous
    for k, r in zip(kls, rewards):
        # tolerance: float32 sums of E[r] and KL over 9 responses
        assert r <= _frontier_at(logp_ref, reward, k) + 1e-4, (k, r)


def test_frontier_gap_is_zero_on_the_frontier_and_positive_below():
    world = exact.make_exact_world(TINY)
    f_kl, f_r = C.frontier_curve(world, np.geomspace(1e-3, 1e3, 2000))
    assert np.all(np.diff(f_kl) >= 0)
    on = C.exact_point(exact.optimal_policy(world.logp_ref, world.reward, 0.2), world)
    assert abs(C.frontier_gap(on.kl, on.reward, f_kl, f_r)) < 1e-3
    assert C.frontier_gap(on.kl, on.reward - 0.1, f_kl, f_r) > 0.09


def test_best_of_n_kl_is_below_the_bound_and_tight_for_a_continuum():
    with jax.enable_x64(True):
        N = 4096  # uniform pi_ref over many responses with distinct rewards
        logp_ref = jnp.full((1, N), -np.log(N))
        reward = jax.random.permutation(jax.random.key(0), jnp.arange(N, dtype=jnp.float64))[None]
        out = C.best_of_n_points(logp_ref, reward, reward, [1, 2, 4, 8, 16])
        # closed form for the uniform case: P(i-th smallest) = (i/N)^n - ((i-1)/N)^n
        assert np.all(out["kl"] <= out["kl_bound"] + 1e-12)
        # the bound's error here is O(n / N): < 1e-6 for n <= 16, N = 4096 (measured 6.4e-7)
        np.testing.assert_allclose(out["kl"], out["kl_bound"], atol=1e-6)
        # a coarse pi_ref (4 atoms of mass 1/4) is far from a continuum: the bound is strict.
        # Independent closed form: P_bon(i-th smallest) = (i/4)^n - ((i-1)/4)^n.
        i = np.arange(1, 5)
        for n in (2, 4, 8):
            p = (i / 4) ** n - ((i - 1) / 4) ** n
            kl_closed = float(np.sum(p * np.log(4 * p)))
            coarse = C.best_of_n_points(jnp.full((1, 4), -np.log(4.0)),
                                        jnp.array([[0.3, 0.1, 0.4, 0.2]]), jnp.zeros((1, 4)), [n])
            np.testing.assert_allclose(coarse["kl"][0], kl_closed, rtol=1e-10)
            assert kl_closed < exact.best_of_n_kl_bound(n) - 0.01


def test_dpo_moves_more_mass_onto_unseen_responses_than_ppo():
    world = exact.make_exact_world(exact.ExactWorldConfig(n_prompts=2, length=3))
    cfg = O.OODConfig(n_support=6, pref=C.PrefTrainConfig(n_steps=100),
                      ppo=et.TabularPPOConfig(beta=1.0, n_iterations=40), sft_steps=20,
                      online_rounds=1)
    out = jax.jit(partial(O.ood_run, world, cfg))(jax.random.key(0))
    assert out["dpo"]["unseen"] > out["ppo_rm"]["unseen"] + 0.05
    assert out["sft_dpo"]["unseen"] < out["dpo"]["unseen"]  # remedy 1 closes the gap


def test_fit_gao_recovers_known_coefficients():
    d = np.linspace(0.1, 3.0, 40)
    for form, second in (("bon", d**2), ("rl", d * np.log(d))):
        alpha, beta, r2 = O.fit_gao(d, 0.7 * d - 0.2 * second, form)
        np.testing.assert_allclose([alpha, beta, r2], [0.7, 0.2, 1.0], atol=1e-9)
