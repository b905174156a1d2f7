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
