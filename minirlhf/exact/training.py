"""PPO and DPO with tabular policies on the exact world, checked against pi*_beta.

Both methods optimise (in different ways) the same KL-regularised objective

    max_pi  E_{y ~ pi}[r(y)] - beta KL(pi || pi_ref),   solved by  pi*_beta ∝ pi_ref exp(r / beta),

so on the exact world we can watch the exact KL(pi_theta || pi*_beta) fall to ~0.

* PPO (`run_ppo`): sample the tabular policy, per-token rewards -beta * k1 plus the gold score
  on the last token, GAE(gamma = 1, lam) with a tabular critic V(p, prefix), clipped surrogate,
  the generic `ppo.ppo_update`. vf_coef = 0 leaves V = 0: no critic, and with lam = 1 the
  advantage is the whitened Monte-Carlo return (REINFORCE with a batch baseline).
* DPO / IPO (`run_dpo`): preferences from the Bradley-Terry model of the gold reward,
  P(y1 > y2) = sigmoid(r(y1) - r(y2)) (temperature 1), pairs y1, y2 ~ pi_ref. With that
  temperature DPO's population optimum is exactly pi*_beta for the reward r (Rafailov et al.
  2023, sec. 4-5). Two data regimes: a sampled dataset, or the population (infinite-data)
  loss, an exact sum over all ordered pairs weighted by 2 pi_ref(i) pi_ref(j) sigmoid(r_i - r_j).
  Finite data is a real limit: the sampled optimum only approximates pi*_beta, and with
  far more response pairs than samples (the default 256-response world) full-batch DPO
  overfits and moves away from pi*_beta. IPO with the same data converges to its own
  optimum `exact.ipo_optimal_policy`, not to pi*_beta.

Every run is one pure function of its PRNG key (a lax.scan over iterations), so
`jax.jit(jax.vmap(partial(run_ppo, world, cfg)))(keys)` trains many seeds at once.
"""

from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from minirlhf import dpo, ppo
from minirlhf.config import check_fields
from minirlhf.dpo import preference_logratios, preference_losses
from minirlhf.exact import tabular
from minirlhf.exact import world as exact
from minirlhf.exact.world import ExactWorld


def exact_metrics(params: dict, world: ExactWorld, logp_star: jax.Array) -> dict:
    """Exact diagnostics of a tabular policy, averaged over prompts."""
    logp = tabular.all_sequence_logprobs(params)  # [P, N]
    return {
        "exact/kl_to_optimum": jnp.mean(exact.kl(logp, logp_star)),
        "exact/kl_to_ref": jnp.mean(exact.kl(logp, world.logp_ref)),
        "exact/expected_reward": jnp.mean(exact.expected_reward(logp, world.reward)),
    }


def adam_optimizer(learning_rate, total_steps: int, anneal: bool):
    """Adam (Kingma & Ba 2015), its step size annealed linearly to 0 over total_steps if `anneal`."""
    schedule = optax.linear_schedule(learning_rate, 0.0, total_steps) if anneal else learning_rate
    return optax.adam(schedule)


# ----------------------------------------------------------------------------- PPO


@dataclass(frozen=True)
class TabularPPOConfig:
    beta: float = 0.3
    """Fixed KL coefficient of the per-token penalty (the target is pi*_beta)."""
    n_iterations: int = 200
    """Rollout + update iterations."""
    batch_size: int = 256
    """Rollouts per iteration (prompts assigned round-robin)."""
    update: ppo.PPOUpdateConfig = field(default_factory=lambda: ppo.PPOUpdateConfig(4, 4))
    """Epochs x minibatches per rollout batch."""
    learning_rate: float = 0.03
    """Adam step size for the logits and value tables."""
    anneal_lr: bool = True
    """Linearly decay the step size to 0 (removes the stochastic-gradient noise floor)."""
    clip_eps: float = 0.2
    """PPO ratio clip epsilon."""
    clip_eps_v: float | None = None
    """Value clip epsilon (None = unclipped value loss)."""
    vf_coef: float = 0.5
    """Weight of the value loss; 0 keeps V = 0 (no critic)."""
    gamma: float = 1.0
    """Discount (1: the response is one episode)."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch."""
    kl_kind: str = "k1"
    """KL estimator in the shaped reward (k1: the sum is exactly log pi/pi_ref)."""

    def __post_init__(self):
        check_fields(self, counts=("n_iterations", "batch_size"),
                     positive=("beta", "learning_rate"), open_unit=("clip_eps",),
                     non_negative=("vf_coef",), unit=("gamma", "lam"))
        if self.clip_eps_v is not None:
            check_fields(self, positive=("clip_eps_v",))
        if self.kl_kind not in ppo.KL_ESTIMATORS:
            raise ValueError(f"TabularPPOConfig.kl_kind: expected one of "
                             f"{list(ppo.KL_ESTIMATORS)}, got {self.kl_kind!r}")
        if self.batch_size % self.update.n_minibatches != 0:
            raise ValueError(f"TabularPPOConfig: batch_size={self.batch_size} is not divisible "
                             f"by update.n_minibatches={self.update.n_minibatches}")


