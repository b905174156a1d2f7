"""PPO for language models, as pure functions over arrays.

Every array here is per token, [B, T], with `mask [B, T]` = 1 exactly on the response tokens
(the actions). Prompt and pad positions are not actions: they contribute nothing to any loss,
advantage or statistic, whatever values they hold. Token t's log-prob `logps[:, t]` and value
`values[:, t]` belong to the state *before* token t is generated (the README's conventions).

The pieces, in the order of one PPO iteration (Ziegler et al. 2019; Stiennon et al. 2020;
Ouyang et al. 2022):
  1. KL estimators (Schulman 2020) and per-token reward shaping with a KL penalty,
  2. an adaptive or fixed KL coefficient (Ziegler et al. 2019),
  3. generalised advantage estimation (Schulman et al. 2016),
  4. the clipped surrogate and clipped value losses (Schulman et al. 2017),
  5. a generic update loop: epochs x minibatches under lax.scan (CleanRL style).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from minirlhf.config import check_fields


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """sum(x * mask) / max(sum(mask), 1); entries outside the mask never enter (even nan)."""
    return jnp.sum(jnp.where(mask > 0, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)


# ----------------------------------------------------------------------------- 1. KL estimators


def kl_k1(logratio: jax.Array) -> jax.Array:
    """k1 = log pi_theta(y) - log pi_ref(y): unbiased for KL(pi_theta || pi_ref) under
    y ~ pi_theta, high variance, can be negative (Schulman 2020, "Approximating KL")."""
    return logratio


def kl_k2(logratio: jax.Array) -> jax.Array:
    """k2 = (log r)^2 / 2 with log r = -logratio: biased, low variance, >= 0 (Schulman 2020)."""
    return 0.5 * logratio**2


def kl_k3(logratio: jax.Array) -> jax.Array:
    """k3 = (r - 1) - log r with r = pi_ref / pi_theta = exp(-logratio) (Schulman 2020).

    Unbiased (E_{pi_theta}[r] = 1, so E[k3] = E[-log r] = KL) and >= 0 (log r <= r - 1).
    Written as expm1(-logratio) + logratio so it is accurate near 0, where
    k3 ~ logratio^2 / 2.  It grows like exp(-logratio) for logratio << 0 and overflows to inf
    in float32 below about -88 (pi_theta far below pi_ref on a sampled token).
    """
    return jnp.expm1(-logratio) + logratio


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(logratio: jax.Array, kind: str) -> jax.Array:
    """Per-sample estimate of KL(pi_theta || pi_ref), logratio = log pi_theta - log pi_ref,
    y ~ pi_theta (Schulman 2020, "Approximating KL divergence"):

        "k1" (kl_k1):  k1 = logratio                                  unbiased, can be < 0
        "k2" (kl_k2):  k2 = logratio^2 / 2                            biased, >= 0
        "k3" (kl_k3):  k3 = (r - 1) - log r,  r = exp(-logratio)      unbiased, >= 0

    Shapes pass through.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"ppo.py kl_estimate: kind must be one of {list(KL_ESTIMATORS)}, "
                         f"got {kind!r}")
    return KL_ESTIMATORS[kind](logratio)


def last_token_mask(mask: jax.Array) -> jax.Array:
    """One-hot [B, T] of the last response token per row (all zeros for an empty row)."""
    T = mask.shape[-1]
    last = T - 1 - jnp.argmax(mask[:, ::-1] > 0, axis=-1)  # [B]
    return jax.nn.one_hot(last, T, dtype=mask.dtype) * mask  # [B, T]


def shape_rewards(scores, logratio, mask, beta, kl_kind: str = "k1") -> jax.Array:
    """Per-token rewards with a KL penalty (Ziegler et al. 2019 eq. 2; Stiennon et al. 2020
    eq. 1; Ouyang et al. 2022 eq. 2):

        R_t = -beta * kl_t            at every response token t
        R_T += score                  at the last response token

    With k1 and gamma = 1 the return of the first token is score - beta * log(pi / pi_ref)
    of the whole response, whose expectation is E[score] - beta KL(pi || pi_ref).
    scores [B]; logratio, mask [B, T] (logratio = log pi_old - log pi_ref per token).
    Returns rewards [B, T], zero outside the mask.
    """
    kl = kl_estimate(jnp.where(mask > 0, logratio, 0.0), kl_kind)  # [B, T]
    rewards = -beta * kl * mask  # [B, T]
    return rewards + scores[:, None] * last_token_mask(mask)  # score on the final token


# ----------------------------------------------------------------------------- 2. KL controller


