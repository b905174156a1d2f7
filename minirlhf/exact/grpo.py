"""What GRPO, Dr. GRPO and RLOO converge to, measured exactly on the enumerable world.

The policy is a softmax over the N responses of each prompt, `z [P, N]`, pi = softmax(z): the
response is one action (a bandit per prompt), so the k1 and k3 KL terms are the sequence-level
ones and every expectation over y ~ pi is a finite sum. Training follows the EXPECTED gradient
of each method's sampled loss (infinite group, on-policy: the clip never acts), so what it
converges to is what the objective says, with no sampling noise.

1. KL in the reward, k1 (PPO, RLOO): R(y) = r(y) - beta log(pi(y) / pi_ref(y)) (gradient
   stopped), loss -E_pi[(R - b) log pi] for any baseline b. Its gradient is that of
   E_pi[r] - beta KL(pi || pi_ref), so it converges to pi*_beta ∝ pi_ref exp(r / beta).
2. KL in the loss, k3 (GRPO, Shao et al. 2024 eq. 4): loss -E_pi[A log pi] + beta E_pi[k3],
   A = r - E_pi[r]. The expected gradient of k3 under pi is
       E_pi[(1 - pi_ref / pi) d log pi] = -sum_y pi_ref(y) d log pi(y) = d KL(pi_ref || pi),
   the FORWARD KL. With d pi(y') / d z_y = pi(y') (1[y = y'] - pi(y)) the stationary point is
       pi(y) (r(y) - c) = beta (pi(y) - pi_ref(y)),   c = E_pi[r]
       =>  pi(y) = beta pi_ref(y) / (beta - r(y) + c)                 (`grpo_fixed_point`)
   with c fixed by normalisation (sum_y pi(y) = 1); then E_pi[r] = c holds automatically
   (sum_y pi (r - c) = beta sum_y (pi - pi_ref) = 0). This is not pi*_beta.
3. GRPO's A / std(r): stationary condition pi (r - c) / s = beta (pi - pi_ref), s = std_pi(r):
   the effective beta is beta * s, which shrinks as the policy sharpens. With the KL in the
   reward the std only rescales the gradient: the fixed point stays pi*_beta.
4. Finite groups: the gradient estimate of a group of G answers,
       g_hat = (1/G) sum_i A_i d log pi(y_i),   d log pi(y) / d z = e_y - pi,
   against the exact d E_pi[r] / d z = pi (r - E_pi[r]): RLOO's is unbiased, Dr. GRPO's is
   (G-1)/G times the exact gradient, GRPO's is distorted by the per-group std.
"""

import itertools
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax

from minirlhf import grpo
from minirlhf.config import check_fields
from minirlhf.exact import world as exact
from minirlhf.ppo import kl_k3

BASELINES = ("none", "mean", "mean_std")


# ----------------------------------------------------------------------------- fixed points


def grpo_fixed_point(logp_ref: jax.Array, reward: jax.Array, beta, n_iter: int = 100):
    """The stationary policy of GRPO's loss with the mean baseline and k3 in the loss:

        pi(y) = beta pi_ref(y) / (beta - r(y) + c),      sum_y pi(y) = 1,   c = E_pi[r]

    Writing c = max_y r - beta + d, pi(y) = beta pi_ref(y) / (max r - r(y) + d) with d in
    [beta pi_ref(y_max), beta] (at the lower end pi(y_max) = 1, at the upper end the sum is
    <= 1), and the sum decreases in d: bisection on log d, n_iter halvings, per prompt.
    logp_ref, reward: [P, N]; beta > 0 (traced is fine). Returns log pi [P, N], normalised.
    """
    gap = jnp.max(reward, axis=-1, keepdims=True) - reward  # [P, N] max r - r(y) >= 0
    logp_ref_best = jnp.take_along_axis(logp_ref, jnp.argmax(reward, -1)[:, None], -1)  # [P, 1]
    log_beta = jnp.log(jnp.asarray(beta, logp_ref.dtype))

    def log_pi(log_d):  # [P, 1] -> [P, N] unnormalised
        return log_beta + logp_ref - jnp.log(gap + jnp.exp(log_d))

    def halve(_, bracket):
        lo, hi = bracket  # [P, 1] each: total mass >= 1 at lo, <= 1 at hi
        mid = 0.5 * (lo + hi)
        too_much = jax.nn.logsumexp(log_pi(mid), axis=-1, keepdims=True) > 0.0
        return jnp.where(too_much, mid, lo), jnp.where(too_much, hi, mid)

    bracket = (log_beta + logp_ref_best, jnp.broadcast_to(log_beta, logp_ref_best.shape))
    lo, hi = jax.lax.fori_loop(0, n_iter, halve, bracket)
    return jax.nn.log_softmax(log_pi(0.5 * (lo + hi)), axis=-1)