def ppo_loss_fn(cfg: TabularPPOConfig):
    """The tabular policy's PPO loss for `ppo.ppo_update`: clipped surrogate + vf_coef * value loss,

        rho_t = exp(log pi_theta(a_t) - log pi_old(a_t))
        L_clip = masked_mean( max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps)) )
                                                        (ppo.policy_loss; Schulman et al. 2017, eq. 7)
        L_V = 0.5 masked_mean( (V - R)^2 ), or with clip_eps_v the clipped form (ppo.value_loss)
        L = L_clip + vf_coef * L_V                      (Schulman et al. 2017, eq. 9 without entropy)

    Returns loss_fn(params, minibatch) -> (L, policy/* and value/* metrics)."""
    def loss_fn(params, mb):
        new_logps = tabular.token_logprobs(params, mb["prompt_ids"], mb["responses"])  # [b, K]
        pg_loss, metrics = ppo.policy_loss(new_logps, mb["old_logps"], mb["advantages"],
                                           mb["mask"], cfg.clip_eps)
        new_values = tabular.token_values(params, mb["prompt_ids"], mb["responses"])  # [b, K]
        v_loss, v_metrics = ppo.value_loss(new_values, mb["old_values"], mb["returns"],
                                           mb["mask"], cfg.clip_eps_v)
        return pg_loss + cfg.vf_coef * v_loss, {**metrics, **v_metrics}

    return loss_fn


