"""GRPO, Dr. GRPO and RLOO on the transformer, with a learned or a verifiable reward (expert
iteration, the simplest verifiable-reward baseline, is in expert_iteration.py).  The math (group advantages, the clipped per-token surrogate, both KL
placements) lives in grpo.py; this module runs it on the GPT of lessons 02-06.

    max_theta  E_{x ~ D, y ~ pi_theta(.|x)} [ r(x, y) ]  -  beta KL(pi_theta(.|x) || pi_ref(.|x))

No value function: for every prompt G answers are sampled and each answer's advantage is its
reward compared with its group mates' (grpo.group_advantages).  ONE ITERATION IS ONE JITTED
CALL, `grpo_iteration`:

  1. prompts   P prompts drawn inside the jit, each repeated G times (rows grouped by prompt);
  2. rollout   y ~ pi_theta with the KV-cache sampler; its log-probs are log pi_old (the
               sampler samples from exactly the tempered distribution the loss scores);
  3. scoring   log pi_ref (a forward pass) and the reward: r_phi of lesson 04 (a forward pass
               of the reward model) or the verifiable reward, both under stop_gradient;
  4. KL        kl_in = "loss": k3 per token in the loss (GRPO, Shao et al. 2024 eq. 4);
               kl_in = "reward": r - beta sum_t k1_t (PPO's placement; RLOO, Ahmadian et al. 2024);
  5. baseline  advantages from the G rewards of each prompt (grpo.group_advantages);
  6. update    n_epochs full-batch steps of grpo.grpo_loss under lax.scan (one is on-policy).

The recipe (estimator, reward, kl_in) is DATA, not program: `Recipe` carries it into the jit as
traced scalars, so GRPO, Dr. GRPO and RLOO, on either reward, with the KL in either place, run
one compiled program per shape.  Inside, all three advantages are computed (a [P, G] array
each, cheap) and one is picked by index; the reward is a `lax.cond` between the verifier's
(always computed: it is also the gold-accuracy diagnostic) and the reward model's forward pass;
and both KL placements are always applied, each with its own coefficient, the unused one 0:

    r~ = r - beta_in_reward sum_t k1_t        L = L_clip + beta_in_loss D_k3

so that with (beta_in_loss, beta_in_reward) = (beta, 0) or (0, beta) the numbers are those of
kl_in = "loss" or "reward" (x - 0 * y = x and x + 0 * y = x exactly, for finite y).

The verifiable reward (RLVR): 1 if the answer names the prompt's capital and no other capital,
else 0, computed inside the jit from the token ids (`minirlhf/verifier.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tokenizers import Tokenizer

from minirlhf import grpo
from minirlhf.config import check_fields
from minirlhf.evaluation import MAX_NEW_TOKENS, PROMPT_LEN
from minirlhf.model import GPTConfig, forward, token_logprobs, unembed
from minirlhf.ppo_train import draw_prompts
from minirlhf.reward import reward_forward
from minirlhf.sampling import generate
from minirlhf.tokenizer import EOS_ID, encode_prompts
from minirlhf.training import TRAINABLE, Progress, freeze_updates, gpt_labels, stop_frozen
from minirlhf.verifier import (  # noqa: F401 (Verifier, capital_tables: part of this API)
    CAPITALS,
    Verifier,
    capital_tables,
    make_verifier,
    verifiable_reward,
)
from minirlhf.worlds.capitals import CAPITAL, parse_country, split_prompts

REWARDS = ("model", "gold")
KL_CANONICAL = "loss"   # grpo.grpo_loss's kl_in inside the jit; Recipe.beta_in_* place the KL


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """One GRPO / Dr. GRPO / RLOO run on the transformer (hashable: a static argument of the jit)."""

    estimator: str = "grpo"
    """Advantage of each answer (grpo.ADVANTAGE_KINDS): "grpo" (group-whitened, Shao et al.
    2024), "drgrpo" (group-centred, Liu et al. 2025) or "rloo" (leave-one-out baseline,
    Ahmadian et al. 2024)."""
    reward: str = "model"
    """"model": lesson 04's reward model r_phi; "gold": the verifiable reward, 1 if the answer
    names the right capital and no other, else 0 (see the module docstring)."""
    kl_in: str = "loss"
    """Where beta KL enters (grpo.KL_PLACEMENTS): "loss" (k3 per token, GRPO) or "reward"
    (the summed k1 subtracted from each answer's reward before the baseline; PPO, RLOO)."""
    beta: float = 0.05
    """KL coefficient."""
    group_size: int = 4
    """G answers sampled per prompt (>= 2: the baseline is the group)."""
    prompts_per_iteration: int = 16
    """P prompts per iteration (a shuffled tiling of the training prompts); the batch is P * G."""
    n_iterations: int = 30
    """Iterations, each one call of the jitted `grpo_iteration`."""
    lr: float = 3e-4
    """Adam step size (constant).  With the defaults, 5e-4 tripled the KL of 3e-4 for less
    train accuracy (capitals, reward model, one seed)."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip before Adam."""
    clip_eps_low: float = 0.2
    """Lower clip range of the ratio, 1 - eps_low (Schulman et al. 2017 eq. 7)."""
    clip_eps_high: float = 0.2
    """Upper clip range, 1 + eps_high (> eps_low: DAPO's clip-higher, Yu et al. 2025)."""
    norm: str = "sequence"
    """Normalisation of the per-token loss (grpo.NORMALISATIONS): "sequence" (GRPO), "token"
    (DAPO) or "constant" (Dr. GRPO: divide by the batch size times max_new_tokens)."""
    n_epochs: int = 1
    """Full-batch gradient steps per rollout batch (1: on-policy, the ratio is 1 and never clips)."""
    temperature: float = 1.0
    """Sampling temperature; log pi_old, log pi_theta and log pi_ref are all taken at it."""
    prompt_len: int = PROMPT_LEN
    """Width of the left-padded prompts."""
    max_new_tokens: int = MAX_NEW_TOKENS
    """Response budget N; an answer without <eos> after N tokens is cut (and scored as such)."""
    trainable: str = "all"
    """Which policy weights are updated (training.TRAINABLE): "all" or "final_norm"."""
    seed: int = 0
    """Seeds every prompt draw and rollout."""

    def __post_init__(self):
        check_fields(self, counts=("group_size", "prompts_per_iteration", "n_iterations",
                                   "n_epochs", "prompt_len", "max_new_tokens"),
                     positive=("lr", "max_grad_norm", "clip_eps_low", "clip_eps_high",
                               "temperature"),
                     non_negative=("beta",))
        for name, allowed in (("estimator", grpo.ADVANTAGE_KINDS), ("reward", REWARDS),
                              ("kl_in", grpo.KL_PLACEMENTS), ("norm", grpo.NORMALISATIONS),
                              ("trainable", TRAINABLE)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GRPOConfig.{name}: expected one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if self.group_size < 2:
            raise ValueError(f"GRPOConfig.group_size: expected >= 2 (the baseline is the group), "
                             f"got {self.group_size}")

    @classmethod
    def smoke(cls) -> GRPOConfig:
        """A tiny run (3 iterations of 4 prompts x 2 answers) for the --smoke lessons and tests."""
        return cls(n_iterations=3, prompts_per_iteration=4, group_size=2)


# ----------------------------------------------------------------------------- prompts

class PromptTable(NamedTuple):
    """The prompts an iteration draws from (`prompt_table`)."""
    tokens: jax.Array            # [N, P] left-padded <bos> prompt
    attention_mask: jax.Array    # [N, P]
    answer: jax.Array            # [N] int32 index into CAPITALS of each prompt's capital


def prompt_table(tok: Tokenizer, prompts: list[str], prompt_len: int) -> PromptTable:
    """Encoded prompts (left-padded to prompt_len) and the index of each one's capital."""
    enc = encode_prompts(tok, prompts, max_len=prompt_len)
    answer = [CAPITALS.index(CAPITAL[parse_country(p)]) for p in prompts]
    return PromptTable(jnp.asarray(enc.tokens), jnp.asarray(enc.attention_mask),
                       jnp.asarray(answer, dtype=jnp.int32))


# ----------------------------------------------------------------------------- one iteration

class Recipe(NamedTuple):
    """The traced switches of `grpo_iteration` (`recipe_of` builds them from a GRPOConfig)."""
    advantage_kind: jax.Array  # [] int32 index into grpo.ADVANTAGE_KINDS (cfg.estimator)
    use_gold: jax.Array        # [] float32 1: the verifiable reward, 0: the reward model
    beta_in_loss: jax.Array    # [] float32 k3's coefficient in the loss (beta if kl_in = "loss")
    beta_in_reward: jax.Array  # [] float32 summed k1's in the reward (beta if kl_in = "reward")


def recipe_of(cfg: GRPOConfig) -> Recipe:
    """cfg's estimator, reward, kl_in and beta as the traced `Recipe` of `grpo_iteration`."""
    return Recipe(jnp.int32(grpo.ADVANTAGE_KINDS.index(cfg.estimator)),
                  jnp.float32(cfg.reward == "gold"),
                  jnp.float32(cfg.beta if cfg.kl_in == "loss" else 0.0),
                  jnp.float32(cfg.beta if cfg.kl_in == "reward" else 0.0))


class GRPOState(NamedTuple):
    """The policy and its optimizer state, carried from one `grpo_iteration` to the next."""
    params: dict             # the policy's GPT params
    opt_state: tuple         # Adam state
    step: jax.Array          # [] int32 gradient steps taken


class IterationOut(NamedTuple):
    """What one `grpo_iteration` returns besides the new state (for logging and tests)."""
    metrics: dict            # scalar diagnostics, see `grpo_iteration`
    prompt_idx: jax.Array    # [P*G] row of the prompt table each answer answered
    tokens: jax.Array        # [P*G, P_len+N] the rollout (left-padded prompt + response)
    response_mask: jax.Array  # [P*G, P_len+N]
    rewards: jax.Array       # [P*G] the rewards the advantages were computed from (KL included
                             #        when kl_in = "reward")
    advantages: jax.Array    # [P*G]


@functools.cache
def grpo_optimizer(lr: float, max_grad_norm: float, trainable: str) -> optax.GradientTransformation:
    """Adam with global-norm clipping; zero updates for frozen weights.  Cached, so runs with the
    same arguments share one optimizer object (part of the compiled program's static state)."""
    adam = optax.adam(lr)
    if trainable != "all":
        adam = freeze_updates(adam, partial(gpt_labels, trainable=trainable))
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)


def init_grpo_state(policy_params: dict, cfg: GRPOConfig) -> GRPOState:
    """A copy of pi_ref's weights (distinct buffers) and a fresh Adam state."""
    params = jax.device_put(policy_params, may_alias=False)        # distinct buffers, no program
    opt = grpo_optimizer(cfg.lr, cfg.max_grad_norm, cfg.trainable)
    return GRPOState(params, jax.jit(opt.init)(params), jnp.zeros((), jnp.int32))   # one program


def compiled_part(cfg: GRPOConfig) -> GRPOConfig:
    """cfg with the fields the compiled program does not read fixed: those only the Python loop
    reads (n_iterations, seed) and those `Recipe` carries as data (estimator, reward, kl_in,
    beta), so runs differing only in them share one compiled program."""
    return dataclasses.replace(cfg, n_iterations=1, seed=0, beta=0.0, estimator="grpo",
                               reward="model", kl_in=KL_CANONICAL)


def policy_logps(params, tokens, attention_mask, cfg: GRPOConfig, model_cfg: GPTConfig):
    """log pi(y_t | y_<t) at cfg.temperature, aligned with the token [B, T]; 0 on the prompt
    columns t < cfg.prompt_len, whose logits are never computed (the unembedding runs on the
    response positions only; the loss reads nothing else)."""
    P = cfg.prompt_len
    hidden = forward(params, tokens, attention_mask, model_cfg).hidden[:, P - 1:-1]  # [B, N, D]
    logits = jnp.pad(unembed(params, hidden, model_cfg), ((0, 0), (0, 1), (0, 0)))   # [B, N+1, V]
    logps = token_logprobs(logits, tokens[:, P - 1:], cfg.temperature)              # [B, N+1]
    return jnp.pad(logps[:, 1:], ((0, 0), (P, 0)))                                   # [B, T]


def iteration_loss(params, batch: dict, beta_in_loss, cfg: GRPOConfig, model_cfg: GPTConfig):
    """grpo.grpo_loss on the policy's log-probs of the rollout `batch` {tokens, attention_mask,
    response_mask, old_logps, ref_logps, advantages} -> (loss, metrics), with k3 in the loss at
    coefficient beta_in_loss [] (0 when the KL is in the rewards: then L = L_clip)."""
    params = stop_frozen(params, gpt_labels(params, cfg.trainable))
    logps = policy_logps(params, batch["tokens"], batch["attention_mask"], cfg, model_cfg)
    return grpo.grpo_loss(logps, batch["old_logps"], batch["ref_logps"], batch["advantages"],
                          batch["response_mask"], beta=beta_in_loss, kl_in=KL_CANONICAL,
                          clip_eps_low=cfg.clip_eps_low, clip_eps_high=cfg.clip_eps_high,
                          norm=cfg.norm, max_tokens=cfg.max_new_tokens)


def make_rollout(params, ref_params, rm_params, table: PromptTable, verifier: Verifier,
                 recipe: Recipe, key, *, cfg: GRPOConfig, model_cfg: GPTConfig):
    """Steps 1-5: the batch for the update, the prompt rows and the rollout statistics.  The
    reward and the advantage kind are chosen by `recipe` (rm_params None: the verifier's)."""
    k_prompt, k_gen = jax.random.split(key)
    P, G = cfg.prompts_per_iteration, cfg.group_size
    idx = jnp.repeat(draw_prompts(k_prompt, table.tokens.shape[0], P), G)            # [P*G]
    gen = generate(params, table.tokens[idx], table.attention_mask[idx], k_gen, cfg=model_cfg,
                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    tokens, attn = gen.tokens, gen.attention_mask                                     # [B, T]
    mask = gen.response_mask.astype(jnp.float32)                                      # [B, T]
    old_logps = gen.logprobs                                                          # [B, T]
    ref_logps = jax.lax.stop_gradient(policy_logps(ref_params, tokens, attn, cfg, model_cfg))
    correct = verifiable_reward(verifier, tokens, gen.response_mask, table.answer[idx])  # [B]
    if rm_params is None:                                   # a gold-only caller
        scores = correct
    else:   # a traced branch: the reward model's forward pass runs only when it is the reward
        scores = jax.lax.stop_gradient(jax.lax.cond(                                 # [B]
            recipe.use_gold > 0.5, lambda: correct,
            lambda: reward_forward(rm_params, tokens, attn, model_cfg).astype(correct.dtype)))
    rewards = grpo.kl_penalised_rewards(scores, old_logps, ref_logps, mask,
                                        recipe.beta_in_reward)                         # [B]
    grouped = rewards.reshape(P, G)                                                   # [P, G]
    advantages = jnp.stack([grpo.group_advantages(grouped, kind)
                            for kind in grpo.ADVANTAGE_KINDS])[recipe.advantage_kind]  # [P, G]
    advantages = advantages.reshape(P * G)                                            # [B]
    batch = {"tokens": tokens, "attention_mask": attn, "response_mask": mask,
             "old_logps": old_logps, "ref_logps": ref_logps, "advantages": advantages}
    stats = {
        "reward": jnp.mean(scores),
        "reward_std": jnp.mean(jnp.std(scores.reshape(P, G), axis=1)),   # within-group std
        "frac_reward_zero_std": jnp.mean(jnp.all(grouped == grouped[:, :1], axis=1)),
        "gold/accuracy": jnp.mean(correct),
        "kl": jnp.mean(jnp.sum((old_logps - ref_logps) * mask, axis=1)),  # k1 per answer
        "entropy": jnp.mean(-jnp.sum(old_logps * mask, axis=1)),          # -log pi_old(y)
        "completion_length": jnp.mean(jnp.sum(mask, axis=1)),
        "eos_rate": jnp.mean(jnp.any((tokens == EOS_ID) & (mask > 0), axis=1)),
    }
    return batch, idx, rewards, stats


@partial(jax.jit, static_argnames=("cfg", "model_cfg"))
def grpo_iteration(state: GRPOState, ref_params, rm_params, table: PromptTable,
                   verifier: Verifier, recipe: Recipe, key, *, cfg: GRPOConfig,
                   model_cfg: GPTConfig):
    """One whole iteration (steps 1-6 of the module docstring) under one jit.

    table: the training prompts, drawn from inside the jit; verifier: `make_verifier`'s tables
    (always used: the gold accuracy of the rollout is a diagnostic of every run); rm_params:
    the reward model (may be None when recipe.use_gold = 1: a program of its own); recipe:
    `recipe_of(cfg)`, the estimator, reward and KL placement as traced scalars; cfg: pass
    `compiled_part(cfg)`; key: this iteration's key.  Returns (state, IterationOut).  metrics: reward (mean score of the
    answers, before any KL), reward_std (mean within-group std), frac_reward_zero_std (groups
    whose rewards are all equal: zero advantage, no gradient), gold/accuracy, kl (mean summed
    k1 of the answers), entropy, completion_length, eos_rate, and the update's loss,
    policy/loss, policy/clipfrac, policy/approx_kl, kl_k3, grad_norm (means over the epochs).
    """
    batch, idx, rewards, stats = make_rollout(state.params, ref_params, rm_params, table,
                                              verifier, recipe, key, cfg=cfg,
                                              model_cfg=model_cfg)
    opt = grpo_optimizer(cfg.lr, cfg.max_grad_norm, cfg.trainable)
    loss_fn = partial(iteration_loss, batch=batch, beta_in_loss=recipe.beta_in_loss, cfg=cfg,
                      model_cfg=model_cfg)

    def epoch(state: GRPOState, _):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return GRPOState(params, opt_state, state.step + 1), {
            **metrics, "grad_norm": optax.tree.norm(grads)}

    state, upd = jax.lax.scan(epoch, state, None, length=cfg.n_epochs)
    metrics = {**stats, **jax.tree_util.tree_map(jnp.mean, upd)}
    return state, IterationOut(metrics, idx, batch["tokens"], batch["response_mask"], rewards,
                               batch["advantages"])


# ----------------------------------------------------------------------------- the Python loop

SHOWN = ("reward", "gold/accuracy", "kl", "policy/clipfrac")


def train_grpo(policy_params: dict, ref_params: dict, rm_params: dict | None,
               model_cfg: GPTConfig, tok: Tokenizer, cfg: GRPOConfig,
               prompts: list[str] | None = None, quiet: bool = False):
    """cfg.n_iterations jitted iterations on the capitals prompts (default: the train split)
    -> (policy params, history) with history[name] = [n_iterations] numpy array of every metric
    of `grpo_iteration` (reward, gold/accuracy, kl, policy/clipfrac, ...), plus "clipfrac"
    (= policy/clipfrac) and "time/iteration" (seconds, wall clock).  Every recipe of the same
    shapes shares one compiled program when rm_params is given (also with cfg.reward = "gold")."""
    if cfg.reward == "model" and rm_params is None:
        raise ValueError("train_grpo: cfg.reward='model' needs the reward model's params")
    table = prompt_table(tok, list(prompts or split_prompts("train")), cfg.prompt_len)
    verifier = make_verifier(tok, model_cfg.vocab_size)
    state = init_grpo_state(policy_params, cfg)
    recipe = recipe_of(cfg)
    history, progress = {}, Progress(f"grpo:{cfg.estimator}", cfg.n_iterations, quiet=quiet)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.n_iterations)
    for i, key in enumerate(keys, 1):
        t0 = time.perf_counter()
        state, out = grpo_iteration(state, ref_params, rm_params, table, verifier, recipe, key,
                                    cfg=compiled_part(cfg), model_cfg=model_cfg)
        metrics = {k: float(v) for k, v in jax.device_get(out.metrics).items()}
        metrics["clipfrac"] = metrics["policy/clipfrac"]
        metrics["time/iteration"] = time.perf_counter() - t0
        for name, value in metrics.items():
            history.setdefault(name, []).append(value)
        progress(i, {k: metrics[k] for k in SHOWN})
    return state.params, {k: np.array(v) for k, v in history.items()}
