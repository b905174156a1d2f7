"""Direct preference optimisation: DPO, conservative DPO and IPO as pure array losses.

All three losses see a preference pair (x, y_w, y_l) only through four SUMMED sequence
log-probabilities (the DPO paper's choice: log pi(y|x) = sum_t log pi(y_t | x, y_<t)):

    policy_chosen_logps   = log pi_theta(y_w | x)    reference_chosen_logps   = log pi_ref(y_w | x)
    policy_rejected_logps = log pi_theta(y_l | x)    reference_rejected_logps = log pi_ref(y_l | x)

and through the difference of log-ratios

    h = [log pi_theta(y_w) - log pi_ref(y_w)] - [log pi_theta(y_l) - log pi_ref(y_l)].

beta * (log pi_theta - log pi_ref) is DPO's "implicit reward" (Rafailov et al. 2023, sec. 5):
the metrics report it as rewards/chosen and rewards/rejected, like TRL.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class PreferenceLogratios(NamedTuple):
    """The per-pair log-ratios of `preference_logratios`."""
    chosen_logratios: jax.Array  # [B] log pi_theta(y_w) - log pi_ref(y_w)
    rejected_logratios: jax.Array  # [B] log pi_theta(y_l) - log pi_ref(y_l)
    h: jax.Array  # [B] chosen_logratios - rejected_logratios


def preference_logratios(
    policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
) -> PreferenceLogratios:
    """The log-ratios shared by DPO and IPO; all arguments are summed sequence log-probs [B].

    h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))
      (the argument of sigma in Rafailov et al. 2023 eq. 7, divided by beta; Azar et al. 2023
      eq. 17's h_pi(y_w, y_l)).
    """
    shapes = {a.shape for a in (policy_chosen_logps, policy_rejected_logps,
                                reference_chosen_logps, reference_rejected_logps)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"dpo.py: the four log-prob arrays must all be [B], got shapes {shapes}")
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # [B]
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # [B]
    return PreferenceLogratios(chosen_logratios, rejected_logratios,
                               chosen_logratios - rejected_logratios)


def _metrics(loss, ratios: PreferenceLogratios, beta, policy_chosen_logps, policy_rejected_logps):
    """TRL DPOTrainer metric names. Implicit rewards are beta * log-ratio (detached)."""
    chosen_rewards = beta * jax.lax.stop_gradient(ratios.chosen_logratios)  # [B]
    rejected_rewards = beta * jax.lax.stop_gradient(ratios.rejected_logratios)  # [B]
    return {
        "loss": loss,
        "rewards/chosen": jnp.mean(chosen_rewards),
        "rewards/rejected": jnp.mean(rejected_rewards),
        "rewards/margins": jnp.mean(chosen_rewards - rejected_rewards),
        "rewards/accuracies": jnp.mean((chosen_rewards > rejected_rewards).astype(jnp.float32)),
        "logps/chosen": jnp.mean(policy_chosen_logps),
        "logps/rejected": jnp.mean(policy_rejected_logps),
    }


LOSS_TYPES = ("dpo", "ipo")


def preference_losses(h: jax.Array, beta: float, loss_type: str = "dpo",
                      label_smoothing: float = 0.0) -> jax.Array:
    """One loss per pair, from its log-ratio difference h [B] -> [B].  The single place where the
    variant is chosen; every batch loss of the package is the mean of these.

        "dpo", eps = 0:  l = -log sigma(beta h)                               (Rafailov et al. 2023, eq. 7)
        "dpo", eps > 0:  l = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
                                                         (conservative DPO, Mitchell 2023)
        "ipo":           l = (h - 1 / (2 beta))^2                              (Azar et al. 2023, eq. 17)

    cDPO assumes each label is flipped with probability eps = label_smoothing in [0, 0.5).
    IPO's squared loss regresses h to the finite target 1/(2 beta) instead of pushing it to
    infinity, so IPO stays regularised towards pi_ref even with deterministic preferences, where
    DPO's sigma-loss drives the loser's probability to 0 for every beta.
    """
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2                          # Azar et al. eq. 17
    if loss_type != "dpo":
        raise ValueError(f"dpo.py: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    logits = beta * h                                                 # [B]
    return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits)     # eq. 7
            - label_smoothing * jax.nn.log_sigmoid(-logits))          # cDPO: label flipped w.p. eps


def preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                    reference_rejected_logps, beta: float, loss_type: str = "dpo",
                    label_smoothing: float = 0.0):
    """The batch loss: mean over pairs of `preference_losses` (DPO, cDPO or IPO).

    Args: four [B] arrays of SUMMED sequence log-probs; beta > 0; loss_type "dpo" or "ipo";
      label_smoothing eps in [0, 0.5) (cDPO; "dpo" only).
    Returns: (loss scalar, metrics with TRL names).
    """
    ratios = preference_logratios(policy_chosen_logps, policy_rejected_logps,
                                  reference_chosen_logps, reference_rejected_logps)
    loss = jnp.mean(preference_losses(ratios.h, beta, loss_type, label_smoothing))
    return loss, _metrics(loss, ratios, beta, policy_chosen_logps, policy_rejected_logps)


def dpo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array,
    reference_rejected_logps: jax.Array,
    beta: float,
    label_smoothing: float = 0.0,
):
    """DPO loss (Rafailov et al. 2023, eq. 7), optionally conservative (label smoothing).

        L_DPO = -mean log sigma(beta h)                                             (eq. 7)
        L_cDPO = -mean [ (1 - eps) log sigma(beta h) + eps log sigma(-beta h) ]

    cDPO (Mitchell 2023, "A note on DPO with noisy preferences") assumes each label is
    flipped with probability eps; eps = 0 is plain DPO. Its gradient w.r.t. the chosen
    log-prob is -beta [(1 - eps) sigma(-beta h) - eps sigma(beta h)] per pair / B.
    With P(y1 > y2) = sigma(r(y1) - r(y2)) (Bradley-Terry, temperature 1), the population
    minimiser is pi*_beta = pi_ref exp(r / beta) / Z (Rafailov et al. sec. 4).

    Args: four [B] arrays of SUMMED sequence log-probs; beta > 0 (KL strength);
      label_smoothing eps in [0, 0.5).
    Returns: (loss scalar, metrics with TRL names).
    """
    return preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                           reference_rejected_logps, beta, "dpo", label_smoothing)


def ipo_loss(
    policy_chosen_logps: jax.Array,
    policy_rejected_logps: jax.Array,
    reference_chosen_logps: jax.Array,
    reference_rejected_logps: jax.Array,
    beta: float,
):
    """IPO loss (Azar et al. 2023, "A General Theoretical Paradigm...", eq. 17).

        L_IPO = mean (h - 1 / (2 beta))^2       (Azar et al. use tau for our beta)

    We use SUMMED sequence log-probs as in the paper's definition (TRL averages per token).

    Args: four [B] arrays of summed sequence log-probs; beta > 0.
    Returns: (loss scalar, metrics with TRL names).
    """
    return preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                           reference_rejected_logps, beta, "ipo")