def ppo_rollout(params, ref_params, world: ExactWorld, cfg: TabularPPOConfig, key):
    """Sample a batch, shape rewards, run GAE: everything ppo_update needs."""
    P, A = world.reward.shape[0], world.ref_logits.shape[-1]
    prompt_ids = jnp.arange(cfg.batch_size, dtype=jnp.int32) % P  # [B]
    responses, old_logps = tabular.sample(params, prompt_ids, key)  # [B, K] each
    ref_logps = tabular.token_logprobs(ref_params, prompt_ids, responses)  # [B, K]
    mask = jnp.ones_like(old_logps)  # every position of the tabular response is an action
    scores = world.reward[prompt_ids, exact.response_index(responses, A)]  # [B]
    rewards = ppo.shape_rewards(scores, old_logps - ref_logps, mask, cfg.beta, cfg.kl_kind)
    values = tabular.token_values(params, prompt_ids, responses)  # [B, K]
    advantages, returns = ppo.gae(rewards, values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = ppo.whiten(advantages, mask)
    batch = {"prompt_ids": prompt_ids, "responses": responses, "old_logps": old_logps,
             "old_values": values, "advantages": advantages, "returns": returns, "mask": mask}
    stats = {"rollout/score": jnp.mean(scores),
             "rollout/kl_k1": jnp.mean(jnp.sum(old_logps - ref_logps, -1)),
             "rollout/explained_variance": ppo.explained_variance(values, returns, mask)}
    return batch, stats


def run_ppo(world: ExactWorld, cfg: TabularPPOConfig, key: jax.Array):
    """Train a tabular policy with PPO from pi_ref; one jittable pure function of `key`.

    Returns (params, history) with history[name] of shape [n_iterations]
    (exact/* metrics are measured after each iteration's update).
    """
    A, K = world.ref_logits.shape[-1], world.responses.shape[-1]
    ref_params = tabular.init_tabular_from_logprobs(world.logp_ref, A, K)
    params = {"logits": ref_params["logits"],
              "values": jnp.zeros(ref_params["logits"].shape[:2])}  # [P, n_prefixes]
    steps = cfg.n_iterations * cfg.update.n_epochs * cfg.update.n_minibatches
    state = TrainState.create(apply_fn=None, params=params,
                              tx=adam_optimizer(cfg.learning_rate, steps, cfg.anneal_lr))
    logp_star = exact.optimal_policy(world.logp_ref, world.reward, cfg.beta)
    loss_fn = ppo_loss_fn(cfg)

    def iteration(state, it_key):
        k_rollout, k_update = jax.random.split(it_key)
        batch, stats = ppo_rollout(state.params, ref_params, world, cfg, k_rollout)
        state, metrics = ppo.ppo_update(state, batch, k_update, loss_fn, cfg.update)
        metrics = jax.tree_util.tree_map(jnp.mean, metrics)
        return state, {**metrics, **stats, **exact_metrics(state.params, world, logp_star)}

    state, history = jax.lax.scan(iteration, state, jax.random.split(key, cfg.n_iterations))
    return state.params, history


# ----------------------------------------------------------------------------- DPO / IPO


@dataclass(frozen=True)
class TabularDPOConfig:
    beta: float = 0.3
    """KL strength: DPO's population optimum is pi*_beta."""
    loss_type: str = "dpo"
    """"dpo" (Rafailov et al. 2023 eq. 7, with label_smoothing: cDPO) or "ipo" (Azar et al.)."""
    label_smoothing: float = 0.0
    """cDPO epsilon (dpo only)."""
    population: bool = False
    """True: exact expected loss over all pairs (infinite data); False: a sampled dataset."""
    n_pairs_per_prompt: int = 65536
    """Size of the sampled dataset per prompt (population=False)."""
    batch_size: int | None = None
    """Pairs per gradient step, drawn with replacement (population=False); None: full batch."""
    n_steps: int = 600
    """Gradient steps."""
    learning_rate: float = 0.05
    """Adam step size."""
    anneal_lr: bool = True
    """Linearly decay the step size to 0."""

    def __post_init__(self):
        if self.loss_type not in ("dpo", "ipo"):
            raise ValueError(f"TabularDPOConfig.loss_type: expected 'dpo' or 'ipo', "
                             f"got {self.loss_type!r}")
        check_fields(self, counts=("n_pairs_per_prompt", "n_steps"),
                     positive=("beta", "learning_rate"), unit=("label_smoothing",))
        if self.batch_size is not None:
            check_fields(self, counts=("batch_size",))
        if not self.label_smoothing < 0.5:
            raise ValueError(f"TabularDPOConfig.label_smoothing: expected in [0, 0.5), "
                             f"got {self.label_smoothing}")


class PreferencePairs(NamedTuple):
    prompt_ids: jax.Array  # [M] int32
    chosen: jax.Array  # [M] int32 index of y_w in world.responses
    rejected: jax.Array  # [M] int32 index of y_l


@partial(jax.jit, static_argnums=1)
def sample_preference_pairs(world: ExactWorld, n_pairs_per_prompt: int, key) -> PreferencePairs:
    """y1, y2 ~ pi_ref iid per prompt; y1 wins with prob sigmoid(r(y1) - r(y2)) (Bradley-Terry).

    Pairs with y1 == y2 are kept: their DPO gradient is exactly zero.
    """
    P, N = world.reward.shape
    k_pair, k_label = jax.random.split(key)
    prompt_ids = jnp.repeat(jnp.arange(P, dtype=jnp.int32), n_pairs_per_prompt)  # [M]
    # inverse-CDF sampling: y = first index with F(y) > u, u ~ U[0, 1) (O(log N) per draw)
    cdf = jnp.cumsum(jnp.exp(world.logp_ref), axis=-1)  # [P, N]
    u = jax.random.uniform(k_pair, (2, P, n_pairs_per_prompt))
    draws = jax.vmap(jax.vmap(partial(jnp.searchsorted, side="right")), (None, 0))(cdf, u)
    y1, y2 = (jnp.minimum(d, N - 1).reshape(-1).astype(jnp.int32) for d in draws)  # [M] each
    p_y1_wins = jax.nn.sigmoid(world.reward[prompt_ids, y1] - world.reward[prompt_ids, y2])
    y1_wins = jax.random.bernoulli(k_label, p_y1_wins)
    return PreferencePairs(prompt_ids, jnp.where(y1_wins, y1, y2), jnp.where(y1_wins, y2, y1))


@jax.jit
def population_pair_weights(world: ExactWorld) -> jax.Array:
    """Probability of each ordered (prompt, y_w, y_l) under the sampling process (sums to 1):
    (1/P) * 2 pi_ref(y_w) pi_ref(y_l) sigmoid(r(y_w) - r(y_l)). Returns [P, N, N]."""
    P = world.reward.shape[0]
    pi_ref, r = jnp.exp(world.logp_ref), world.reward  # [P, N]
    return (2.0 / P) * pi_ref[:, :, None] * pi_ref[:, None, :] * jax.nn.sigmoid(
        r[:, :, None] - r[:, None, :])  # [P, N, N]


@partial(jax.jit, static_argnums=(1, 2))
def empirical_pair_weights(pairs: PreferencePairs, n_prompts: int, n_responses: int):
    """A sampled dataset as empirical frequencies of each (prompt, y_w, y_l): [P, N, N].

    For a tabular policy mean_m loss(pair m) depends only on these counts, so full-batch
    training on any number of pairs costs P N^2 per step.
    """
    flat = (pairs.prompt_ids * n_responses + pairs.chosen) * n_responses + pairs.rejected
    counts = jnp.zeros(n_prompts * n_responses**2).at[flat].add(1.0)
    return (counts / flat.shape[0]).reshape(n_prompts, n_responses, n_responses)


def _pair_losses(policy_chosen, policy_rejected, reference_chosen, reference_rejected, cfg,
                 beta=None):
    """Per-pair loss: the library's per-pair losses (dpo.preference_losses). All [M].
    beta: cfg.beta when None, else a (possibly traced) override."""
    h = preference_logratios(policy_chosen, policy_rejected, reference_chosen, reference_rejected).h
    return preference_losses(h, cfg.beta if beta is None else beta, cfg.loss_type,
                             cfg.label_smoothing)


@partial(jax.jit, static_argnums=4)
def preference_loss(params, ref_params, world: ExactWorld, pairs: PreferencePairs, cfg, beta=None):
    """Mean loss over a batch of M pairs, with summed token log-probs like a language model:

        h_m = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))
        "dpo": L = -(1/M) sum_m [(1 - eps) log sigma(beta h_m) + eps log sigma(-beta h_m)]
               (Rafailov et al. 2023, eq. 7; eps = cfg.label_smoothing > 0: conservative DPO)
        "ipo": L = (1/M) sum_m (h_m - 1 / (2 beta))^2   (Azar et al. 2023, eq. 17)"""
    def seq_logps(p, idx):
        return tabular.token_logprobs(p, pairs.prompt_ids, world.responses[idx]).sum(-1)  # [M]

    return jnp.mean(_pair_losses(seq_logps(params, pairs.chosen), seq_logps(params, pairs.rejected),
                                 seq_logps(ref_params, pairs.chosen),
                                 seq_logps(ref_params, pairs.rejected), cfg, beta))


@partial(jax.jit, static_argnums=3)
def grid_preference_loss(params, world: ExactWorld, weights: jax.Array, cfg, beta=None):
    """sum_{p, w, l} weights[p, w, l] * loss(p, y_w, y_l) over all ordered pairs at once.

    The exact distribution log pi [P, N] is broadcast to [P, N, N] (chosen on axis 1,
    rejected on axis 2), so the backward pass is a sum, not N^2 scatters. weights: [P, N, N].
    """
    logp = tabular.all_sequence_logprobs(params)  # [P, N]
    shape = weights.shape
    chosen = (jnp.broadcast_to(x[:, :, None], shape).reshape(-1) for x in (logp, world.logp_ref))
    rejected = (jnp.broadcast_to(x[:, None, :], shape).reshape(-1) for x in (logp, world.logp_ref))
    (pc, rc), (pr, rr) = chosen, rejected
    return jnp.sum(weights.reshape(-1) * _pair_losses(pc, pr, rc, rr, cfg, beta))


def run_dpo(world: ExactWorld, cfg: TabularDPOConfig, key: jax.Array, beta=None):
    """Train a tabular policy with DPO / IPO from pi_ref; one jittable pure function of `key`.

    population=True: exact expected loss (grid weights = pair probabilities). Otherwise a
    dataset of n_pairs_per_prompt sampled pairs, trained full-batch (batch_size=None, via
    its empirical grid weights) or with minibatches drawn with replacement.
    beta: cfg.beta when None; else a traced scalar, so that a sweep over beta is one program
    (`jax.vmap` over it) instead of one compilation per value.
    Returns (params, history) with history[name] of shape [n_steps].
    """
    beta = cfg.beta if beta is None else beta
    A, K = world.ref_logits.shape[-1], world.responses.shape[-1]
    ref_params = tabular.init_tabular_from_logprobs(world.logp_ref, A, K)
    k_data, k_steps = jax.random.split(key)
    full_batch = cfg.population or cfg.batch_size is None
    if cfg.population:
        weights = population_pair_weights(world)
    else:
        pairs = sample_preference_pairs(world, cfg.n_pairs_per_prompt, k_data)
        if full_batch:
            weights = empirical_pair_weights(pairs, *world.reward.shape)
    state = TrainState.create(apply_fn=None, params=ref_params,
                              tx=adam_optimizer(cfg.learning_rate, cfg.n_steps, cfg.anneal_lr))
    logp_star = exact.optimal_policy(world.logp_ref, world.reward, beta)

    def loss_fn(params, step_key):
        if full_batch:
            return grid_preference_loss(params, world, weights, cfg, beta)
        idx = jax.random.randint(step_key, (cfg.batch_size,), 0, pairs.prompt_ids.shape[0])
        batch = jax.tree_util.tree_map(lambda x: x[idx], pairs)
        return preference_loss(params, ref_params, world, batch, cfg, beta)

    def step(state, step_key):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, step_key)
        state = state.apply_gradients(grads=grads)
        return state, {"loss": loss, **exact_metrics(state.params, world, logp_star)}

    state, history = jax.lax.scan(step, state, jax.random.split(k_steps, cfg.n_steps))
    return state.params, history


