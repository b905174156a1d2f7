"""PPO on the transformer (minirlhf/ppo_train.py), on a tiny random GPT and stand-in reward models."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import written_out_lm_loss

from minirlhf import ppo, ppo_train
from minirlhf.evaluation import sequence_kl
from minirlhf.model import GPTConfig, forward, init_params, init_scalar_head, scalar_head
from minirlhf.pretrain import ptx_loss
from minirlhf.sampling import generate

MODEL = GPTConfig(vocab_size=16, max_len=12, n_layer=1, n_head=2, d_model=16)
P, N = 4, 5                      # prompt width, response budget (P + N + 3 pads <= max_len)
CFG = ppo_train.PPOConfig(batch_size=8, update=ppo.PPOUpdateConfig(2, 2), lr=1e-3, prompt_len=P, ptx_coef=0.0,
                     max_new_tokens=N, kl=ppo.KLControllerConfig(init_beta=0.1))
METRICS = ("objective/kl", "objective/kl_coef", "objective/entropy", "objective/scores",
           "objective/non_score_reward", "objective/rlhf_reward", "policy/approxkl",
           "policy/clipfrac", "policy/entropy", "loss/policy", "loss/value", "loss/total", "loss/ptx",
           "val/ratio", "val/clipfrac", "val/explained_variance", "val/mean",
           "rollout/response_length", "rollout/logprob_mismatch")


def prompts():
    """4 left-padded prompts `<pad>.. <bos> w..` of 1-3 words from ids 3..15."""
    tokens = np.array([[0, 0, 1, 5], [0, 1, 7, 3], [1, 9, 4, 6], [0, 0, 1, 12]], np.int32)
    return jnp.asarray(tokens), jnp.asarray((tokens > 0).astype(np.int32))


@pytest.fixture(scope="module")
def models():
    k_pi, k_rm, k_head, k_v = jax.random.split(jax.random.PRNGKey(0), 4)
    ref = init_params(k_pi, MODEL)
    rm = {"backbone": init_params(k_rm, MODEL), "head": init_scalar_head(k_head, MODEL)}
    rm["head"]["w"] = rm["head"]["w"] * 50.0                        # scores of order 1
    return ref, rm, ppo_train.init_ppo_state(ref, rm, MODEL, CFG, k_v)


@pytest.fixture(scope="module")
def one_iteration(models):
    """(state before, state after, IterationOut) of one jitted iteration with CFG."""
    ref, rm, state = models
    pt, pm = prompts()
    new_state, out = ppo_train.ppo_iteration(state, ref, rm, pt, pm, jax.random.PRNGKey(5), cfg=CFG,
                                        model_cfg=MODEL)
    return state, new_state, out


make_rollout = jax.jit(ppo_train.make_rollout, static_argnames=("cfg", "model_cfg", "reward_fn"))
loss_and_grad = jax.jit(jax.value_and_grad(ppo_train.ppo_loss, has_aux=True), static_argnames=("cfg", "model_cfg"))


def rollout(params, ref, rm, key, cfg=CFG):
    pt, pm = prompts()
    pt, pm = jnp.tile(pt, (2, 1)), jnp.tile(pm, (2, 1))              # B = 8
    return make_rollout(params, ref, rm, pt, pm, jnp.float32(0.1), key, cfg=cfg, model_cfg=MODEL)


def test_old_logprobs_equal_the_samplers(models):
    """Recomputed log pi_old == the sampler's log-probs, at a temperature != 1 (where forgetting
    to scale the logits would show; temperature 1 is checked every iteration, see below)."""
    ref, rm, state = models
    cfg = dataclasses.replace(CFG, temperature=0.7)
    key = jax.random.PRNGKey(1)
    batch, stats = rollout(state.train_state.params, ref, rm, key, cfg)
    pt, pm = prompts()
    gen = generate(state.train_state.params["policy"], jnp.tile(pt, (2, 1)), jnp.tile(pm, (2, 1)), key,
                   cfg=MODEL, max_new_tokens=N, temperature=0.7)
    np.testing.assert_array_equal(batch["tokens"], gen.tokens)
    assert gen.response_mask.sum() > 8                               # something was sampled
    np.testing.assert_allclose(batch["old_logps"] * gen.response_mask, gen.logprobs, atol=2e-5)
    assert float(stats["rollout/logprob_mismatch"]) < 2e-5


def test_reference_gets_no_gradient_and_is_unchanged(models, one_iteration):
    ref, rm, state = models
    params, key = state.train_state.params, jax.random.PRNGKey(2)

    @jax.jit
    def loss_through_rollout(ref_params):
        batch, _ = rollout(params, ref_params, rm, key)
        return ppo_train.ppo_loss(params, batch, CFG, MODEL)[0]

    grads = jax.grad(loss_through_rollout)(ref)
    for g in jax.tree_util.tree_leaves(grads):
        assert np.all(np.asarray(g) == 0.0)
    ref_again = init_params(jax.random.split(jax.random.PRNGKey(0), 4)[0], MODEL)  # a fresh copy
    _, new_state, _ = one_iteration
    for a, b in zip(jax.tree_util.tree_leaves(ref_again), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(a, b)
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
        jax.tree_util.tree_leaves(new_state.train_state.params["policy"]), jax.tree_util.tree_leaves(ref))]
    assert max(moved) > 0                                            # the policy did move


def test_padding_contributes_nothing(models):
    ref, rm, state = models
    params = state.train_state.params
    batch, _ = rollout(params, ref, rm, jax.random.PRNGKey(3))
    padded = {k: jnp.pad(v, ((0, 0), (0, 3))) for k, v in batch.items()}   # 3 pad columns (id 0, masks 0)
    (loss, metrics), grads = loss_and_grad(params, batch, cfg=CFG, model_cfg=MODEL)
    (loss_p, metrics_p), grads_p = loss_and_grad(params, padded, cfg=CFG, model_cfg=MODEL)
    np.testing.assert_allclose(loss_p, loss, rtol=1e-5, atol=1e-6)
    for name in metrics:
        np.testing.assert_allclose(metrics_p[name], metrics[name], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_p)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_values_are_aligned_with_the_state_before_each_token(models):
    ref, rm, state = models
    params = state.train_state.params
    batch, _ = rollout(params, ref, rm, jax.random.PRNGKey(3))
    hidden = forward(params["policy"], batch["tokens"], batch["attention_mask"], MODEL).hidden
    v_after = np.asarray(scalar_head(params["value"]["head"], hidden))          # V after token t
    np.testing.assert_allclose(batch["old_values"][:, P], v_after[:, P - 1], rtol=1e-5)  # V(prompt)
    np.testing.assert_array_equal(batch["old_values"][:, 0], 0.0)


def test_one_jitted_iteration_returns_documented_finite_metrics(one_iteration):
    state, new_state, out = one_iteration
    assert set(out.metrics) == set(METRICS)
    for name, value in out.metrics.items():
        assert np.isfinite(float(value)), name
    assert float(out.metrics["rollout/logprob_mismatch"]) < 2e-5
    assert float(out.metrics["objective/kl"]) == 0.0                 # pi_theta = pi_ref at the start
    assert out.tokens.shape == (CFG.batch_size, P + N) and out.prompt_idx.shape == (CFG.batch_size,)
    np.testing.assert_array_equal(np.bincount(np.asarray(out.prompt_idx), minlength=4), [2, 2, 2, 2])
    assert float(new_state.kl_ctl.beta) == pytest.approx(0.1)            # fixed-beta mode
    steps = CFG.update.n_epochs * CFG.update.n_minibatches
    assert int(new_state.train_state.step) == int(state.train_state.step) + steps


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_value_function_receives_gradients(models, value_model):
    ref, rm, _ = models
    cfg = dataclasses.replace(CFG, value_model=value_model)
    state = ppo_train.init_ppo_state(ref, rm, MODEL, cfg, jax.random.PRNGKey(0))
    batch, _ = rollout(state.train_state.params, ref, rm, jax.random.PRNGKey(6), cfg)
    _, grads = loss_and_grad(state.train_state.params, batch, cfg=cfg, model_cfg=MODEL)
    for g in jax.tree_util.tree_leaves(grads["value"]):
        assert np.abs(np.asarray(g)).max() > 0
    if value_model == "separate":                                    # InstructGPT: V starts as r_phi
        np.testing.assert_array_equal(state.train_state.params["value"]["head"]["w"], rm["head"]["w"])


def test_the_iteration_updates_the_value_head(one_iteration):
    state, new_state, _ = one_iteration
    w_old = np.asarray(state.train_state.params["value"]["head"]["w"])
    assert np.abs(np.asarray(new_state.train_state.params["value"]["head"]["w"]) - w_old).max() > 0


TARGET = 9
BEHAVIOUR_CFG = dataclasses.replace(
    CFG, batch_size=16, lr=1e-2,
    kl=ppo.KLControllerConfig(init_beta=0.01, adaptive=True, target=1e6, horizon=160.0))


def count_target(rm_params, tokens, attention_mask, response_mask, model_cfg):
    """Stand-in reward: the number of times TARGET occurs in the response."""
    return jnp.sum((tokens == TARGET) * response_mask, axis=1)


def first_token_prob(policy, token):
    pt, pm = prompts()
    logits = forward(policy, pt, pm, MODEL).logits[:, -1]                  # next token after prompt
    return float(jnp.mean(jax.nn.softmax(logits, axis=-1)[:, token]))


@pytest.fixture(scope="module")
def behaviour_run(models):
    """6 iterations rewarding TARGET, with the adaptive controller (KL far below its target)."""
    ref, rm, _ = models
    state = ppo_train.init_ppo_state(ref, rm, MODEL, BEHAVIOUR_CFG, jax.random.PRNGKey(0))
    pt, pm = prompts()
    betas, scores = [float(state.kl_ctl.beta)], []
    for key in jax.random.split(jax.random.PRNGKey(8), 6):
        state, out = ppo_train.ppo_iteration(state, ref, rm, pt, pm, key, cfg=BEHAVIOUR_CFG, model_cfg=MODEL,
                                        reward_fn=count_target)
        betas.append(float(state.kl_ctl.beta))
        scores.append(float(out.metrics["objective/scores"]))
    return state, betas, scores


def test_ppo_increases_the_probability_of_the_rewarded_token(models, behaviour_run):
    ref, _, _ = models
    state, _, scores = behaviour_run
    p_before = first_token_prob(ref, TARGET)
    p_after = first_token_prob(state.train_state.params["policy"], TARGET)
    assert p_after > 2 * p_before, (p_before, p_after)
    assert np.mean(scores[-2:]) > np.mean(scores[:2]), scores


def test_adaptive_controller_lowers_beta_when_kl_is_below_target(behaviour_run):
    _, betas, _ = behaviour_run
    # e = clip(KL / target - 1, -0.2, 0.2) = -0.2 every iteration;  beta' = beta (1 + e B / horizon)
    expected = 0.01 * (1 - 0.2 * 16 / 160.0) ** np.arange(7)
    np.testing.assert_allclose(betas, expected, rtol=1e-5)


def test_ptx_term_adds_gamma_times_the_written_out_lm_loss(models):
    """PPO-ptx (Ouyang et al. 2022 eq. 2): L = L_PPO + gamma * L_LM on pretraining rows, with
    L_LM = -(1/N) sum_{t>0, m_t=1} log softmax(z_{t-1})[x_t] written out here in NumPy."""
    ref, rm, state = models
    batch, _ = rollout(state.train_state.params, ref, rm, jax.random.PRNGKey(3))
    rng = np.random.default_rng(0)
    ptx_tokens = rng.integers(3, MODEL.vocab_size, (8, 7)).astype(np.int32)
    ptx_mask = np.ones((8, 7), np.int32)
    ptx_mask[:3, 5:] = 0                                   # some right padding
    batch = {**batch, "ptx_tokens": jnp.asarray(ptx_tokens), "ptx_attention_mask": jnp.asarray(ptx_mask),
             "ptx_loss_mask": jnp.asarray(ptx_mask)}
    params, gamma = state.train_state.params, 0.7
    cfg = dataclasses.replace(CFG, ptx_coef=gamma)
    (loss0, _), g0 = loss_and_grad(params, batch, cfg=CFG, model_cfg=MODEL)
    (loss1, m1), g1 = loss_and_grad(params, batch, cfg=cfg, model_cfg=MODEL)

    lm = written_out_lm_loss(forward(params["policy"], batch["ptx_tokens"], batch["ptx_attention_mask"],
                                     MODEL).logits, ptx_tokens, ptx_mask)
    np.testing.assert_allclose(float(m1["loss/ptx"]), lm, rtol=1e-5)
    np.testing.assert_allclose(float(loss1), float(loss0) + gamma * lm, rtol=1e-5)
    # the ptx term moves the policy only (and does move it); the value head's gradient is unchanged
    diff = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), g1, g0)
    assert max(jax.tree_util.tree_leaves(diff["policy"])) > 1e-4
    assert max(jax.tree_util.tree_leaves(diff["value"]), default=0.0) == 0.0


def test_ptx_iteration_runs_and_rejects_a_negative_coefficient(models):
    ref, rm, state = models
    pt, pm = prompts()
    table = {"tokens": jnp.tile(pt, (3, 1)), "attention_mask": jnp.tile(pm, (3, 1)),
             "loss_mask": jnp.tile(pm, (3, 1))}
    cfg = dataclasses.replace(CFG, ptx_coef=0.5)
    _, out = ppo_train.ppo_iteration(state, ref, rm, pt, pm, jax.random.PRNGKey(5), table, cfg=cfg,
                                model_cfg=MODEL)
    assert np.isfinite(float(out.metrics["loss/ptx"])) and float(out.metrics["loss/ptx"]) > 0
    with pytest.raises(ValueError, match="ptx_coef"):
        ppo_train.PPOConfig(ptx_coef=-1.0)


def test_ptx_gradient_equals_finite_differences_of_the_written_out_lm_loss():
    """The gradient PPO-ptx and DPO-ptx add (gamma * grad L_LM, via `pretrain.ptx_loss`) against
    central differences of the float64 loop `written_out_lm_loss`, along random directions."""
    with jax.enable_x64(True):
        cfg = dataclasses.replace(MODEL, compute_dtype="float64")
        params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                        init_params(jax.random.PRNGKey(7), cfg))
        rng = np.random.default_rng(1)
        tokens = rng.integers(3, cfg.vocab_size, (3, 6)).astype(np.int32)
        mask = np.ones((3, 6), np.int32)
        mask[0, 4:] = 0
        batch = {"ptx_tokens": jnp.asarray(tokens), "ptx_attention_mask": jnp.asarray(mask),
                 "ptx_loss_mask": jnp.asarray(mask)}
        grad = jax.grad(ptx_loss)(params, batch, cfg)

        def written_out(p):
            return written_out_lm_loss(forward(p, batch["ptx_tokens"], batch["ptx_attention_mask"], cfg).logits,
                                       tokens, mask)

        for seed in range(3):
            leaves, treedef = jax.tree_util.tree_flatten(params)
            keys = jax.random.split(jax.random.PRNGKey(100 + seed), len(leaves))
            d = jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, x.shape, jnp.float64)
                                                       for k, x in zip(keys, leaves)])
            eps = 1e-5
            shifted = lambda s: jax.tree_util.tree_map(lambda x, dx: x + s * eps * dx, params, d)
            fd = (written_out(shifted(1.0)) - written_out(shifted(-1.0))) / (2 * eps)
            analytic = sum(float(jnp.vdot(g, dx)) for g, dx in zip(jax.tree_util.tree_leaves(grad),
                                                                     jax.tree_util.tree_leaves(d)))
            np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-8)


def test_sequence_kl_of_tempered_samples_matches_the_exact_kl():
    """sequence_kl on samples of pi at temperature T estimates KL(pi_T || pi) (the sampler's
    log-probs are the tempered ones).  One-token responses: the exact value is
    sum_v softmax(z/T)_v (log softmax(z/T)_v - log softmax(z)_v) at the last prompt position."""
    params = init_params(jax.random.PRNGKey(3), MODEL)
    params["wte"] = params["wte"] * 10.0            # a fresh GPT is near-uniform: sharpen its logits
    pt, pm = prompts()
    reps, T = 2048, 0.5
    gen = generate(params, jnp.tile(pt, (reps, 1)), jnp.tile(pm, (reps, 1)), jax.random.PRNGKey(4),
                   cfg=MODEL, max_new_tokens=1, temperature=T)
    terms = np.asarray(sequence_kl(params, gen, MODEL)).reshape(reps, 4)           # [reps, 4]
    z = np.asarray(forward(params, pt, pm, MODEL).logits[:, -1], np.float64)             # [4, V]
    log_softmax = lambda x: x - x.max(-1, keepdims=True) - np.log(
        np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
    log_p, log_pt = log_softmax(z), log_softmax(z / T)
    exact = (np.exp(log_pt) * (log_pt - log_p)).sum(-1)                                  # [4]
    se = terms.std(0) / np.sqrt(reps)
    assert np.all(exact > 0.1), exact
    assert np.all(np.abs(terms.mean(0) - exact) < 4 * se), (terms.mean(0), exact, se)
