"""GRPO / Dr. GRPO / RLOO / DAPO pieces against per-group, per-answer, per-token Python loops,
closed-form gradients and float64 finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minirlhf import grpo

# ----------------------------------------------------------------------------- written-out loops


def _advantages_loop(rewards, kind, eps):
    """One group at a time, one answer at a time, from the papers' formulas."""
    P, G = rewards.shape
    out = np.zeros((P, G))
    for p in range(P):
        group = [float(x) for x in rewards[p]]
        mean = sum(group) / G
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / G)  # population std
        for i in range(G):
            if kind == "grpo":
                out[p, i] = (group[i] - mean) / (std + eps)
            elif kind == "drgrpo":
                out[p, i] = group[i] - mean
            else:
                others = [group[j] for j in range(G) if j != i]
                out[p, i] = group[i] - sum(others) / (G - 1)
    return out


def _clipped_loss_loop(logps, old_logps, adv, mask, lo, hi, norm, max_tokens=None):
    """-min(rho A, clip(rho) A) token by token, then the normalisation written out."""
    B, T = logps.shape
    per_answer_sums, counts = [], []
    for i in range(B):
        total, n = 0.0, 0
        for t in range(T):
            if mask[i, t] == 0:
                continue
            rho = math.exp(logps[i, t] - old_logps[i, t])
            clipped = min(max(rho, 1 - lo), 1 + hi)
            total += -min(rho * adv[i], clipped * adv[i])
            n += 1
        per_answer_sums.append(total)
        counts.append(n)
    return _normalise(per_answer_sums, counts, B, T, norm, max_tokens)


def _normalise(per_answer_sums, counts, B, T, norm, max_tokens):
    if norm == "sequence":
        return sum(s / max(n, 1) for s, n in zip(per_answer_sums, counts)) / B
    if norm == "token":
        return sum(per_answer_sums) / sum(counts)
    return sum(per_answer_sums) / (B * (T if max_tokens is None else max_tokens))


def _k3_loop(logps, ref_logps, mask, norm, max_tokens=None):
    B, T = logps.shape
    sums, counts = [], []
    for i in range(B):
        total, n = 0.0, 0
        for t in range(T):
            if mask[i, t]:
                d = ref_logps[i, t] - logps[i, t]  # log(pi_ref / pi)
                total += math.exp(d) - d - 1
                n += 1
        sums.append(total)
        counts.append(n)
    return _normalise(sums, counts, B, T, norm, max_tokens)


def _weights(mask, norm, max_tokens=None):
    """d L / d l_it of each normalisation (the weight of token (i, t) in the loss)."""
    B, T = mask.shape
    n = mask.sum(-1, keepdims=True)
    if norm == "sequence":
        return mask / (B * np.maximum(n, 1))
    if norm == "token":
        return mask / mask.sum()
    return mask / (B * (T if max_tokens is None else max_tokens))


