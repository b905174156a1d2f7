"""The Bradley-Terry preference loss for reward models.

Bradley & Terry (1952) model the probability that y_w is preferred to y_l as

    P(y_w > y_l) = sigmoid(r(y_w) - r(y_l)),

and a reward model is fit by maximum likelihood on human comparisons (Ziegler et al. 2019;
Stiennon et al. 2020; Ouyang et al. 2022 "InstructGPT", eq. 1):

    L(r) = -E_{(x, y_w, y_l)} [ log sigmoid(r(x, y_w) - r(x, y_l)) ].

This module takes the two reward arrays (from any model) and returns the loss.
"""

import jax
import jax.numpy as jnp


@jax.jit
def bradley_terry_loss(chosen_rewards: jax.Array, rejected_rewards: jax.Array):
    """Negative log-likelihood of the Bradley-Terry model (InstructGPT eq. 1).

        L = -mean_i log sigmoid(r_w,i - r_l,i)

    `jax.nn.log_sigmoid` is stable for any margin (no exp overflow, no log(0)).
    The loss depends only on the margins, so it is invariant to adding a constant to all
    rewards (the reward is identified only up to a per-prompt shift).

    Args:
      chosen_rewards: [B] scalar rewards r(x, y_w) of the preferred responses.
      rejected_rewards: [B] scalar rewards r(x, y_l) of the rejected responses.
    Returns:
      (loss scalar, metrics) with TRL RewardTrainer names: loss, accuracy (fraction with
      r_w > r_l), margin (mean r_w - r_l), mean_reward / min_reward / max_reward over both.
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.ndim != 1:
        raise ValueError(
            "bradley_terry.py: chosen_rewards and rejected_rewards must both be [B], got "
            f"{chosen_rewards.shape} and {rejected_rewards.shape}"
        )
    margin = chosen_rewards - rejected_rewards  # [B]
    loss = -jnp.mean(jax.nn.log_sigmoid(margin))  # InstructGPT eq. 1
    all_rewards = jnp.concatenate([chosen_rewards, rejected_rewards])  # [2B]
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean((margin > 0).astype(jnp.float32)),
        "margin": jnp.mean(margin),
        "mean_reward": jnp.mean(all_rewards),
        "min_reward": jnp.min(all_rewards),
        "max_reward": jnp.max(all_rewards),
    }
    return loss, metrics


@jax.jit
def grouped_bradley_terry_loss(rewards: jax.Array, wins: jax.Array):
    """Bradley-Terry NLL over groups of K responses to one prompt, every comparison inside a
    group counted once (InstructGPT sec. 3.5 and eq. 1: labellers rank K = 4..9 responses, the
    C(K, 2) comparisons of a prompt are ONE batch element):

        L = mean_g  -1/|C_g| sum_{i, j} W_gij log sigmoid(r_gi - r_gj),   |C_g| = sum_{i, j} W_gij

    where W_gij = 1 when response i of group g was preferred to response j.  Each response is
    scored once however many comparisons it takes part in (K forward passes per group instead of
    2 |C_g|), and all of a prompt's comparisons sit in the same step, which InstructGPT found to
    stop the reward model from overfitting.  Groups with no comparison are left out of the mean.
    With K = 2 and W = [[0, 1], [0, 0]] this is `bradley_terry_loss`.

    Args:
      rewards: [G, K] rewards r(x_g, y_gi).
      wins: [G, K, K] comparison counts W_gij (0 or 1; W_gii = 0).
    Returns:
      (loss scalar, metrics): loss; accuracy and margin over the comparisons (r_w > r_l,
      mean r_w - r_l); mean_reward / min_reward / max_reward over all G * K rewards.
    """
    if rewards.ndim != 2 or wins.shape != rewards.shape + rewards.shape[-1:]:
        raise ValueError(f"bradley_terry.py: rewards must be [G, K] and wins [G, K, K], got "
                         f"{rewards.shape} and {wins.shape}")
    margins = rewards[:, :, None] - rewards[:, None, :]              # [G, K, K]  r_gi - r_gj
    n_comparisons = wins.sum(axis=(1, 2))                            # [G] |C_g|
    has = n_comparisons > 0                                          # [G]
    per_group = -(wins * jax.nn.log_sigmoid(margins)).sum(axis=(1, 2)) / jnp.maximum(n_comparisons, 1)
    loss = jnp.sum(jnp.where(has, per_group, 0.0)) / jnp.maximum(has.sum(), 1)   # InstructGPT eq. 1
    total = jnp.maximum(wins.sum(), 1)
    metrics = {
        "loss": loss,
        "accuracy": jnp.sum(wins * (margins > 0)) / total,
        "margin": jnp.sum(wins * margins) / total,
        "mean_reward": jnp.mean(rewards),
        "min_reward": jnp.min(rewards),
        "max_reward": jnp.max(rewards),
    }
    return loss, metrics