@dataclass(frozen=True)
class KLControllerConfig:
    init_beta: float = 0.1
    """Initial KL coefficient beta."""
    adaptive: bool = False
    """False: beta stays fixed. True: Ziegler et al. 2019's proportional controller."""
    target: float = 6.0
    """KL_target (nats per response) the adaptive controller steers to."""
    horizon: float = 10000.0
    """Horizon in samples: beta changes by at most 20% * k_beta per `horizon` samples."""
    k_beta: float = 1.0
    """Gain K_beta. lm-human-preferences/TRL effectively use K_beta * n_steps / horizon."""

    def __post_init__(self):
        check_fields(self, positive=("target", "horizon"), non_negative=("init_beta", "k_beta"))


class KLControllerState(NamedTuple):
    beta: jax.Array  # [] current KL coefficient


def kl_controller_init(cfg: KLControllerConfig) -> KLControllerState:
    """The controller's starting state: beta = cfg.init_beta."""
    return KLControllerState(beta=jnp.asarray(cfg.init_beta, jnp.float32))


def kl_controller_update(state: KLControllerState, current_kl, n_steps, cfg: KLControllerConfig):
    """Ziegler et al. 2019 sec. 2.2 adaptive KL:

        e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_{t+1} = beta_t * (1 + K_beta * e_t * n_steps / horizon)

    n_steps = samples in this batch. Fixed mode returns the state unchanged.
    """
    if not cfg.adaptive:
        return state
    error = jnp.clip(current_kl / cfg.target - 1.0, -0.2, 0.2)  # e_t
    return KLControllerState(beta=state.beta * (1.0 + cfg.k_beta * error * n_steps / cfg.horizon))


# ----------------------------------------------------------------------------- 3. GAE


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation (Schulman et al. 2016, eqs. 11-16) over masked tokens.

        delta_t = R_t + gamma V_{t'} - V_t          t' = next response token (V = 0 after the last)
        A_t     = delta_t + gamma lam A_{t'}
        returns = A_t + V_t

    The mask is the set of valid steps in time order, so responses may start at any column
    (left-padded prompts) or be followed by padding. A reverse lax.scan carries
    (V_{t'}, A_{t'}); masked positions pass the carry through and get A = returns = 0.
    rewards, values, mask: [B, T]. Returns (advantages [B, T], returns [B, T]).
    """
    valid = mask > 0

    def step(carry, xs):
        next_value, next_adv = carry  # [B], [B]
        r_t, v_t, m_t = xs  # [B] each
        delta = r_t + gamma * next_value - v_t
        adv = delta + gamma * lam * next_adv
        new_carry = (jnp.where(m_t, v_t, next_value), jnp.where(m_t, adv, next_adv))
        return new_carry, jnp.where(m_t, adv, 0.0)

    zeros = jnp.zeros(rewards.shape[0], rewards.dtype)
    xs = (rewards.T, values.T, valid.T)  # time-major [T, B]
    _, adv_t = jax.lax.scan(step, (zeros, zeros), xs, reverse=True)
    advantages = adv_t.T  # [B, T]
    returns = jnp.where(valid, advantages + values, 0.0)
    return advantages, returns


def whiten(x, mask, shift_mean: bool = True, eps: float = 1e-8):
    """(x - mean) / sqrt(var + eps) over masked entries (population variance); zero outside.

    shift_mean=False adds the mean back (rescale only), as TRL does for rewards.
    x, mask: [B, T] -> [B, T].
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return jnp.where(mask > 0, out, 0.0)


# ----------------------------------------------------------------------------- 4. losses


def policy_loss(new_logps, old_logps, advantages, mask, clip_eps: float):
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:

        rho_t = exp(log pi_theta(a_t) - log pi_old(a_t))
        L = masked_mean( max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps)) )

    The gradient w.r.t. new_logps is -rho A / n where the clip is inactive and exactly 0
    where it is active (n = number of response tokens).
    new_logps, old_logps, advantages, mask: [B, T].
    Returns (loss, metrics): policy/approxkl (k3 of the ratio, masked mean),
    policy/clipfrac (fraction of tokens with |rho - 1| > eps), policy/loss.

    Safe where it must be: the max picks the unclipped term -A rho exactly when rho lies on the
    side of the clip range that A does not push past (A > 0: log rho <= log(1 + eps); A < 0:
    log rho >= log(1 - eps)); elsewhere the term is the constant -A (1 +- eps).  rho is only
    exponentiated where it is used, so a log-ratio past float32's exp range (~88.7), an
    advantage of 0, or NaN/inf at masked positions give a finite loss and an exact zero gradient
    there (a plain `where` would pass 0 * inf = NaN back through the unused branch).
    """
    valid = mask > 0
    logratio = jnp.where(valid, new_logps - old_logps, 0.0)  # [B, T]
    adv = jnp.where(valid, advantages, 0.0)  # [B, T]
    unclipped = jnp.where(adv > 0, ~(logratio > jnp.log1p(clip_eps)),   # a NaN stays visible
                          (adv < 0) & ~(logratio < jnp.log1p(-clip_eps)))  # [B, T]
    ratio_used = jnp.exp(jnp.where(unclipped, logratio, 0.0))  # rho where used, else 1
    pg_loss1 = -adv * ratio_used
    pg_loss2 = -adv * jnp.where(adv > 0, 1.0 + clip_eps, 1.0 - clip_eps)
    pg_loss = masked_mean(jnp.where(unclipped, pg_loss1, pg_loss2), mask)  # eq. 7
    ratio = jnp.exp(jax.lax.stop_gradient(logratio))  # the metrics only
    approx_kl = masked_mean((ratio - 1.0) - jax.lax.stop_gradient(logratio), mask)  # k3
    clipfrac = masked_mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32), mask)
    metrics = {"policy/loss": pg_loss, "policy/approxkl": approx_kl, "policy/clipfrac": clipfrac}
    return pg_loss, metrics


def value_loss(new_values, old_values, returns, mask, clip_eps_v: float | None):
    """Clipped value loss (Schulman et al. 2017 baselines; Ziegler et al. 2019 code):

        V_clip = V_old + clip(V - V_old, -eps_v, eps_v)
        L_V = 0.5 * masked_mean( max((V - R)^2, (V_clip - R)^2) )

    clip_eps_v=None gives the plain 0.5 * masked_mean((V - R)^2).
    All arrays [B, T]. Returns (loss, metrics): value/loss, value/clipfrac.
    Masked positions are zeroed before any arithmetic, so whatever they hold (even NaN or inf)
    their gradient is exactly 0.
    """
    valid = mask > 0
    new_values, old_values, returns = (jnp.where(valid, x, 0.0)
                                       for x in (new_values, old_values, returns))  # [B, T]
    v_loss_unclipped = (new_values - returns) ** 2
    if clip_eps_v is None:
        v_loss, clipfrac = 0.5 * masked_mean(v_loss_unclipped, mask), jnp.zeros(())
    else:
        v_clipped = old_values + jnp.clip(new_values - old_values, -clip_eps_v, clip_eps_v)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * masked_mean(jnp.maximum(v_loss_unclipped, v_loss_clipped), mask)
        clipfrac = masked_mean((v_loss_clipped > v_loss_unclipped).astype(jnp.float32), mask)
    return v_loss, {"value/loss": v_loss, "value/clipfrac": clipfrac}


def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """H(softmax(z)) = -sum_a p_a log p_a = logsumexp(z) - sum_a p_a z_a. [..., V] -> [...]."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def explained_variance(values, returns, mask) -> jax.Array:
    """1 - Var[R - V] / Var[R] over masked entries (1 = perfect critic, <= 0 = useless)."""
    def var(x):
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    return 1.0 - var(returns - values) / jnp.maximum(var(returns), 1e-8)


