"""GRPO, Dr. GRPO, RLOO and DAPO's loss choices, as pure functions over arrays.

These methods drop PPO's critic. For each prompt they sample a group of G answers, score each
answer once, and compare it with its group mates: the baseline is the group itself.

    rewards [P, G]  ->  group_advantages  ->  advantages [P * G], one per answer
    per-token log-probs [B, T] with mask [B, T] = 1 on response tokens (B = P * G)
      ->  clipped_policy_loss (+ beta * kl_penalty_in_loss for GRPO's KL in the loss)

The KL to pi_ref enters in one of two places:
  * in the loss, k3 per token (GRPO, Shao et al. 2024 eq. 4): `kl_penalty_in_loss`;
  * in the reward, summed k1 per answer (PPO-style, RLOO): `kl_penalised_rewards`.
The two do not optimise the same objective: the expected gradient of k3 in the loss is the
gradient of the forward KL(pi_ref || pi), not of KL(pi || pi_ref) (lesson 07 works it out in
the exact world).

Implementation choices, each pinned by tests/test_grpo_math.py:
  * the GRPO std is the population std over the G answers (ddof = 0);
  * a group whose answers all score the same gets zero advantages (no nan);
  * advantages are per answer [B] and broadcast over that answer's tokens;
  * three normalisations of the per-token loss (`NORMALISATIONS`), one branch in `aggregate`;
  * entries outside `mask` contribute exactly zero to every value and gradient, even nan/inf.
"""

import jax
import jax.numpy as jnp

from minirlhf.ppo import kl_k3, masked_mean

ADVANTAGE_KINDS = ("grpo", "drgrpo", "rloo")
NORMALISATIONS = ("sequence", "token", "constant")
KL_PLACEMENTS = ("loss", "reward")


def group_advantages(rewards: jax.Array, kind: str, eps: float = 1e-4) -> jax.Array:
    """One advantage per answer from the rewards of its group. rewards [P, G] -> [P, G].

        "grpo":    A_i = (r_i - mean_g r) / (std_g r + eps)     (Shao et al. 2024, DeepSeekMath,
                                                                 sec. 4.1.2, outcome supervision)
        "drgrpo":  A_i =  r_i - mean_g r                        (Liu et al. 2025, Dr. GRPO)
        "rloo":    A_i =  r_i - 1/(G-1) sum_{j != i} r_j        (Ahmadian et al. 2024, RLOO)
                      =  G/(G-1) (r_i - mean_g r)

    std_g is the population standard deviation over the G answers (ddof = 0). RLOO's baseline
    leaves the answer itself out, so it is independent of y_i and the gradient estimate
    A_i grad log pi(y_i) is unbiased for grad E[r]; the mean baseline of Dr. GRPO includes
    r_i, which scales the expected gradient by (G-1)/G. A constant group gives A = 0 (GRPO:
    0 / (0 + eps)); the square root is never taken of 0, so even gradients stay finite.
    """
    if kind not in ADVANTAGE_KINDS:
        raise ValueError(f"grpo.py group_advantages: kind must be one of {ADVANTAGE_KINDS}, "
                         f"got {kind!r}")
    G = rewards.shape[-1]
    if G < 2:
        raise ValueError(f"grpo.py group_advantages: a group needs G >= 2 answers, got G={G}")
    centred = rewards - jnp.mean(rewards, axis=-1, keepdims=True)  # [P, G] r_i - mean_g r
    if kind == "drgrpo":
        return centred
    if kind == "rloo":
        return centred * (G / (G - 1))  # r_i - mean_{j != i} r_j
    var = jnp.mean(centred**2, axis=-1, keepdims=True)  # [P, 1] population variance
    std = jnp.where(var > 0, jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)  # safe sqrt at 0
    return centred / (std + eps)


def aggregate(per_token: jax.Array, mask: jax.Array, norm: str, max_tokens: int | None = None):
    """Reduce a per-token loss [B, T] to a scalar over the masked tokens; n_i = sum_t mask[i, t]:

        "sequence":  1/B sum_i (1/n_i) sum_t l_it        (GRPO, Shao et al. 2024 eq. 3)
        "token":     sum_{i,t} l_it / sum_i n_i          (DAPO, Yu et al. 2025 eq. 8)
        "constant":  sum_{i,t} l_it / (B * max_tokens)   (Dr. GRPO, Liu et al. 2025)

    "sequence" weights every answer equally, so a token of a long answer counts less than one
    of a short answer; "token" weights every token equally; "constant" divides by a number that
    does not depend on the lengths at all (max_tokens = the generation budget; None uses T).
    Entries outside the mask never enter (even nan). An answer with no tokens contributes 0.
    """
    if norm not in NORMALISATIONS:
        raise ValueError(f"grpo.py aggregate: norm must be one of {NORMALISATIONS}, got {norm!r}")
    valid = mask > 0
    per_token = jnp.where(valid, per_token, 0.0)  # [B, T]
    if norm == "token":
        return masked_mean(per_token, mask)
    B, T = mask.shape
    if norm == "constant":
        return jnp.sum(per_token) / (B * (T if max_tokens is None else max_tokens))
    n = jnp.sum(valid, axis=-1)  # [B]
    return jnp.mean(jnp.sum(per_token, axis=-1) / jnp.maximum(n, 1))


