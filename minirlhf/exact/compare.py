"""Lesson 08's experiments on the exact world: PPO vs DPO vs IPO vs best-of-n, measured exactly.

Every run here is a pure function of its PRNG key (and of a traced beta), so many seeds and
many betas train in ONE compiled call: `jax.jit(jax.vmap(jax.vmap(run, (None, 0)), (0, None)))`
(the PureJaxRL pattern). Four experiments:

1. the frontier (`sweep` over `ppo_point` / `pref_point` / best-of-n): exact (KL(pi || pi_ref), E_pi[r]) of PPO / DPO / IPO / best-of-n against
   the optimal frontier of pi*_beta = pi_ref exp(r / beta) / Z (Rafailov et al. 2023, eq. 4).
   Because pi*_beta maximises E[r] - beta KL, no policy lies above the frontier at its own KL.
2. out-of-distribution pairs (`ood.ood_run`): preference pairs that cover only a subset S of the responses (Xu et al.
   2024, "Is DPO Superior to PPO for LLM Alignment?", sec. 4): DPO vs PPO on a reward model
   fitted to the same pairs, and the remedies (SFT on the chosen responses, online DPO).
3. overoptimisation (`ood.overopt_run`): PPO and best-of-n against a Bradley-Terry proxy fitted on a few pairs,
   gold reward vs d = sqrt(KL) (Gao et al. 2022, "Scaling laws for reward model
   overoptimization", eqs. 1-2), with least-squares fits of their functional forms.
(4. the capitals-world table lives in `compare_capitals.py`.)

Reward scaling trick for PPO. `training.run_ppo` takes beta in its (static) config. The
objective E[r] - beta KL has the same maximiser as E[r / beta] - KL, and PPO whitens its
advantages, so PPO with reward r / beta and KL coefficient 1 is the same algorithm (up to the
critic's learning speed). The scaled reward is an array, so beta becomes a traced input.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minirlhf.bradley_terry import bradley_terry_loss
from minirlhf.config import check_fields
from minirlhf.dpo import preference_logratios, preference_losses
from minirlhf.exact import tabular
from minirlhf.exact import training as et
from minirlhf.exact import world as exact
from minirlhf.exact.world import ExactWorld


class ExactPoint(NamedTuple):
    """Exact metrics of a policy, averaged over prompts (each a scalar, or batched by vmap)."""
    kl: jax.Array  # KL(pi || pi_ref) in nats
    reward: jax.Array  # E_pi[r_gold]


def exact_point(logp: jax.Array, world: ExactWorld) -> ExactPoint:
    """(mean_p KL(pi(.|p) || pi_ref(.|p)), mean_p E_pi[r(p, .)]) of log-probs [P, N]."""
    return ExactPoint(jnp.mean(exact.kl(logp, world.logp_ref)),
                      jnp.mean(exact.expected_reward(logp, world.reward)))


def _params_from(logp: jax.Array, world: ExactWorld) -> dict:
    A, K = world.ref_logits.shape[-1], world.responses.shape[-1]
    return tabular.init_tabular_from_logprobs(logp, A, K)


# ----------------------------------------------------------------------------- the frontier


def frontier_curve(world: ExactWorld, betas) -> tuple[np.ndarray, np.ndarray]:
    """The optimal frontier (KL(pi*_beta || pi_ref), E[r]) for each beta, prompt-averaged and
    sorted by KL (increasing). pi*_beta solves max E[r] - beta KL for all prompts at once, so
    the averaged curve is the frontier of the averaged objective. Returns two [M] arrays."""
    kls, rewards = exact.optimal_frontier(world.logp_ref, world.reward, jnp.asarray(betas))
    kls, rewards = np.asarray(kls.mean(-1)), np.asarray(rewards.mean(-1))  # [M]
    order = np.argsort(kls)
    return kls[order], rewards[order]


def frontier_gap(kl_runs, reward_runs, frontier_kl, frontier_reward) -> np.ndarray:
    """R*(KL_run) - R_run: distance below the frontier at matched KL (linear interpolation of
    the frontier; >= 0 up to interpolation and float error). Shapes broadcast, e.g. [B, S]."""
    return np.interp(np.asarray(kl_runs), frontier_kl, frontier_reward) - np.asarray(reward_runs)


def ppo_point(world: ExactWorld, cfg: et.TabularPPOConfig, beta, key) -> ExactPoint:
    """PPO at KL coefficient `beta` (traced) via the reward-scaling trick (module docstring);
    cfg.beta must be 1. Returns the exact gold point of the trained policy."""
    params, _ = et.run_ppo(world._replace(reward=world.reward / beta), cfg, key)
    return exact_point(tabular.all_sequence_logprobs(params), world)


@dataclass(frozen=True)
class PrefTrainConfig:
    """Full-batch DPO / IPO on a fixed set of pairs, beta passed separately (traced)."""
    loss_type: str = "dpo"
    """"dpo" (Rafailov et al. eq. 7) or "ipo" (Azar et al. eq. 17)."""
    n_steps: int = 300
    """Adam steps on the whole (weighted) pair set."""
    learning_rate: float = 0.05
    """Adam step size (linearly annealed to 0)."""

    def __post_init__(self):
        check_fields(self, counts=("n_steps",), positive=("learning_rate",))
        if self.loss_type not in ("dpo", "ipo"):
            raise ValueError(f"PrefTrainConfig.loss_type: expected 'dpo' or 'ipo', "
                             f"got {self.loss_type!r}")


def pair_loss(logp, ref_logp, pairs: et.PreferencePairs, beta, loss_type: str):
    """(1/M) sum_m loss(pair m) with the library's per-pair losses (dpo.preference_losses):

        h_m = (logp[x_m, w_m] - ref_logp[x_m, w_m]) - (logp[x_m, l_m] - ref_logp[x_m, l_m])
        "dpo":  loss = -log sigma(beta h_m)          (Rafailov et al. 2023, eq. 7)
        "ipo":  loss = (h_m - 1 / (2 beta))^2        (Azar et al. 2023, eq. 17)

    logp, ref_logp: [P, N]; pairs: M (prompt x_m, chosen w_m, rejected l_m) triples."""
    def seq(table, idx):
        return table[pairs.prompt_ids, idx]  # [M] summed sequence log-probs

    h = preference_logratios(seq(logp, pairs.chosen), seq(logp, pairs.rejected),
                             seq(ref_logp, pairs.chosen), seq(ref_logp, pairs.rejected)).h  # [M]
    return jnp.mean(preference_losses(h, beta, loss_type))


def train_on_pairs(init_logp, ref_logp, pairs, beta, cfg: PrefTrainConfig, world: ExactWorld):
    """DPO / IPO on `pairs` from the policy `init_logp` with reference `ref_logp` ([P, N] each).
    Returns the trained log-probs [P, N]."""
    params = _params_from(init_logp, world)
    tx = optax.adam(optax.linear_schedule(cfg.learning_rate, 0.0, cfg.n_steps))

    def loss_fn(p):
        return pair_loss(tabular.all_sequence_logprobs(p), ref_logp, pairs, beta, cfg.loss_type)

    def step(carry, _):
        p, opt = carry
        updates, opt = tx.update(jax.grad(loss_fn)(p), opt)
        return (optax.apply_updates(p, updates), opt), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=cfg.n_steps)
    return tabular.all_sequence_logprobs(params)


def pref_point(world: ExactWorld, cfg: PrefTrainConfig, n_pairs_per_prompt: int, beta, key):
    """DPO / IPO on n_pairs_per_prompt BT-labelled pairs from pi_ref -> exact gold point."""
    pairs = et.sample_preference_pairs(world, n_pairs_per_prompt, key)
    logp = train_on_pairs(world.logp_ref, world.logp_ref, pairs, beta, cfg, world)
    return exact_point(logp, world)


def best_of_n_points(logp_ref, score, gold, ns) -> dict:
    """Exact best-of-n (pick the highest `score`) for each n: {"kl", "gold", "score",
    "kl_bound"} each [len(ns)], prompt-averaged; kl_bound = log n - (n - 1)/n."""
    out = {"kl": [], "gold": [], "score": [], "kl_bound": []}
    for n in ns:
        logp = exact.best_of_n_logprobs(logp_ref, score, int(n))
        out["kl"].append(float(jnp.mean(exact.kl(logp, logp_ref))))
        out["gold"].append(float(jnp.mean(exact.expected_reward(logp, gold))))
        out["score"].append(float(jnp.mean(exact.expected_reward(logp, score))))
        out["kl_bound"].append(exact.best_of_n_kl_bound(int(n)))
    return {k: np.array(v) for k, v in out.items()}


def sweep(point_fn, betas, keys) -> ExactPoint:
    """One compiled call over all (beta, seed): point_fn(beta, key) -> ExactPoint [B, S].
    The same point_fn object reuses its compiled program."""
    return _swept(point_fn)(jnp.asarray(betas, jnp.float32), keys)


@functools.cache
def _swept(point_fn):
    return jax.jit(jax.vmap(jax.vmap(point_fn, (None, 0)), (0, None)))


# ----------------------------------------------------------------------------- proxies and data


def fit_bt_reward(pairs: et.PreferencePairs, shape, l2: float, n_steps: int = 300,
                  learning_rate: float = 0.1) -> jax.Array:
    """A tabular reward model r_phi [P, N] (init 0) fitted by Bradley-Terry maximum likelihood
    (InstructGPT eq. 1, `bradley_terry_loss`, a mean over the M pairs) plus the Gaussian-prior
    term (l2 / 2) sum_{x,y} r_phi(x, y)^2 / M (the MAP objective divided by M), which keeps
    separable data finite and leaves responses absent from the pairs at 0."""
    tx = optax.adam(learning_rate)

    def loss_fn(r):
        loss, _ = bradley_terry_loss(r[pairs.prompt_ids, pairs.chosen],
                                     r[pairs.prompt_ids, pairs.rejected])
        return loss + 0.5 * l2 * jnp.mean(r**2) * r.size / pairs.chosen.shape[0]

    def step(carry, _):
        r, opt = carry
        updates, opt = tx.update(jax.grad(loss_fn)(r), opt)
        return (optax.apply_updates(r, updates), opt), None

    r0 = jnp.zeros(shape)
    (r, _), _ = jax.lax.scan(step, (r0, tx.init(r0)), None, length=n_steps)
    return r


def seen_mask(pairs: et.PreferencePairs, shape) -> jax.Array:
    """[P, N] 1.0 where a response appears (as chosen or rejected) in some pair."""
    mask = jnp.zeros(shape)
    mask = mask.at[pairs.prompt_ids, pairs.chosen].set(1.0)
    return mask.at[pairs.prompt_ids, pairs.rejected].set(1.0)


def subset_pairs(world: ExactWorld, n_support: int, n_pairs_per_prompt: int, key):
    """Out-of-distribution preference data: per prompt a random subset S of n_support responses
    (a data policy mu = uniform on S, unlike pi_ref), pairs y1, y2 ~ mu, BT labels from gold."""
    P, N = world.reward.shape
    k_sub, k_pairs = jax.random.split(key)
    scores = jax.random.uniform(k_sub, (P, N))
    kth = jnp.sort(scores, axis=-1)[:, N - n_support][:, None]  # n_support largest scores
    logp_mu = jnp.where(scores >= kth, -jnp.log(n_support), -jnp.inf)  # [P, N]
    return et.sample_preference_pairs(world._replace(logp_ref=logp_mu), n_pairs_per_prompt,
                                      k_pairs)


def sft_on_chosen(world: ExactWorld, pairs: et.PreferencePairs, n_steps: int,
                  learning_rate: float) -> jax.Array:
    """A few Adam steps of maximum likelihood on the chosen responses, from pi_ref
    (L_SFT = -(1/M) sum_m log pi(y_w,m)); returns log pi_sft [P, N] (full support)."""
    params = _params_from(world.logp_ref, world)
    tx = optax.adam(learning_rate)

    def loss_fn(p):
        logp = tabular.all_sequence_logprobs(p)
        return -jnp.mean(logp[pairs.prompt_ids, pairs.chosen])

    def step(carry, _):
        p, opt = carry
        updates, opt = tx.update(jax.grad(loss_fn)(p), opt)
        return (optax.apply_updates(p, updates), opt), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=n_steps)
    return tabular.all_sequence_logprobs(params)