def _problem(seed, B=5, T=7):
    """Random per-token log-probs with unequal response lengths and offsets."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((B, T))
    for b in range(B):
        start = rng.integers(0, 3)
        mask[b, start:start + rng.integers(1, T - start + 1)] = 1.0
    old = -rng.uniform(0.2, 3.0, size=(B, T))
    logps = old + rng.normal(scale=0.3, size=(B, T))
    ref = old + rng.normal(scale=0.3, size=(B, T))
    adv = rng.normal(size=B)
    return logps, old, ref, adv, mask


# ----------------------------------------------------------------------------- advantages


@pytest.mark.parametrize("kind", grpo.ADVANTAGE_KINDS)
def test_group_advantages_equal_loop(kind):
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(6, 5))
    with jax.enable_x64(True):
        got = grpo.group_advantages(jnp.asarray(rewards), kind, eps=1e-4)
    np.testing.assert_allclose(got, _advantages_loop(rewards, kind, 1e-4), atol=1e-12)


def test_grpo_std_is_population_std():
    """G = 2, rewards (0, 1): population std 0.5 -> A = +-1 (the sample std would give +-0.707)."""
    adv = grpo.group_advantages(jnp.array([[0.0, 1.0]]), "grpo", eps=0.0)
    np.testing.assert_allclose(adv, [[-1.0, 1.0]], atol=1e-6)


def test_rloo_sums_to_zero_and_is_rescaled_drgrpo():
    rng = np.random.default_rng(1)
    for G in (2, 3, 8):
        rewards = jnp.asarray(rng.normal(size=(4, G)))
        rloo = grpo.group_advantages(rewards, "rloo")
        dr = grpo.group_advantages(rewards, "drgrpo")
        np.testing.assert_allclose(rloo.sum(-1), 0.0, atol=1e-5)
        np.testing.assert_allclose(rloo, G / (G - 1) * dr, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", grpo.ADVANTAGE_KINDS)
def test_constant_group_gives_zero_advantages_and_finite_gradient(kind):
    rewards = jnp.array([[0.3, 0.3, 0.3, 0.3], [1.0, 0.0, 0.0, 0.0]])
    adv = grpo.group_advantages(rewards, kind)
    assert np.all(np.isfinite(adv))
    np.testing.assert_array_equal(adv[0], 0.0)
    grads = jax.grad(lambda r: jnp.sum(grpo.group_advantages(r, kind) ** 2))(rewards)
    assert np.all(np.isfinite(grads))


def test_group_advantages_reject_bad_kind_and_tiny_group():
    with pytest.raises(ValueError, match="kind"):
        grpo.group_advantages(jnp.zeros((2, 3)), "ppo")
    with pytest.raises(ValueError, match="G >= 2"):
        grpo.group_advantages(jnp.zeros((2, 1)), "rloo")


# ----------------------------------------------------------------------------- clipped surrogate


@pytest.mark.parametrize("norm", grpo.NORMALISATIONS)
@pytest.mark.parametrize("lo,hi", [(0.2, 0.2), (0.1, 0.3)])
def test_clipped_policy_loss_equals_loop(norm, lo, hi):
    logps, old, _, adv, mask = _problem(2)
    with jax.enable_x64(True):
        loss, _ = grpo.clipped_policy_loss(*map(jnp.asarray, (logps, old, adv, mask)),
                                           clip_eps_low=lo, clip_eps_high=hi, norm=norm)
    np.testing.assert_allclose(loss, _clipped_loss_loop(logps, old, adv, mask, lo, hi, norm),
                               rtol=1e-12)


def test_constant_normalisation_uses_max_tokens():
    logps, old, _, adv, mask = _problem(3)
    with jax.enable_x64(True):
        loss, _ = grpo.clipped_policy_loss(*map(jnp.asarray, (logps, old, adv, mask)),
                                           norm="constant", max_tokens=20)
    np.testing.assert_allclose(
        loss, _clipped_loss_loop(logps, old, adv, mask, 0.2, 0.2, "constant", 20), rtol=1e-12)


@pytest.mark.parametrize("norm", grpo.NORMALISATIONS)
def test_clipped_policy_loss_gradient_closed_form(norm):
    """d L / d logp_it = -A_i rho_it w_it inside the clip range, 0 where the clip is active."""
    logps, old, _, adv, mask = _problem(4)
    logps = old + np.random.default_rng(5).uniform(-0.5, 0.5, size=old.shape)  # many clipped
    lo, hi = 0.1, 0.25
    with jax.enable_x64(True):
        grad = jax.grad(lambda x: grpo.clipped_policy_loss(
            x, jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask), clip_eps_low=lo,
            clip_eps_high=hi, norm=norm)[0])(jnp.asarray(logps))
    rho = np.exp(logps - old)
    A = adv[:, None]
    active = ((A > 0) & (rho > 1 + hi)) | ((A < 0) & (rho < 1 - lo))
    expected = np.where(active, 0.0, -A * rho) * _weights(mask, norm)
    assert active[mask > 0].any() and (~active[mask > 0]).any()
    np.testing.assert_allclose(grad, expected, atol=1e-12)


def test_three_normalisations_differ_as_the_equations_say():
    """Two answers, lengths 1 and 3, every token's loss the same value c (rho = 1, A = -c):
    sequence: (c + c) / 2 = c; token: 4c / 4 = c; constant: 4c / (2 * 4) = c/2.
    With A = (a1, a2) different: sequence weights each answer 1/2, token each token 1/4."""
    mask = jnp.array([[1.0, 0, 0, 0], [1.0, 1, 1, 0]])
    zeros = jnp.zeros((2, 4))
    adv = jnp.array([-1.0, -3.0])  # l_it = -A_i at rho = 1
    loss = {n: float(grpo.clipped_policy_loss(zeros, zeros, adv, mask, norm=n)[0])
            for n in grpo.NORMALISATIONS}
    np.testing.assert_allclose(loss["sequence"], (1.0 + 3.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(loss["token"], (1.0 + 3.0 * 3) / 4, rtol=1e-6)
    np.testing.assert_allclose(loss["constant"], (1.0 + 3.0 * 3) / (2 * 4), rtol=1e-6)
    # per-token gradient weights: the short answer's token counts 1/2 under "sequence",
    # the long answer's tokens 1/6 each; under "token" every token counts 1/4
    g_seq = jax.grad(lambda x: grpo.clipped_policy_loss(x, zeros, adv, mask)[0])(zeros)
    np.testing.assert_allclose(g_seq, [[0.5, 0, 0, 0], [1.5 / 3, 1.5 / 3, 1.5 / 3, 0]], rtol=1e-6)


def test_clip_higher_is_asymmetric():
    """eps_low = 0.1, eps_high = 0.3: a positive-advantage token keeps its gradient up to
    rho = 1.3, a negative-advantage one loses it below rho = 0.9."""
    mask = jnp.ones((4, 1))
    logps = jnp.log(jnp.array([[1.2], [1.4], [0.95], [0.85]]))
    adv = jnp.array([1.0, 1.0, -1.0, -1.0])
    zeros = jnp.zeros((4, 1))
    grad = jax.grad(lambda x: grpo.clipped_policy_loss(
        x, zeros, adv, mask, clip_eps_low=0.1, clip_eps_high=0.3, norm="token")[0])(logps)
    expected = np.array([[-1.2], [0.0], [0.95], [0.0]]) / 4
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    _, m = grpo.clipped_policy_loss(logps, zeros, adv, mask, clip_eps_low=0.1, clip_eps_high=0.3)
    np.testing.assert_allclose(m["policy/clipfrac"], 0.5, rtol=1e-6)
    # the symmetric clip at 0.2 cuts the first token's gradient too (1.2 = 1 + 0.2 is the edge;
    # 1.25 is past it)
    logps2 = logps.at[0, 0].set(jnp.log(1.25))
    g_sym = jax.grad(lambda x: grpo.clipped_policy_loss(x, zeros, adv, mask, norm="token")[0])(
        logps2)
    assert float(g_sym[0, 0]) == 0.0


@pytest.mark.parametrize("norm", grpo.NORMALISATIONS)
def test_masked_positions_get_exactly_zero_gradient_even_with_nan(norm):
    logps, old, ref, adv, mask = (jnp.asarray(x) for x in _problem(6))
    poison = jnp.where(mask > 0, 0.0, jnp.nan)
    bad_logps, bad_old = logps + poison, old - poison
    bad_ref = jnp.where(mask > 0, ref, jnp.inf)

    def loss(x):
        return grpo.grpo_loss(x, bad_old, bad_ref, adv, mask, beta=0.1, norm=norm)[0]

    value, grad = jax.value_and_grad(loss)(bad_logps)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(np.asarray(grad)[np.asarray(mask) == 0], 0.0)
    clean = grpo.grpo_loss(logps, old, ref, adv, mask, beta=0.1, norm=norm)[0]
    np.testing.assert_allclose(value, clean, rtol=1e-6)


def test_policy_metrics_equal_loop():
    logps, old, _, adv, mask = _problem(7)
    logps = old + np.random.default_rng(8).uniform(-0.4, 0.4, size=old.shape)
    with jax.enable_x64(True):
        _, m = grpo.clipped_policy_loss(*map(jnp.asarray, (logps, old, adv, mask)),
                                        clip_eps_low=0.2, clip_eps_high=0.28)
    clipped, k3 = [], []
    for i, t in zip(*np.nonzero(mask)):
        rho = math.exp(logps[i, t] - old[i, t])
        clipped.append((adv[i] > 0 and rho > 1.28) or (adv[i] < 0 and rho < 0.8))
        k3.append(rho - 1 - math.log(rho))  # KL(pi_old || pi_theta) estimator, r = rho
    np.testing.assert_allclose(m["policy/clipfrac"], np.mean(clipped), rtol=1e-12)
    np.testing.assert_allclose(m["policy/approx_kl"], np.mean(k3), rtol=1e-10)


# ----------------------------------------------------------------------------- KL terms


@pytest.mark.parametrize("norm", grpo.NORMALISATIONS)
def test_kl_penalty_in_loss_value_and_gradient(norm):
    """k3 = exp(ref - logp) - (ref - logp) - 1 per token; d k3 / d logp = 1 - exp(ref - logp)."""
    logps, _, ref, _, mask = _problem(9)
    with jax.enable_x64(True):
        value, grad = jax.value_and_grad(
            lambda x: grpo.kl_penalty_in_loss(x, jnp.asarray(ref), jnp.asarray(mask), norm))(
                jnp.asarray(logps))
    np.testing.assert_allclose(value, _k3_loop(logps, ref, mask, norm), rtol=1e-12)
    np.testing.assert_allclose(grad, (1 - np.exp(ref - logps)) * _weights(mask, norm),
                               atol=1e-12)


def test_kl_penalised_rewards_is_summed_k1_and_a_constant():
    logps, _, ref, _, mask = _problem(10)
    rewards = np.random.default_rng(11).normal(size=logps.shape[0])
    beta = 0.3
    expected = [rewards[i] - beta * sum(logps[i, t] - ref[i, t] for t in range(logps.shape[1])
                                        if mask[i, t]) for i in range(logps.shape[0])]
    with jax.enable_x64(True):
        args = (jnp.asarray(rewards), jnp.asarray(logps), jnp.asarray(ref), jnp.asarray(mask))
        got = grpo.kl_penalised_rewards(*args, beta)
        grad = jax.grad(lambda x: grpo.kl_penalised_rewards(args[0], x, *args[2:], beta).sum())(
            args[1])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("kl_in", grpo.KL_PLACEMENTS)
def test_grpo_loss_finite_differences_float64(kl_in):
    logps, old, ref, adv, mask = _problem(12)
    beta = 0.2
    with jax.enable_x64(True):
        def f(x):
            return grpo.grpo_loss(x, jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv),
                                  jnp.asarray(mask), beta=beta, kl_in=kl_in,
                                  clip_eps_low=0.2, clip_eps_high=0.28)[0]

        x0 = jnp.asarray(logps)
        grad = np.asarray(jax.grad(f)(x0))
        h = 1e-6
        fd = np.zeros_like(logps)
        for i, t in np.ndindex(*logps.shape):
            e = np.zeros_like(logps)
            e[i, t] = h
            fd[i, t] = (float(f(x0 + e)) - float(f(x0 - e))) / (2 * h)
        value = float(f(x0))
    np.testing.assert_allclose(grad, fd, atol=1e-7)
    pg = _clipped_loss_loop(logps, old, adv, mask, 0.2, 0.28, "sequence")
    kl = _k3_loop(logps, ref, mask, "sequence")
    np.testing.assert_allclose(value, pg + (beta * kl if kl_in == "loss" else 0.0), rtol=1e-12)


def test_bad_options_raise():
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="norm"):
        grpo.clipped_policy_loss(z, z, jnp.zeros(2), z + 1, norm="answer")
    with pytest.raises(ValueError, match="kl_in"):
        grpo.grpo_loss(z, z, z, jnp.zeros(2), z + 1, beta=0.1, kl_in="critic")