# ----------------------------------------------------------------------------- IPO vs DPO toy


def deterministic_preference_toy(cfg: TabularDPOConfig, pairs: jax.Array, logp_ref: jax.Array):
    """Azar et al. 2023 (sec. 4.2): DPO vs IPO when preferences are deterministic.

    One prompt, n responses, a categorical policy (the tabular policy with K = 1), trained
    full-batch on `pairs` [M, 2] of (winner, loser) indices that always come out the same way.
    Each pair's empirical preference is 1, so DPO's sigma-loss is minimised only at
    h = +inf: the loser's probability goes to 0 whatever beta is -- the KL term is ignored.
    IPO regresses every h to 1/(2 beta): its optimum is the least-squares solution of
    those equations, finite and closer to pi_ref for larger beta.
    logp_ref: [n] reference log-probs. Returns the trained log-probs [n].
    """
    n = logp_ref.shape[0]
    params = {"logits": logp_ref.reshape(1, 1, n)}  # P = 1 prompt, 1 prefix node, A = n
    ref_params = jax.tree_util.tree_map(jnp.copy, params)

    def loss_fn(p):
        logp, logp0 = (tabular.all_sequence_logprobs(q)[0] for q in (p, ref_params))  # [n]
        return dpo.preference_loss(logp[pairs[:, 0]], logp[pairs[:, 1]], logp0[pairs[:, 0]],
                                   logp0[pairs[:, 1]], cfg.beta, cfg.loss_type)[0]

    state = TrainState.create(apply_fn=None, params=params,
                              tx=adam_optimizer(cfg.learning_rate, cfg.n_steps, cfg.anneal_lr))

    def step(state, _):
        return state.apply_gradients(grads=jax.grad(loss_fn)(state.params)), None

    state, _ = jax.lax.scan(step, state, None, length=cfg.n_steps)
    return tabular.all_sequence_logprobs(state.params)[0]