def frontier(logp_ref: jax.Array, reward: jax.Array, betas):
    """(KL(pi || pi_ref), E_pi[r]) averaged over prompts, for pi*_beta and for GRPO's fixed
    point at each beta. Returns a dict of [M] arrays: optimal_kl, optimal_reward, grpo_kl,
    grpo_reward."""
    def point(beta):
        lp_star = exact.optimal_policy(logp_ref, reward, beta)
        lp_grpo = grpo_fixed_point(logp_ref, reward, beta)
        return {"optimal_kl": jnp.mean(exact.kl(lp_star, logp_ref)),
                "optimal_reward": jnp.mean(exact.expected_reward(lp_star, reward)),
                "grpo_kl": jnp.mean(exact.kl(lp_grpo, logp_ref)),
                "grpo_reward": jnp.mean(exact.expected_reward(lp_grpo, reward))}

    return jax.jit(jax.vmap(point))(jnp.asarray(betas, logp_ref.dtype))


# ----------------------------------------------------------------------------- exact training


@dataclass(frozen=True)
class ExactPGConfig:
    """Exact expected-gradient training of a softmax policy per prompt: where the KL enters, the
    baseline of the advantage, and the optimiser (`train_exact_pg`)."""

    kl_in: str = "reward"
    """"reward": k1 in the reward (PPO, RLOO; target pi*_beta); "loss": k3 in the loss (GRPO)."""
    baseline: str = "mean"
    """"none": A = R; "mean": A = R - E_pi[R] (RLOO / Dr. GRPO with infinite G);
    "mean_std": A = (R - E_pi[R]) / (std_pi(R) + eps) (GRPO)."""
    eps: float = 1e-4
    """GRPO's eps in the std division."""
    n_steps: int = 4000
    """Exact gradient steps."""
    learning_rate: float = 0.5
    """Adam step size on the logits z."""
    anneal_lr: bool = True
    """Linearly decay the step size to 0."""

    def __post_init__(self):
        if self.kl_in not in grpo.KL_PLACEMENTS:
            raise ValueError(f"ExactPGConfig.kl_in: expected one of {grpo.KL_PLACEMENTS}, "
                             f"got {self.kl_in!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"ExactPGConfig.baseline: expected one of {BASELINES}, "
                             f"got {self.baseline!r}")
        check_fields(self, counts=("n_steps",), positive=("learning_rate",),
                     non_negative=("eps",))


def expected_advantages(pi, returns, baseline: str, eps: float):
    """Infinite-group advantages under pi: R, R - E_pi[R], or (R - E_pi[R]) / (std_pi R + eps).
    pi, returns: [P, N] -> [P, N]."""
    if baseline == "none":
        return returns
    mean = jnp.sum(pi * returns, axis=-1, keepdims=True)  # [P, 1] E_pi[R]
    centred = returns - mean
    if baseline == "mean":
        return centred
    std = jnp.sqrt(jnp.sum(pi * centred**2, axis=-1, keepdims=True))  # [P, 1] std_pi(R)
    return centred / (std + eps)


def expected_loss(z, logp_ref, reward, beta, cfg: ExactPGConfig):
    """The expectation under y ~ pi (weights pi, gradient stopped) of the per-answer sampled
    loss, so that d/dz of it is the expected gradient of the sampled loss:

        kl_in = "reward":  L = -sum_y pi(y) A(y) log pi(y),  R = r - beta sg(log pi - log pi_ref)
        kl_in = "loss":    L = -sum_y pi(y) A(y) log pi(y) + beta sum_y pi(y) k3(y),  R = r
                           k3(y) = pi_ref(y)/pi(y) - log(pi_ref(y)/pi(y)) - 1   (Shao et al. eq. 4)

    with A = expected_advantages(pi, R, cfg.baseline). z, logp_ref, reward: [P, N].
    Returns the mean over prompts (a scalar).
    """
    logp = jax.nn.log_softmax(z, axis=-1)  # [P, N]
    pi = jax.lax.stop_gradient(jnp.exp(logp))  # [P, N] sampling weights
    returns = reward
    if cfg.kl_in == "reward":
        returns = reward - beta * jax.lax.stop_gradient(logp - logp_ref)  # k1 in the reward
    adv = jax.lax.stop_gradient(expected_advantages(pi, returns, cfg.baseline, cfg.eps))
    loss = -jnp.sum(pi * adv * logp, axis=-1)  # [P] E_pi[A d log pi]
    if cfg.kl_in == "loss":
        loss = loss + beta * jnp.sum(pi * kl_k3(logp - logp_ref), axis=-1)  # E_pi[k3]
    return jnp.mean(loss)


