"""DPO / cDPO / IPO losses against their formulas, closed-form gradients written out in NumPy,
and the DPO gradient through a tabular policy against per-sequence gradients."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf.dpo import dpo_loss, ipo_loss, preference_logratios, preference_losses
from minirlhf.exact import tabular
from minirlhf.exact import world as exact


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _random_logps(seed, B=6):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(-rng.uniform(1.0, 10.0, size=B)) for _ in range(4)]


def test_logratios_and_h_from_token_level_tables():
    """From per-token log-prob tables of both models and a response mask: the log-ratio of one
    response is sum over its tokens of (log pi_theta(y_t) - log pi_ref(y_t)), accumulated token by
    token in a float64 loop; h is the chosen one minus the rejected one."""
    rng = np.random.default_rng(0)
    B, T = 5, 7
    tables = {name: -rng.uniform(0.05, 3.0, size=(B, T)) for name in ("pc", "pr", "rc", "rr")}
    masks = {side: (rng.uniform(size=(B, T)) < 0.7).astype(np.float64) for side in ("c", "r")}
    summed = {name: jnp.asarray((t * masks[name[1]]).sum(-1), jnp.float32) for name, t in tables.items()}
    ratios = preference_logratios(summed["pc"], summed["pr"], summed["rc"], summed["rr"])
    for i in range(B):
        chosen = rejected = 0.0
        for t in range(T):
            if masks["c"][i, t]:
                chosen += tables["pc"][i, t] - tables["rc"][i, t]
            if masks["r"][i, t]:
                rejected += tables["pr"][i, t] - tables["rr"][i, t]
        np.testing.assert_allclose(ratios.chosen_logratios[i], chosen, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ratios.rejected_logratios[i], rejected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ratios.h[i], chosen - rejected, rtol=1e-5, atol=1e-5)
    pc, pr, rc, rr = _random_logps(0)
    with pytest.raises(ValueError, match="four log-prob arrays"):
        preference_logratios(pc, pr[:3], rc, rr)


def test_dpo_is_log2_when_policy_equals_reference():
    pc, pr, _, _ = _random_logps(1)
    loss, m = dpo_loss(pc, pr, pc, pr, beta=0.1)
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(m["rewards/margins"], 0.0, atol=1e-7)


def test_dpo_value_metrics_and_gradient_closed_form():
    pc, pr, rc, rr = _random_logps(2)
    beta, B = 0.3, 6
    h = np.asarray((pc - rc) - (pr - rr), np.float64)
    loss, m = dpo_loss(pc, pr, rc, rr, beta)
    np.testing.assert_allclose(loss, -np.mean(np.log(_sigmoid(beta * h))), rtol=1e-5)  # eq. 7
    np.testing.assert_allclose(m["rewards/chosen"], beta * np.mean(pc - rc), rtol=1e-5)
    np.testing.assert_allclose(m["rewards/rejected"], beta * np.mean(pr - rr), rtol=1e-5)
    np.testing.assert_allclose(m["rewards/margins"], beta * np.mean(h), rtol=1e-5)
    np.testing.assert_allclose(m["rewards/accuracies"], np.mean(h > 0))
    np.testing.assert_allclose(m["logps/chosen"], np.mean(pc), rtol=1e-6)
    np.testing.assert_allclose(m["logps/rejected"], np.mean(pr), rtol=1e-6)
    g_c, g_r = jax.grad(lambda a, b: dpo_loss(a, b, rc, rr, beta)[0], argnums=(0, 1))(pc, pr)
    # dL/dlog pi(y_w) = -beta sigmoid(-beta h) / B,  dL/dlog pi(y_l) = +beta sigmoid(-beta h) / B
    np.testing.assert_allclose(g_c, -beta * _sigmoid(-beta * h) / B, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(g_r, +beta * _sigmoid(-beta * h) / B, rtol=1e-4, atol=1e-8)


def test_label_smoothing_zero_is_plain_dpo_and_cdpo_matches_its_formula():
    pc, pr, rc, rr = _random_logps(3)
    beta, eps, B = 0.5, 0.2, 6
    h = np.asarray((pc - rc) - (pr - rr), np.float64)
    plain = np.mean([-np.log(_sigmoid(beta * hi)) for hi in h])          # eq. 7, pair by pair
    for kwargs in ({}, {"label_smoothing": 0.0}):                       # default and explicit eps = 0
        loss, _ = dpo_loss(pc, pr, rc, rr, beta, **kwargs)
        np.testing.assert_allclose(loss, plain, rtol=1e-5)
    smoothed, _ = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps)
    expected = np.mean(-(1 - eps) * np.log(_sigmoid(beta * h)) - eps * np.log(_sigmoid(-beta * h)))
    np.testing.assert_allclose(smoothed, expected, rtol=1e-5)
    assert abs(expected - plain) > 1e-3                                  # eps changes the loss
    # d/d log pi(y_w) = -beta [(1 - eps) sigma(-beta h) - eps sigma(beta h)] / B (cDPO, Mitchell 2023)
    g_c = jax.grad(lambda a: dpo_loss(a, pr, rc, rr, beta, label_smoothing=eps)[0])(pc)
    np.testing.assert_allclose(
        g_c, -beta * ((1 - eps) * _sigmoid(-beta * h) - eps * _sigmoid(beta * h)) / B,
        rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("loss_type, eps", [("dpo", 0.0), ("dpo", 0.3), ("ipo", 0.0)])
def test_preference_losses_per_pair_value_and_gradient(loss_type, eps):
    """One loss per pair from h, each variant against its equation in float64, and d l_i / d h_i
    against the derivative written out (the Jacobian is diagonal: pair i's loss depends on h_i only)."""
    h = jnp.asarray(np.random.default_rng(5).normal(0.0, 3.0, size=7), jnp.float32)
    beta = 0.4
    losses = preference_losses(h, beta, loss_type, label_smoothing=eps)
    jac = jax.jacobian(lambda x: preference_losses(x, beta, loss_type, label_smoothing=eps))(h)
    assert losses.shape == (7,)
    np.testing.assert_allclose(jac, np.diag(np.diag(jac)), atol=0)
    for i, hi in enumerate(np.asarray(h, np.float64)):
        if loss_type == "ipo":
            value, slope = (hi - 1 / (2 * beta)) ** 2, 2 * (hi - 1 / (2 * beta))     # Azar eq. 17
        else:
            value = -(1 - eps) * np.log(_sigmoid(beta * hi)) - eps * np.log(_sigmoid(-beta * hi))
            slope = -beta * ((1 - eps) * _sigmoid(-beta * hi) - eps * _sigmoid(beta * hi))
        np.testing.assert_allclose(losses[i], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(jac[i, i], slope, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="loss_type"):
        preference_losses(h, beta, "kto")


def test_ipo_value_gradient_and_minimiser():
    pc, pr, rc, rr = _random_logps(4)
    beta, B = 0.25, 6
    h = np.asarray((pc - rc) - (pr - rr), np.float64)
    target = 1.0 / (2.0 * beta)
    loss, _ = ipo_loss(pc, pr, rc, rr, beta)
    np.testing.assert_allclose(loss, np.mean((h - target) ** 2), rtol=1e-5)  # Azar eq. 17
    g_c, g_r = jax.grad(lambda a, b: ipo_loss(a, b, rc, rr, beta)[0], argnums=(0, 1))(pc, pr)
    np.testing.assert_allclose(g_c, 2.0 * (h - target) / B, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_r, -2.0 * (h - target) / B, rtol=1e-4, atol=1e-6)
    # minimiser: h = 1/(2 beta) gives zero loss and zero gradient
    pc_star = rc + (pr - rr) + target
    loss_star, _ = ipo_loss(pc_star, pr, rc, rr, beta)
    np.testing.assert_allclose(loss_star, 0.0, atol=1e-8)
    g_star = jax.grad(lambda a: ipo_loss(a, pr, rc, rr, beta)[0])(pc_star)
    np.testing.assert_allclose(g_star, 0.0, atol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_no_inf_or_nan_at_extreme_logratios(sign):
    pc = jnp.array([sign * 1000.0, 0.0])
    pr = jnp.array([0.0, sign * 1000.0])
    zeros = jnp.zeros(2)
    cases = [(dpo_loss, {"beta": 1.0}), (dpo_loss, {"beta": 1.0, "label_smoothing": 0.1}),
             (ipo_loss, {"beta": 1.0})]
    for loss_fn, kwargs in cases:
        (loss, metrics), grads = jax.value_and_grad(
            partial(loss_fn, reference_chosen_logps=zeros, reference_rejected_logps=zeros,
                    **kwargs),
            argnums=(0, 1), has_aux=True)(pc, pr)
        assert np.isfinite(loss)
        assert all(np.all(np.isfinite(g)) for g in grads)
        assert all(np.isfinite(v) for v in metrics.values())


def test_dpo_gradient_through_tabular_policy_equals_per_sequence_formula():
    """grad L = -beta/B sum_i sigmoid(r_l - r_w) (grad log pi(y_w) - grad log pi(y_l)),
    r = beta (log pi - log pi_ref) (Rafailov et al. 2023, sec. 5)."""
    A, K, P, B, beta = 3, 3, 2, 5, 0.4
    params = tabular.init_tabular(jax.random.key(0), P, A, K, scale=1.0)
    ref = tabular.init_tabular(jax.random.key(1), P, A, K, scale=1.0)
    rng = np.random.default_rng(0)
    prompt_ids = jnp.asarray(rng.integers(0, P, size=B))
    y_w, y_l = (jnp.asarray(rng.integers(0, A, size=(B, K))) for _ in range(2))

    def seq_logp(p, ids, y):  # [B] summed log-probs
        return tabular.token_logprobs(p, ids, y).sum(-1)

    def loss(p):
        return dpo_loss(seq_logp(p, prompt_ids, y_w), seq_logp(p, prompt_ids, y_l),
                        seq_logp(ref, prompt_ids, y_w), seq_logp(ref, prompt_ids, y_l), beta)[0]

    grad = jax.grad(loss)(params)["logits"]
    r_w = beta * (seq_logp(params, prompt_ids, y_w) - seq_logp(ref, prompt_ids, y_w))
    r_l = beta * (seq_logp(params, prompt_ids, y_l) - seq_logp(ref, prompt_ids, y_l))
    # grad log pi(y | p) of one sequence (jit-ed once, called per sequence)
    grad_one = jax.jit(jax.grad(lambda p, pid, y: seq_logp(p, pid[None], y[None])[0]))
    expected = np.zeros(params["logits"].shape)
    for i in range(B):
        g_w = grad_one(params, prompt_ids[i], y_w[i])["logits"]
        g_l = grad_one(params, prompt_ids[i], y_l[i])["logits"]
        expected += -beta / B * _sigmoid(float(r_l[i] - r_w[i])) * np.asarray(g_w - g_l)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(expected).max() > 1e-3  # the check is not vacuous
    # and the policy gradient lives only on the prefix nodes the pairs visit
    visited = np.zeros(params["logits"].shape[:2], bool)
    for y in (y_w, y_l):
        nodes = np.asarray(exact.prefix_nodes(y, A))
        visited[np.asarray(prompt_ids)[:, None], nodes] = True
    assert np.all(np.asarray(grad)[~visited] == 0.0)