def clipped_policy_loss(logps, old_logps, advantages, mask, *, clip_eps_low: float = 0.2,
                        clip_eps_high: float = 0.2, norm: str = "sequence",
                        max_tokens: int | None = None):
    """PPO's clipped surrogate with one advantage per answer, as a loss to minimise:

        rho_it = exp(log pi_theta(y_it) - log pi_old(y_it))
        l_it   = -min( rho_it A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) A_i )
        L      = aggregate(l, mask, norm)

    (Schulman et al. 2017 eq. 7 per token; Shao et al. 2024 eq. 3 with the "sequence"
    normalisation; eps_high > eps_low is DAPO's clip-higher, Yu et al. 2025 eq. 10.)
    d l_it / d log pi_theta(y_it) = -A_i rho_it where the clip is inactive and 0 where it is
    active (A > 0 and rho > 1 + eps_high, or A < 0 and rho < 1 - eps_low), times the
    normalisation weight of token (i, t).

    logps, old_logps, mask: [B, T] per token; advantages: [B], one per answer.
    Returns (loss, metrics): "loss", "policy/clipfrac" (fraction of response tokens where the
    clip is active), "policy/approx_kl" (masked mean of k3 of pi_old / pi_theta).
    """
    valid = mask > 0
    logratio = jnp.where(valid, logps - old_logps, 0.0)  # [B, T] safe-where: nan never enters
    ratio = jnp.exp(logratio)  # [B, T] rho
    adv = advantages[:, None]  # [B, 1] broadcast over the answer's tokens
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    per_token = jnp.maximum(pg_loss1, pg_loss2)  # [B, T] -min(rho A, clip(rho) A)
    loss = aggregate(per_token, mask, norm, max_tokens)
    clipped = (pg_loss2 > pg_loss1).astype(jnp.float32)  # [B, T] the clipped branch is active
    metrics = {"loss": loss,
               "policy/clipfrac": masked_mean(clipped, mask),
               "policy/approx_kl": jax.lax.stop_gradient(masked_mean(kl_k3(-logratio), mask))}
    return loss, metrics


def kl_penalty_in_loss(logps, ref_logps, mask, norm: str = "sequence",
                       max_tokens: int | None = None) -> jax.Array:
    """GRPO's KL term in the loss: k3 per token, aggregated like the policy loss.

        k3_it = pi_ref(y_it) / pi_theta(y_it) - log(pi_ref(y_it) / pi_theta(y_it)) - 1
        D     = aggregate(k3, mask, norm)                       (Shao et al. 2024 eq. 4)

    k3 = ppo.kl_k3 (Schulman 2020). d k3 / d log pi_theta = 1 - pi_ref / pi_theta. Under
    y ~ pi_theta the expected gradient is that of the forward KL(pi_ref || pi_theta), not of
    KL(pi_theta || pi_ref). logps, ref_logps, mask: [B, T]. Returns a scalar.
    """
    logratio = jnp.where(mask > 0, logps - ref_logps, 0.0)  # [B, T]
    return aggregate(kl_k3(logratio), mask, norm, max_tokens)


def kl_penalised_rewards(rewards, logps, ref_logps, mask, beta) -> jax.Array:
    """The KL in the reward with k1, summed over the answer (PPO; RLOO, Ahmadian et al. 2024):

        r~_i = r_i - beta sum_t mask_it (log pi(y_it) - log pi_ref(y_it))

    Its expectation under pi is E[r] - beta KL(pi || pi_ref), whose maximiser is pi*_beta.
    The result is a reward (the gradient is stopped): pass it to `group_advantages`.
    rewards: [B]; logps, ref_logps, mask: [B, T]. Returns [B].
    """
    logratio = jnp.where(mask > 0, logps - ref_logps, 0.0)  # [B, T] k1 per token
    return jax.lax.stop_gradient(rewards - beta * jnp.sum(logratio, axis=-1))


def grpo_loss(logps, old_logps, ref_logps, advantages, mask, *, beta: float, kl_in: str = "loss",
              clip_eps_low: float = 0.2, clip_eps_high: float = 0.2, norm: str = "sequence",
              max_tokens: int | None = None):
    """GRPO's objective as a loss (Shao et al. 2024 eq. 3 with the KL of eq. 4):

        L = clipped_policy_loss(...) + beta * kl_penalty_in_loss(...)    if kl_in == "loss"
        L = clipped_policy_loss(...)                                     if kl_in == "reward"

    With kl_in == "reward" the caller has already put the KL into the rewards with
    `kl_penalised_rewards` before computing advantages. Shapes as in `clipped_policy_loss`;
    ref_logps: [B, T]. Returns (loss, metrics) with the policy metrics, "kl_k3" (the
    aggregated k3, measured in either placement) and "policy/loss" (the clipped term alone).
    """
    if kl_in not in KL_PLACEMENTS:
        raise ValueError(f"grpo.py grpo_loss: kl_in must be one of {KL_PLACEMENTS}, "
                         f"got {kl_in!r}")
    pg_loss, metrics = clipped_policy_loss(logps, old_logps, advantages, mask,
                                           clip_eps_low=clip_eps_low, clip_eps_high=clip_eps_high,
                                           norm=norm, max_tokens=max_tokens)
    kl_term = kl_penalty_in_loss(logps, ref_logps, mask, norm, max_tokens)
    loss = pg_loss + beta * kl_term if kl_in == "loss" else pg_loss
    return loss, {**metrics, "loss": loss, "policy/loss": pg_loss,
                  "kl_k3": jax.lax.stop_gradient(kl_term)}