def exact_diagnostics(logp, logp_ref, reward, logp_star, logp_fixed) -> dict:
    """Exact diagnostics of log pi [P, N], averaged over prompts: KL to pi_ref, E_pi[r],
    std_pi(r), KL to pi*_beta (logp_star) and to GRPO's fixed point (logp_fixed)."""
    pi = jnp.exp(logp)
    mean_r = jnp.sum(pi * reward, axis=-1, keepdims=True)  # [P, 1]
    return {"kl_to_ref": jnp.mean(exact.kl(logp, logp_ref)),
            "expected_reward": jnp.mean(mean_r),
            "reward_std": jnp.mean(jnp.sqrt(jnp.sum(pi * (reward - mean_r) ** 2, axis=-1))),
            "kl_to_optimum": jnp.mean(exact.kl(logp, logp_star)),
            "kl_to_grpo_fixed_point": jnp.mean(exact.kl(logp, logp_fixed))}


@partial(jax.jit, static_argnums=3)
def train_exact_pg(logp_ref: jax.Array, reward: jax.Array, beta, cfg: ExactPGConfig):
    """Adam on the logits z from pi_ref, following the exact expected gradient of
    `expected_loss`; one lax.scan over cfg.n_steps. beta is traced (vmap over it).

    logp_ref, reward: [P, N]. Returns (log pi [P, N], history {name: [n_steps]} of the
    exact diagnostics after each step: kl_to_ref, expected_reward, reward_std, kl_to_optimum,
    kl_to_grpo_fixed_point).
    """
    schedule = (optax.linear_schedule(cfg.learning_rate, 0.0, cfg.n_steps) if cfg.anneal_lr
                else cfg.learning_rate)
    tx = optax.adam(schedule)
    grad_fn = jax.grad(expected_loss)
    lp_star = exact.optimal_policy(logp_ref, reward, beta)
    lp_fixed = grpo_fixed_point(logp_ref, reward, beta)

    def step(carry, _):
        z, opt_state = carry
        updates, opt_state = tx.update(grad_fn(z, logp_ref, reward, beta, cfg), opt_state)
        z = optax.apply_updates(z, updates)
        logp = jax.nn.log_softmax(z, axis=-1)
        metrics = exact_diagnostics(logp, logp_ref, reward, lp_star, lp_fixed)
        return (z, opt_state), metrics

    z0 = logp_ref
    (z, _), history = jax.lax.scan(step, (z0, tx.init(z0)), None, length=cfg.n_steps)
    return jax.nn.log_softmax(z, axis=-1), history


# ----------------------------------------------------------------------------- finite groups


def exact_reward_gradient(logp: jax.Array, reward: jax.Array) -> jax.Array:
    """d E_pi[r] / d z_y = pi(y) (r(y) - E_pi[r]) for pi = softmax(z). [N], [N] -> [N]."""
    pi = jnp.exp(logp)
    return pi * (reward - jnp.sum(pi * reward))


def group_gradient(logp, reward, group, kind: str, eps: float = 1e-4):
    """One group's gradient estimate g_hat = (1/G) sum_i A_i (e_{y_i} - pi), with A from
    `grpo.group_advantages(kind)` (the same function the transformer trains with).

    logp, reward: [N] one prompt; group: [G] int response indices. Returns [N].
    """
    G, N = group.shape[0], logp.shape[0]
    adv = grpo.group_advantages(reward[group][None, :], kind, eps)[0]  # [G]
    counts = jnp.zeros(N, logp.dtype).at[group].add(adv / G)  # [N] (1/G) sum_i A_i e_{y_i}
    return counts - jnp.sum(adv) / G * jnp.exp(logp)


def enumerated_group_gradient(logp, reward, kind: str, group_size: int):
    """E[g_hat] and E||g_hat - E g_hat||^2 by enumerating all N^G ordered groups with their
    probabilities prod_i pi(y_i) (small N and G only). logp, reward: [N].
    Returns (mean [N], total variance scalar)."""
    N = logp.shape[0]
    groups = jnp.asarray(list(itertools.product(range(N), repeat=group_size)))  # [N^G, G]
    weights = jnp.exp(jnp.sum(logp[groups], axis=-1))  # [N^G] prod_i pi(y_i)
    g = jax.vmap(lambda grp: group_gradient(logp, reward, grp, kind))(groups)  # [N^G, N]
    mean = weights @ g
    return mean, weights @ jnp.sum((g - mean) ** 2, axis=-1)


