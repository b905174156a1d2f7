"""Lesson 08, experiments 2-3 on the exact world: out-of-distribution preference data (Xu et
al. 2024) and reward overoptimisation (Gao et al. 2022). Each run is a pure function of its
PRNG key; the lesson vmaps it over seeds. Helpers (pairs, proxies, trainers) are in compare.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from minirlhf import ppo
from minirlhf.config import check_fields
from minirlhf.exact import tabular
from minirlhf.exact import training as et
from minirlhf.exact import world as exact
from minirlhf.exact.compare import (
    PrefTrainConfig,
    exact_point,
    fit_bt_reward,
    seen_mask,
    sft_on_chosen,
    subset_pairs,
    train_on_pairs,
)
from minirlhf.exact.world import ExactWorld

# ----------------------------------------------------------------------------- OOD preferences


@dataclass(frozen=True)
class OODConfig:
    beta: float = 0.1
    """KL strength of every method (DPO's beta, PPO's KL coefficient)."""
    n_support: int = 8
    """|S|: responses per prompt that the preference data covers (out of N)."""
    n_pairs_per_prompt: int = 64
    """Pairs y1, y2 ~ uniform(S), labelled by Bradley-Terry on the gold reward."""
    l2: float = 0.1
    """Ridge strength of the tabular BT reward model PPO optimises."""
    pref: PrefTrainConfig = PrefTrainConfig(n_steps=300)
    """DPO training (also each online round)."""
    ppo: et.TabularPPOConfig = field(
        default_factory=lambda: et.TabularPPOConfig(beta=1.0, n_iterations=100))
    """PPO on the proxy via reward scaling (beta=1 here; cfg.beta above is the real one)."""
    sft_steps: int = 30
    """Adam steps of SFT on the chosen responses (remedy 1)."""
    sft_learning_rate: float = 0.05
    """Its step size."""
    online_rounds: int = 3
    """Rounds of online DPO after the offline one: fresh pairs from the current policy."""

    def __post_init__(self):
        check_fields(self, counts=("n_support", "n_pairs_per_prompt", "sft_steps"),
                     naturals=("online_rounds",), positive=("beta", "sft_learning_rate"),
                     non_negative=("l2",))


def _mass_outside(logp, seen) -> jax.Array:
    """mean_p sum_y pi(y|p) [y never in the data]. logp, seen: [P, N]."""
    return jnp.mean(jnp.sum(jnp.exp(logp) * (1.0 - seen), axis=-1))


def _online_dpo(world, logp0, seen0, cfg: OODConfig, key):
    """Rounds of: sample pairs from the current policy, BT-label with gold, DPO (ref pi_ref)."""
    def round_(carry, k):
        logp, seen = carry
        pairs = et.sample_preference_pairs(world._replace(logp_ref=logp),
                                           cfg.n_pairs_per_prompt, k)
        logp = train_on_pairs(logp, world.logp_ref, pairs, cfg.beta, cfg.pref, world)
        return (logp, jnp.maximum(seen, seen_mask(pairs, seen.shape))), None

    (logp, seen), _ = jax.lax.scan(round_, (logp0, seen0),
                                   jax.random.split(key, cfg.online_rounds))
    return logp, seen


def ood_run(world: ExactWorld, cfg: OODConfig, key) -> dict:
    """Xu et al. 2024 sec. 4 as a toy. Offline pairs cover only S; compare

      dpo         DPO from pi_ref on those pairs,
      ppo_rm      PPO from pi_ref on a BT reward model fitted to the same pairs,
      sft_dpo     SFT on the chosen responses, then DPO with pi_sft as the reference,
      online_dpo  the offline DPO policy, then rounds of DPO on fresh on-policy pairs.

    Returns {method: {"unseen": mass on responses absent from the offline pairs,
    "kl": KL(pi || pi_ref), "reward": E_pi[gold]}} (scalars; vmap over key for seeds).
    """
    k_data, k_ppo, k_online = jax.random.split(key, 3)
    pairs = subset_pairs(world, cfg.n_support, cfg.n_pairs_per_prompt, k_data)
    seen = seen_mask(pairs, world.reward.shape)  # [P, N]
    logps = {"pi_ref": world.logp_ref}
    logps["dpo"] = train_on_pairs(world.logp_ref, world.logp_ref, pairs, cfg.beta, cfg.pref,
                                  world)
    proxy = fit_bt_reward(pairs, world.reward.shape, cfg.l2)
    params, _ = et.run_ppo(world._replace(reward=proxy / cfg.beta), cfg.ppo, k_ppo)
    logps["ppo_rm"] = tabular.all_sequence_logprobs(params)
    logp_sft = sft_on_chosen(world, pairs, cfg.sft_steps, cfg.sft_learning_rate)
    logps["sft"] = logp_sft
    logps["sft_dpo"] = train_on_pairs(logp_sft, logp_sft, pairs, cfg.beta, cfg.pref, world)
    logps["online_dpo"], seen_online = _online_dpo(world, logps["dpo"], seen, cfg, k_online)
    out = {}
    for name, logp in logps.items():
        point = exact_point(logp, world)
        out[name] = {"unseen": _mass_outside(logp, seen), "kl": point.kl, "reward": point.reward}
    out["online_dpo"]["unseen_own_data"] = _mass_outside(logps["online_dpo"], seen_online)
    return out


# ----------------------------------------------------------------------------- overoptimisation


@dataclass(frozen=True)
class OveroptConfig:
    n_pairs_per_prompt: int = 32
    """Few BT-labelled pairs y1, y2 ~ pi_ref per prompt for the proxy."""
    rater_temperature: float = 0.1
    """Labels P(y1 > y2) = sigmoid((r(y1) - r(y2)) / T): a sharper rater than T = 1, so a few
    pairs give a proxy that is informative at first (gold differences are <= 1)."""
    l2: float = 0.05
    """Ridge strength of the tabular proxy."""
    ppo: et.TabularPPOConfig = field(default_factory=lambda: et.TabularPPOConfig(
        beta=0.005, n_iterations=150, learning_rate=0.01, anneal_lr=False))
    """PPO against the proxy with a small KL coefficient (cfg.ppo.beta)."""
    bon_ns: tuple = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    """Best-of-n against the proxy, exact by enumeration."""

    def __post_init__(self):
        check_fields(self, counts=("n_pairs_per_prompt",), positive=("rater_temperature",),
                     non_negative=("l2",))
        if not self.bon_ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                  for n in self.bon_ns):
            raise ValueError(f"OveroptConfig.bon_ns: expected a non-empty tuple of integers "
                             f">= 1, got {self.bon_ns!r}")


def run_ppo_tracked(world: ExactWorld, gold: jax.Array, cfg: et.TabularPPOConfig, key):
    """`training.run_ppo` trained on world.reward (the proxy) that also records, after
    each iteration, the exact gold reward, proxy reward and KL to pi_ref (prompt means).
    Returns {"kl", "gold", "proxy"} each [n_iterations + 1] (index 0 = pi_ref)."""
    A, K = world.ref_logits.shape[-1], world.responses.shape[-1]
    ref_params = tabular.init_tabular_from_logprobs(world.logp_ref, A, K)
    params = {"logits": ref_params["logits"], "values": jnp.zeros(ref_params["logits"].shape[:2])}
    steps = cfg.n_iterations * cfg.update.n_epochs * cfg.update.n_minibatches
    state = TrainState.create(apply_fn=None, params=params,
                              tx=et.adam_optimizer(cfg.learning_rate, steps, cfg.anneal_lr))
    loss_fn = et.ppo_loss_fn(cfg)

    def track(p):
        logp = tabular.all_sequence_logprobs(p)
        return {"kl": jnp.mean(exact.kl(logp, world.logp_ref)),
                "gold": jnp.mean(exact.expected_reward(logp, gold)),
                "proxy": jnp.mean(exact.expected_reward(logp, world.reward))}

    def iteration(state, it_key):
        k_rollout, k_update = jax.random.split(it_key)
        batch, _ = et.ppo_rollout(state.params, ref_params, world, cfg, k_rollout)
        state, _ = ppo.ppo_update(state, batch, k_update, loss_fn, cfg.update)
        return state, track(state.params)

    start = track(params)
    _, hist = jax.lax.scan(iteration, state, jax.random.split(key, cfg.n_iterations))
    return {k: jnp.concatenate([start[k][None], hist[k]]) for k in hist}


def overopt_run(world: ExactWorld, cfg: OveroptConfig, key) -> dict:
    """Gao et al. 2022 as a toy: a proxy fitted on few pairs, then PPO and best-of-n against it.
    Returns {"ppo": run_ppo_tracked(...), "bon": {"kl", "gold", "proxy"} each [len(bon_ns)]}."""
    k_pairs, k_ppo = jax.random.split(key)
    rater = world._replace(reward=world.reward / cfg.rater_temperature)
    pairs = et.sample_preference_pairs(rater, cfg.n_pairs_per_prompt, k_pairs)
    proxy = fit_bt_reward(pairs, world.reward.shape, cfg.l2)
    history = run_ppo_tracked(world._replace(reward=proxy), world.reward, cfg.ppo, k_ppo)
    bon = {"kl": [], "gold": [], "proxy": []}
    for n in cfg.bon_ns:  # static n: one best-of-n distribution each
        logp = exact.best_of_n_logprobs(world.logp_ref, proxy, n)
        bon["kl"].append(jnp.mean(exact.kl(logp, world.logp_ref)))
        bon["gold"].append(jnp.mean(exact.expected_reward(logp, world.reward)))
        bon["proxy"].append(jnp.mean(exact.expected_reward(logp, proxy)))
    return {"ppo": history, "bon": {k: jnp.stack(v) for k, v in bon.items()}}


def fit_gao(d, gain, form: str) -> tuple[float, float, float]:
    """Least-squares fit of Gao et al. 2022's forms to gold-reward gains over pi_ref:

        R_bon(d) = d (alpha - beta d)       (eq. 1)     form="bon"
        R_RL(d)  = d (alpha - beta log d)   (eq. 2)     form="rl"

    Both are linear in (alpha, beta). d = sqrt(KL), gain = R_gold - R_gold(pi_ref): any
    shape (flattened; d = 0 rows carry no information and are dropped).
    Returns (alpha, beta, r2 of the fit)."""
    if form not in ("bon", "rl"):
        raise ValueError(f"fit_gao: form must be 'bon' or 'rl', got {form!r}")
    d, gain = np.ravel(np.asarray(d, np.float64)), np.ravel(np.asarray(gain, np.float64))
    keep = d > 1e-6
    d, gain = d[keep], gain[keep]
    second = d**2 if form == "bon" else d * np.log(d)
    design = np.stack([d, -second], axis=1)  # gain = alpha d - beta second
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    residual = gain - design @ np.array([alpha, beta])
    r2 = 1.0 - residual.var() / max(gain.var(), 1e-12)
    return float(alpha), float(beta), float(r2)
