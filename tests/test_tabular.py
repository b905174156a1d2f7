"""Tabular policies, and PPO / DPO / IPO on the exact world checked against pi*_beta."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.exact import tabular
from minirlhf.exact import training as et
from minirlhf.exact import world as exact
from minirlhf.exact.world import ExactWorldConfig, make_exact_world

A, K, P = 3, 3, 2
WORLD = make_exact_world(ExactWorldConfig(n_prompts=P, alphabet_size=A, length=K, seed=0))


# ----------------------------------------------------------------------------- the table


def test_all_sequence_logprobs_is_the_product_of_softmax_rows_float64():
    with jax.enable_x64(True):
        params = tabular.init_tabular(jax.random.key(0), P, A, K, scale=2.0)
        logp = np.asarray(tabular.all_sequence_logprobs(params))
        logits = np.asarray(params["logits"], np.float64)
        table = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        offsets = exact.level_offsets(A, K)
        for p in range(P):
            for n, y in enumerate(np.asarray(exact.all_responses(A, K))):
                nodes = [offsets[k] + int("".join(map(str, y[:k])) or "0", A) for k in range(K)]
                assert np.isclose(logp[p, n], sum(table[p, nodes[k], y[k]] for k in range(K)),
                                  atol=1e-12)
        np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, atol=1e-12)


def test_init_from_logprobs_reproduces_any_distribution():
    rng = np.random.default_rng(0)
    target = jax.nn.log_softmax(jnp.asarray(3.0 * rng.normal(size=(P, A**K))), -1)
    params = tabular.init_tabular_from_logprobs(target, A, K)
    np.testing.assert_allclose(tabular.all_sequence_logprobs(params), target, atol=1e-4)
    ref = tabular.init_tabular_from_logprobs(WORLD.logp_ref, A, K)  # start exactly at pi_ref
    np.testing.assert_allclose(tabular.all_sequence_logprobs(ref), WORLD.logp_ref, atol=1e-5)
    # zero-mass responses: the table stays finite and puts ~0 mass there
    sparse = np.full((1, A**K), -np.inf)
    sparse[0, [0, 5, 26]] = np.log([0.2, 0.3, 0.5])
    params = tabular.init_tabular_from_logprobs(jnp.asarray(sparse), A, K)
    assert np.all(np.isfinite(params["logits"]))
    np.testing.assert_allclose(np.exp(tabular.all_sequence_logprobs(params))[0, [0, 5, 26]],
                               [0.2, 0.3, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="A\\^K"):
        tabular.init_tabular_from_logprobs(target, A, K + 1)


def test_token_logprobs_and_values_index_the_right_nodes():
    params = tabular.init_tabular(jax.random.key(1), P, A, K, scale=1.0)
    params["values"] = jnp.arange(P * 13, dtype=jnp.float32).reshape(P, 13)
    prompt_ids = jnp.array([0, 1, 1])
    responses = jnp.array([[0, 0, 0], [2, 1, 0], [1, 2, 2]])
    tok = tabular.token_logprobs(params, prompt_ids, responses)  # [3, K]
    full = tabular.all_sequence_logprobs(params)
    idx = exact.response_index(responses, A)
    np.testing.assert_allclose(tok.sum(-1), full[prompt_ids, idx], atol=1e-5)
    # response (2, 1, 0) of prompt 1 visits nodes root=0, "2"=1+2=3, "21"=4+2*3+1=11
    np.testing.assert_array_equal(tabular.token_values(params, prompt_ids, responses)[1],
                                  [13 + 0, 13 + 3, 13 + 11])


def test_sampling_matches_the_exact_distribution():
    params = tabular.init_tabular_from_logprobs(WORLD.logp_ref, A, K)
    n = 20000
    prompt_ids = jnp.arange(n, dtype=jnp.int32) % P
    responses, logps = tabular.sample(params, prompt_ids, jax.random.key(2))
    np.testing.assert_allclose(logps, tabular.token_logprobs(params, prompt_ids, responses),
                               atol=1e-6)
    idx = np.asarray(exact.response_index(responses, A))
    for p in range(P):
        freq = np.bincount(idx[np.asarray(prompt_ids) == p], minlength=A**K) / (n // P)
        prob = np.exp(np.asarray(WORLD.logp_ref[p]))
        stderr = np.sqrt(prob * (1 - prob) / (n // P))
        assert np.all(np.abs(freq - prob) < 5 * stderr + 1e-9)


# ----------------------------------------------------------------------------- PPO


PPO_CFG = et.TabularPPOConfig(beta=0.1)


@pytest.fixture(scope="module")
def ppo_run():
    run = jax.jit(partial(et.run_ppo, WORLD, PPO_CFG))
    return run, run(jax.random.key(0))


def test_ppo_converges_to_the_kl_regularised_optimum(ppo_run):
    _, (params, history) = ppo_run
    logp_star = exact.optimal_policy(WORLD.logp_ref, WORLD.reward, PPO_CFG.beta)
    kl_before = float(exact.kl(WORLD.logp_ref, logp_star).mean())
    kl_after = float(exact.kl(tabular.all_sequence_logprobs(params), logp_star).mean())
    print(f"PPO: KL(pi || pi*) {kl_before:.4f} -> {kl_after:.2e}")
    assert kl_after < kl_before / 100
    np.testing.assert_allclose(history["exact/kl_to_optimum"][-1], kl_after, rtol=1e-3, atol=1e-5)
    r_star = float(exact.expected_reward(logp_star, WORLD.reward).mean())
    r_ref = float(exact.expected_reward(WORLD.logp_ref, WORLD.reward).mean())
    assert abs(float(history["exact/expected_reward"][-1]) - r_star) < 0.05 * (r_star - r_ref)
    assert float(history["rollout/explained_variance"][-1]) > 0.5  # the critic learned


def test_vmapped_ppo_runs_equal_individual_runs(ppo_run):
    run, (_, history0) = ppo_run
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    _, history_v = jax.jit(jax.vmap(partial(et.run_ppo, WORLD, PPO_CFG)))(keys)
    _, history1 = run(jax.random.key(1))
    # Same keys, same samples, same trajectory up to float32 reduction order. Sampling makes
    # the dynamics chaotic (one flipped sample changes the rest of the run), so compare the
    # first iterations tightly; a wrong key per seed would differ from the first iteration.
    for i, h in enumerate([history0, history1]):
        np.testing.assert_allclose(history_v["exact/kl_to_optimum"][i, :10],
                                   h["exact/kl_to_optimum"][:10], rtol=1e-4)
    assert not np.allclose(history_v["exact/kl_to_optimum"][0, :10],
                           history_v["exact/kl_to_optimum"][1, :10])  # seeds differ
    kl_before = history_v["exact/kl_to_optimum"][:, 0]  # after one iteration
    assert np.all(history_v["exact/kl_to_optimum"][:, -1] < kl_before / 10)  # every seed


# ----------------------------------------------------------------------------- DPO


def test_dpo_population_loss_is_minimised_exactly_at_pi_star():
    """At pi*_beta the implicit reward beta log(pi*/pi_ref) = r - beta log Z, so each pair's
    loss is the BT cross-entropy of the true preference with itself: its entropy."""
    cfg = et.TabularDPOConfig(beta=0.3, population=True)
    weights = et.population_pair_weights(WORLD)  # [P, N, N]
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-5)
    star = tabular.init_tabular_from_logprobs(
        exact.optimal_policy(WORLD.logp_ref, WORLD.reward, cfg.beta), A, K)
    loss, grads = jax.value_and_grad(et.grid_preference_loss)(star, WORLD, weights, cfg)
    s = np.asarray(jax.nn.sigmoid(WORLD.reward[:, :, None] - WORLD.reward[:, None, :]))
    pi = np.exp(np.asarray(WORLD.logp_ref, np.float64))
    entropy = -(s * np.log(s) + (1 - s) * np.log(1 - s))  # [P, N, N]
    expected = (pi[:, :, None] * pi[:, None, :] * entropy).sum() / P
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    assert np.abs(np.asarray(grads["logits"])).max() < 1e-5
    ref = tabular.init_tabular_from_logprobs(WORLD.logp_ref, A, K)
    np.testing.assert_allclose(et.grid_preference_loss(ref, WORLD, weights, cfg), np.log(2.0),
                               rtol=1e-5)


def _dpo_kl_drop(cfg, key):
    params, history = jax.jit(partial(et.run_dpo, WORLD, cfg))(key)
    logp_star = exact.optimal_policy(WORLD.logp_ref, WORLD.reward, cfg.beta)
    kl_before = float(exact.kl(WORLD.logp_ref, logp_star).mean())
    kl_after = float(exact.kl(tabular.all_sequence_logprobs(params), logp_star).mean())
    return kl_before, kl_after, history


def test_dpo_population_converges_to_pi_star():
    kl_before, kl_after, _ = _dpo_kl_drop(
        et.TabularDPOConfig(beta=0.1, population=True, n_steps=300), jax.random.key(0))
    print(f"DPO population: KL(pi || pi*) {kl_before:.4f} -> {kl_after:.2e}")
    assert kl_after < kl_before / 1000


def test_dpo_sampled_dataset_converges_to_pi_star():
    kl_before, kl_after, history = _dpo_kl_drop(et.TabularDPOConfig(beta=0.3), jax.random.key(0))
    print(f"DPO sampled: KL(pi || pi*) {kl_before:.4f} -> {kl_after:.4f}")
    assert kl_after < kl_before / 10
    assert np.all(np.isfinite(history["loss"]))


def test_vmapped_minibatch_dpo_runs_equal_individual_runs():
    cfg = et.TabularDPOConfig(beta=0.3, n_pairs_per_prompt=2048, batch_size=64, n_steps=50)
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    params_v, history_v = jax.jit(jax.vmap(partial(et.run_dpo, WORLD, cfg)))(keys)
    run = jax.jit(partial(et.run_dpo, WORLD, cfg))
    for i in range(2):
        params, history = run(keys[i])
        np.testing.assert_allclose(params_v["logits"][i], params["logits"], atol=1e-4)
        np.testing.assert_allclose(history_v["loss"][i], history["loss"], rtol=1e-4)
    assert history["loss"][-10:].mean() < history["loss"][:10].mean()  # minibatch SGD learns
    assert not np.allclose(params_v["logits"][0], params_v["logits"][1])


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="loss_type"):
        et.TabularDPOConfig(loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        et.TabularDPOConfig(label_smoothing=0.7)
    with pytest.raises(ValueError, match="kl_kind"):
        et.TabularPPOConfig(kl_kind="k5")
    with pytest.raises(ValueError, match="divisible"):
        et.TabularPPOConfig(batch_size=63)


def test_ipo_population_converges_to_its_own_optimum_not_pi_star():
    cfg = et.TabularDPOConfig(beta=0.3, population=True, loss_type="ipo")
    params, _ = jax.jit(partial(et.run_dpo, WORLD, cfg))(jax.random.key(0))
    logp = tabular.all_sequence_logprobs(params)
    logp_ipo = exact.ipo_optimal_policy(WORLD.logp_ref, WORLD.reward, cfg.beta)
    logp_star = exact.optimal_policy(WORLD.logp_ref, WORLD.reward, cfg.beta)
    assert float(exact.kl(logp, logp_ipo).mean()) < 1e-4
    assert float(exact.kl(logp, logp_star).mean()) > 0.05


@pytest.mark.parametrize("loss_type", ["dpo", "ipo"])
def test_grid_loss_on_empirical_weights_equals_the_loss_on_the_raw_dataset(loss_type):
    cfg = et.TabularDPOConfig(beta=0.3, loss_type=loss_type)
    raw = et.sample_preference_pairs(WORLD, 50000, jax.random.key(3))
    weights = et.empirical_pair_weights(raw, P, A**K)
    params = tabular.init_tabular(jax.random.key(4), P, A, K, scale=1.0)
    ref = tabular.init_tabular_from_logprobs(WORLD.logp_ref, A, K)
    loss_raw, grad_raw = jax.value_and_grad(et.preference_loss)(params, ref, WORLD, raw, cfg)
    loss_grid, grad_grid = jax.value_and_grad(et.grid_preference_loss)(params, WORLD, weights, cfg)
    np.testing.assert_allclose(loss_raw, loss_grid, rtol=1e-5)
    np.testing.assert_allclose(grad_raw["logits"], grad_grid["logits"], rtol=1e-3, atol=1e-6)
    # and the sampled frequencies approach the population pair distribution
    population = et.population_pair_weights(WORLD)
    assert np.abs(np.asarray(weights - population)).max() < 3e-3


# ----------------------------------------------------------------------------- IPO vs DPO


def _ipo_least_squares(pairs, n, beta):
    """IPO's optimum for a uniform reference: logits solving min sum (l_w - l_l - 1/(2 beta))^2."""
    D = np.zeros((len(pairs), n))
    D[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    D[np.arange(len(pairs)), pairs[:, 1]] = -1.0
    logits = np.linalg.lstsq(D, np.full(len(pairs), 1.0 / (2.0 * beta)), rcond=None)[0]
    return np.exp(logits) / np.exp(logits).sum()


def test_deterministic_preferences_dpo_collapses_ipo_stays_regularised():
    pairs = np.array([[0, 1], [0, 2], [1, 2]])  # a total order: 0 > 1 > 2, always
    logp_ref = jnp.log(jnp.full(3, 1.0 / 3.0))
    probs = {}
    for loss_type in ("dpo", "ipo"):
        for beta in (0.5, 1.0):
            cfg = et.TabularDPOConfig(beta=beta, loss_type=loss_type, n_steps=1000,
                                      learning_rate=0.1, anneal_lr=False)
            probs[loss_type, beta] = np.exp(np.asarray(jax.jit(
                partial(et.deterministic_preference_toy, cfg))(jnp.asarray(pairs), logp_ref)))
    for beta in (0.5, 1.0):
        assert probs["dpo", beta][2] < 1e-3  # DPO: the loser vanishes whatever beta
        assert probs["ipo", beta][2] > 0.05  # IPO: regularised ...
        np.testing.assert_allclose(probs["ipo", beta], _ipo_least_squares(pairs, 3, beta),
                                   atol=2e-3)  # ... at the least-squares solution
    assert abs(probs["ipo", 0.5][2] - probs["ipo", 1.0][2]) > 0.05  # ... which depends on beta