def group_gradient_moments(logp, reward, groups, kind: str, eps: float = 1e-4):
    """E[g_hat] and E|g_hat|^2 over the rows of `groups` [D, G] without forming g_hat [D, N].

    With c = (1/G) sum_i A_i e_{y_i} and s = (1/G) sum_i A_i, g_hat = c - s pi, so
        |g_hat|^2 = (1/G^2) sum_{i,j} A_i A_j 1[y_i = y_j] - 2 s (1/G) sum_i A_i pi(y_i)
                    + s^2 |pi|^2.
    logp, reward: [N]. Returns (mean [N], mean squared norm scalar).
    """
    D, G = groups.shape
    pi = jnp.exp(logp)  # [N]
    adv = grpo.group_advantages(reward[groups], kind, eps)  # [D, G]
    s = jnp.sum(adv, axis=-1) / G  # [D]
    mean = (jnp.zeros_like(pi).at[groups.reshape(-1)].add(adv.reshape(-1) / G) / D
            - jnp.mean(s) * pi)  # [N]
    same = groups[:, :, None] == groups[:, None, :]  # [D, G, G] 1[y_i = y_j]
    c_norm2 = jnp.einsum("di,dj,dij->d", adv, adv, same) / G**2  # [D] |c|^2
    c_dot_pi = jnp.sum(adv * pi[groups], axis=-1) / G  # [D] <c, pi>
    sq = c_norm2 - 2 * s * c_dot_pi + s**2 * jnp.sum(pi**2)  # [D] |g_hat|^2
    return mean, jnp.mean(sq)


def estimator_stats(mean: jax.Array, mean_sq_norm: jax.Array, g_true: jax.Array) -> dict:
    """Bias and variance of a gradient estimator from its moments, against the exact g_true:
    scale = <E g_hat, g> / |g|^2 (1 = the right size along g), cos(E g_hat, g),
    rel_bias = |E g_hat - g| / |g|, rel_variance = (E|g_hat|^2 - |E g_hat|^2) / |g|^2."""
    norm2 = jnp.sum(g_true**2)
    return {"scale": jnp.sum(mean * g_true) / norm2,
            "cos": jnp.sum(mean * g_true) / jnp.sqrt(jnp.sum(mean**2) * norm2),
            "rel_bias": jnp.sqrt(jnp.sum((mean - g_true) ** 2) / norm2),
            "rel_variance": (mean_sq_norm - jnp.sum(mean**2)) / norm2}


@partial(jax.jit, static_argnums=(2, 4))
def _group_stats(logp_ref, reward, group_size: int, key, n_draws: int) -> dict:
    """`estimator_stats` of every advantage kind, per prompt, from n_draws groups of
    group_size answers drawn from pi_ref (the same groups for every kind).
    Returns {kind: {stat: [P]}}."""
    def one_prompt(logp, r, k):
        # inverse-CDF sampling, y = first index with F(y) > u: O(log N) per answer (the
        # Gumbel trick of jax.random.categorical would draw N numbers per answer)
        u = jax.random.uniform(k, (n_draws, group_size), dtype=logp.dtype)
        cdf = jnp.cumsum(jnp.exp(logp))  # [N]
        groups = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), logp.shape[0] - 1)  # [D, G]
        g = exact_reward_gradient(logp, r)  # [N]
        return {kind: estimator_stats(*group_gradient_moments(logp, r, groups, kind), g)
                for kind in grpo.ADVANTAGE_KINDS}

    keys = jax.random.split(key, logp_ref.shape[0])
    return jax.vmap(one_prompt)(logp_ref, reward, keys)


def finite_group_table(logp_ref, reward, group_sizes, key, n_draws: int = 20000) -> dict:
    """For each group size and advantage kind: `estimator_stats` of n_draws sampled groups
    at pi_ref, per prompt, averaged over prompts. logp_ref, reward: [P, N].
    Returns {(kind, G): {stat: float}}; one compiled program per G."""
    table = {}
    for G in group_sizes:
        stats = _group_stats(logp_ref, reward, G, jax.random.fold_in(key, G), n_draws)
        for kind in grpo.ADVANTAGE_KINDS:
            table[kind, G] = {k: float(jnp.mean(v)) for k, v in stats[kind].items()}
    return table