# ----------------------------------------------------------------------------- 5. update loop


@dataclass(frozen=True)
class PPOUpdateConfig:
    n_epochs: int = 4
    """Passes over each rollout batch (K epochs in Schulman et al. 2017)."""
    n_minibatches: int = 4
    """Minibatches per epoch; the batch size must be divisible by it."""

    def __post_init__(self):
        check_fields(self, counts=("n_epochs", "n_minibatches"))


def ppo_update(train_state, batch, key: jax.Array, loss_fn: Callable, cfg: PPOUpdateConfig):
    """Run n_epochs x n_minibatches gradient steps on one rollout batch (CleanRL JAX style).

    Each epoch draws a fresh permutation from its own key (key split once per epoch, never
    reused), reshapes every leaf of `batch` to [n_minibatches, mb, ...] and scans
    `loss_fn(params, minibatch) -> (loss, metrics)` + `train_state.apply_gradients` over it.

    train_state: a flax `TrainState` (anything with .params and .apply_gradients(grads=)).
    batch: pytree of arrays with leading dimension B.
    Returns (train_state, metrics) with every metric stacked as [n_epochs, n_minibatches].
    """
    leaves = jax.tree_util.tree_leaves(batch)
    B = leaves[0].shape[0]
    if B % cfg.n_minibatches != 0 or any(x.shape[0] != B for x in leaves):
        raise ValueError(f"ppo.py ppo_update: every batch leaf needs the same leading size B "
                         f"divisible by n_minibatches={cfg.n_minibatches}; got "
                         f"{[x.shape for x in leaves]}")
    mb_size = B // cfg.n_minibatches
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def minibatch_step(state, minibatch):
        (_, metrics), grads = grad_fn(state.params, minibatch)
        return state.apply_gradients(grads=grads), metrics

    def epoch(state, epoch_key):
        perm = jax.random.permutation(epoch_key, B)
        shuffled = jax.tree_util.tree_map(
            lambda x: x[perm].reshape(cfg.n_minibatches, mb_size, *x.shape[1:]), batch)
        return jax.lax.scan(minibatch_step, state, shuffled)

    return jax.lax.scan(epoch, train_state, jax.random.split(key, cfg.n_epochs))
