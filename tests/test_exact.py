"""The exact world: tree indexing, the reference table and the exact functionals,
checked against brute-force Python loops and closed forms in float64."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.exact import world as exact
from minirlhf.exact.world import ExactWorldConfig, make_exact_world

SMALL = ExactWorldConfig(n_prompts=2, alphabet_size=3, length=3, seed=1)


def test_responses_lexicographic_and_index_roundtrip():
    responses = np.asarray(exact.all_responses(3, 3))
    expected = np.array(list(itertools.product(range(3), repeat=3)))  # lexicographic
    np.testing.assert_array_equal(responses, expected)
    np.testing.assert_array_equal(exact.response_index(jnp.asarray(responses), 3), np.arange(27))


def test_prefix_nodes_match_breadth_first_numbering():
    A, K = 3, 3
    prefixes = [()] + [p for k in range(1, K) for p in itertools.product(range(A), repeat=k)]
    node_of = {p: i for i, p in enumerate(prefixes)}  # breadth-first, lexicographic per depth
    assert exact.n_prefixes(A, K) == len(prefixes) == 13
    responses = exact.all_responses(A, K)
    nodes = np.asarray(exact.prefix_nodes(responses, A))
    for y, row in zip(np.asarray(responses), nodes):
        assert [node_of[tuple(y[:k])] for k in range(K)] == list(row)


def test_reference_logprobs_equal_product_of_conditionals_float64():
    with jax.enable_x64(True):
        world = make_exact_world(SMALL)
        table = np.asarray(jax.nn.log_softmax(world.ref_logits, -1), np.float64)
        A, K = SMALL.alphabet_size, SMALL.length
        offsets = exact.level_offsets(A, K)
        logp_ref = np.asarray(world.logp_ref)
        for p in range(SMALL.n_prompts):
            for n, y in enumerate(np.asarray(world.responses)):
                total, value = 0.0, 0
                for k in range(K):
                    total += table[p, offsets[k] + value, y[k]]
                    value = value * A + y[k]
                assert np.isclose(logp_ref[p, n], total, atol=1e-12)
        np.testing.assert_allclose(np.exp(logp_ref).sum(-1), 1.0, atol=1e-12)


def test_world_reward_structure_and_mediocre_reference():
    world = make_exact_world(ExactWorldConfig(noise_scale=0.0))
    reward = np.asarray(world.reward)
    n_target = np.asarray(exact.response_index(world.targets, 4))  # [P]
    np.testing.assert_allclose(reward[np.arange(4), n_target], 1.0)
    np.testing.assert_allclose(reward.max(-1), 1.0)
    # pi_ref's expected reward is far below the best response: there is something to learn
    assert np.all(exact.expected_reward(world.logp_ref, world.reward) < 0.3)


def test_world_is_deterministic_from_seed_and_rejects_bad_config():
    a, b = make_exact_world(SMALL), make_exact_world(SMALL)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="alphabet_size"):
        make_exact_world(ExactWorldConfig(alphabet_size=1))


def test_kl_matches_numpy_and_handles_zero_probabilities():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=3)
    q = rng.dirichlet(np.ones(5), size=3)
    p[0, 1] = 0.0  # zero mass in p: contributes 0 (0 log 0 = 0)
    p[0] /= p[0].sum()
    with np.errstate(divide="ignore"):
        logp, logq = np.log(p), np.log(q)
    expected = [sum(pi * (np.log(pi) - np.log(qi)) for pi, qi in zip(pr, qr) if pi > 0)
                for pr, qr in zip(p, q)]
    got = exact.kl(jnp.asarray(logp), jnp.asarray(logq))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    grad = jax.grad(lambda lp: exact.kl(lp, jnp.asarray(logq)).sum())(jnp.asarray(logp))
    assert np.all(np.isfinite(grad))
    # q = 0 where p > 0: infinite KL
    assert np.isinf(exact.kl(jnp.log(jnp.array([[0.5, 0.5]])), jnp.log(jnp.array([[1.0, 0.0]])))[0])


def test_optimal_policy_closed_form_and_optimality_float64():
    with jax.enable_x64(True):
        world = make_exact_world(SMALL)
        beta = 0.3
        logp_star = exact.optimal_policy(world.logp_ref, world.reward, beta)
        pi_ref, r = np.exp(np.asarray(world.logp_ref)), np.asarray(world.reward)
        w = pi_ref * np.exp(r / beta)
        np.testing.assert_allclose(np.exp(logp_star), w / w.sum(-1, keepdims=True), rtol=1e-10)

        def objective(logp):  # E[r] - beta KL(pi || pi_ref)
            return exact.expected_reward(logp, world.reward) - beta * exact.kl(logp, world.logp_ref)

        # the optimum value is beta log Z (Rafailov et al. 2023, appendix A.1)
        np.testing.assert_allclose(objective(logp_star), beta * np.log(w.sum(-1)), rtol=1e-10)
        rng = np.random.default_rng(0)
        for _ in range(20):
            other = jax.nn.log_softmax(logp_star + 0.3 * rng.normal(size=logp_star.shape), -1)
            assert np.all(objective(other) < objective(logp_star))


def test_optimal_policy_limits_in_beta():
    world = make_exact_world(SMALL)
    best = np.argmax(np.asarray(world.reward), -1)
    near_argmax = np.exp(exact.optimal_policy(world.logp_ref, world.reward, 1e-4))
    np.testing.assert_allclose(near_argmax[np.arange(2), best], 1.0, atol=1e-5)
    near_ref = exact.optimal_policy(world.logp_ref, world.reward, 1e6)
    np.testing.assert_allclose(near_ref, world.logp_ref, atol=1e-5)
    with pytest.raises(ValueError, match="beta"):
        exact.optimal_policy(world.logp_ref, world.reward, 0.0)


def test_frontier_is_monotone_in_beta():
    world = make_exact_world(SMALL)
    betas = jnp.array([0.03, 0.1, 0.3, 1.0, 3.0])
    kls, rewards = exact.optimal_frontier(world.logp_ref, world.reward, betas)  # [M, P]
    assert kls.shape == rewards.shape == (5, 2)
    assert np.all(np.diff(np.asarray(kls), axis=0) < 0)  # smaller beta: further from pi_ref
    assert np.all(np.diff(np.asarray(rewards), axis=0) < 0)  # ... and more reward


def _brute_force_best_of_n(p, r, n):
    """Enumerate all N^n draws; the winner is the max under the order (reward, index)."""
    out = np.zeros_like(p)
    for draw in itertools.product(range(len(p)), repeat=n):
        winner = max(draw, key=lambda i: (r[i], i))
        out[winner] += np.prod(p[list(draw)])
    return out


@pytest.mark.parametrize("n", [1, 2, 3])
def test_best_of_n_equals_enumeration_with_ties_float64(n):
    with jax.enable_x64(True):
        rng = np.random.default_rng(n)
        p = rng.dirichlet(np.ones(6), size=2)
        p[1, 2] = 0.0  # a response pi_ref never writes
        p[1] /= p[1].sum()
        r = np.array([[0.1, 0.5, 0.5, -1.0, 0.5, 0.2],  # three-way tie
                      [0.3, 0.3, 0.9, 0.0, 0.7, 0.1]])
        with np.errstate(divide="ignore"):
            got = np.exp(exact.best_of_n_logprobs(jnp.log(p), jnp.asarray(r), n))
        for row in range(2):
            np.testing.assert_allclose(got[row], _brute_force_best_of_n(p[row], r[row], n),
                                       atol=1e-12)


def test_best_of_n_kl_is_below_the_bound_and_approaches_it_for_many_atoms():
    world = make_exact_world(ExactWorldConfig())  # 256 distinct-reward responses
    for n in [2, 4, 16, 64]:
        logp_bon = exact.best_of_n_logprobs(world.logp_ref, world.reward, n)
        np.testing.assert_allclose(np.exp(logp_bon).sum(-1), 1.0, atol=1e-4)  # float32
        kl_bon = np.asarray(exact.kl(logp_bon, world.logp_ref))
        bound = exact.best_of_n_kl_bound(n)
        assert np.all(kl_bon <= bound + 1e-5)
        assert np.all(kl_bon > 0.99 * bound)
        # and best-of-n does improve the expected reward
        assert np.all(exact.expected_reward(logp_bon, world.reward)
                      > exact.expected_reward(world.logp_ref, world.reward))
    assert exact.best_of_n_kl_bound(1) == 0.0


def test_ipo_optimal_policy_closed_form_float64():
    with jax.enable_x64(True):
        world = make_exact_world(SMALL)
        beta = 0.5
        pi_ref, r = np.exp(np.asarray(world.logp_ref)), np.asarray(world.reward)
        expected = np.zeros_like(pi_ref)
        for p in range(pi_ref.shape[0]):
            for i in range(pi_ref.shape[1]):  # p(y_i > pi_ref) = sum_j pi_ref(j) sigma(r_i - r_j)
                win = sum(pi_ref[p, j] / (1 + np.exp(-(r[p, i] - r[p, j])))
                          for j in range(pi_ref.shape[1]))
                expected[p, i] = pi_ref[p, i] * np.exp(win / beta)
        expected /= expected.sum(-1, keepdims=True)
        got = np.exp(exact.ipo_optimal_policy(world.logp_ref, world.reward, beta))
        np.testing.assert_allclose(got, expected, rtol=1e-10)
