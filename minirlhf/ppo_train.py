"""Stage 05: RLHF with PPO on the transformer (Ziegler et al. 2019; Stiennon et al. 2020;
Ouyang et al. 2022).  Two copies of the SFT model start identical: the frozen reference pi_ref
and the policy pi_theta, trained to

    max_theta  E_{x ~ D, y ~ pi_theta(.|x)} [ r_phi(x, y) ]  -  beta KL(pi_theta(.|x) || pi_ref(.|x))

(InstructGPT eq. 2 without the pretraining term).  ONE PPO ITERATION IS ONE JITTED FUNCTION,
`ppo_iteration`, called once per iteration from Python:

  1. rollout   B prompts drawn inside the jit; y ~ pi_theta with the KV-cache sampler;
  2. scoring   log pi_old (a forward pass; equals the sampler's log-probs, checked every
               iteration as rollout/logprob_mismatch), log pi_ref and r_phi (both under
               stop_gradient: never differentiated), values V(s_t);
  3. shaping   R_t = -beta kl_t, plus r_phi(x, y) on the last token (ppo.shape_rewards);
  4. GAE       advantages and returns (ppo.gae), advantages optionally whitened (ppo.whiten);
  5. update    n_epochs x n_minibatches clipped-surrogate steps under lax.scan (ppo.ppo_update);
  6. KL ctl    beta fixed, or Ziegler et al.'s adaptive controller (ppo.kl_controller_update).

The gold reward r* never enters training: `train_ppo` decodes each rollout outside the jit and
scores it with r* for the diagnostics only.

Policy and value function (`PPOConfig.value_model`):
* "shared" (default): the value head V(s_t) = w . h_theta(s_t) + b sits on the POLICY's
  backbone; loss = L_clip + vf_coef * L_V - ent_coef * H.  One forward/backward per minibatch,
  half the compute of the alternative, which matters on a 2-core CPU; a small vf_coef keeps the
  critic's regression from dragging the policy's features around.
* "separate": InstructGPT's choice, a second transformer initialised from the reward model
  (backbone and head), so V starts as r_phi of the prefix.  Twice the compute per step.
"shared" is the default because the time budget (lesson 05: three PPO runs in ~3 CPU
minutes) is compute-bound, and it already trains well: see lesson 05's numbers.

Alignment: values[:, t] = V(tokens[:, <t]), the value of the state in which token t is chosen
(read from the hidden state of column t - 1), like logps[:, t] (the README's conventions).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from tokenizers import Tokenizer

from minirlhf import ppo
from minirlhf.checkpoint import ensure_checkpoint, save_checkpoint
from minirlhf.config import check_fields
from minirlhf.evaluation import MAX_NEW_TOKENS, PROMPT_LEN
from minirlhf.model import (
    GPTConfig,
    forward,
    init_scalar_head,
    scalar_head,
    token_logprobs,
)
from minirlhf.paths import artifact_path, file_digest, recipe
from minirlhf.pretrain import corpus_arrays, ensure_tokenizer, ptx_loss, with_ptx_rows
from minirlhf.reward import ensure_reward_model, reward_forward, reward_model_path
from minirlhf.sampling import generate
from minirlhf.sft import ensure_sft_model, sft_model_path
from minirlhf.tokenizer import decode_responses, encode_prompts
from minirlhf.training import (
    TRAINABLE,
    Progress,
    check_finite,
    freeze_updates,
    gpt_labels,
    stop_frozen,
)
from minirlhf.worlds.capitals import gold_correct, gold_rewards, parse_country, split_prompts

VALUE_MODELS = ("shared", "separate")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """One PPO run on the transformer (hashable: it is a static argument of the jit)."""

    n_iterations: int = 30
    """PPO iterations (rollout + update), each one call of the jitted `ppo_iteration`."""
    batch_size: int = 64
    """Rollouts per iteration (B): prompts drawn from the training prompts, each about equally
    often (a shuffled tiling of all of them)."""
    update: ppo.PPOUpdateConfig = ppo.PPOUpdateConfig(n_epochs=2, n_minibatches=4)
    """Epochs x minibatches of gradient steps per rollout batch (B must divide evenly)."""
    lr: float = 1e-4
    """Adam step size (constant) for the policy and the value function."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip before Adam."""
    kl: ppo.KLControllerConfig = ppo.KLControllerConfig(init_beta=0.5, adaptive=False,
                                                        target=2.0, horizon=2000.0)
    """beta of the KL penalty: fixed (adaptive=False, the default) or Ziegler et al.'s
    controller steering the per-response KL to `target` nats."""
    kl_kind: str = "k1"
    """KL estimator of the per-token penalty (Schulman 2020): "k1" = log pi_old - log pi_ref
    (default: unbiased, and its sum over a response is exactly the sequence log-ratio, so the
    first token's return is r_phi - beta log(pi/pi_ref), the objective itself); "k2" / "k3":
    non-negative per token, lower variance (k2 biased)."""
    clip_eps: float = 0.2
    """epsilon of the clipped surrogate (Schulman et al. 2017 eq. 7)."""
    clip_eps_v: float | None = 0.2
    """Clip range of the value update around V_old; None = unclipped value loss."""
    vf_coef: float = 0.1
    """Weight of the value loss in the total loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus (- ent_coef * mean token entropy); 0 = off (the KL penalty
    already keeps the policy from collapsing)."""
    gamma: float = 1.0
    """Discount (1: the response is one episode, the reward arrives at its end)."""
    lam: float = 0.95
    """GAE lambda (Schulman et al. 2016)."""
    whiten_advantages: bool = True
    """Normalise the advantages to mean 0, std 1 over the batch's response tokens."""
    temperature: float = 1.0
    """Sampling temperature; every log-prob (old, new, ref) is taken at the same temperature."""
    value_model: str = "shared"
    """"shared": value head on the policy backbone; "separate": a value transformer initialised
    from the reward model (InstructGPT).  See the module docstring."""
    prompt_len: int = PROMPT_LEN
    """Width P of the left-padded prompts."""
    max_new_tokens: int = MAX_NEW_TOKENS
    """Response budget N; a response without <eos> after N tokens is cut (and scored as such)."""
    ptx_coef: float = 0.0
    """gamma of InstructGPT's PPO-ptx (Ouyang et al. 2022, eq. 2): each minibatch also takes
    gamma x the next-token loss on as many pretraining documents, which keeps what the base model
    knew about prompts PPO never sees; 0 = plain PPO (the default).  Without it PPO lowers
    held-out accuracy (the "alignment tax"; benchmarks/heldout_seeds.py measures both)."""
    trainable: str = "all"
    """Which policy weights PPO updates (training.TRAINABLE): "all" (full fine-tuning) or
    "final_norm" (only ln_f, lr ~3e-2; lesson 09).  The value function always trains in full."""
    seed: int = 0
    """Seeds the value head, every rollout and every minibatch order."""

    def __post_init__(self):
        check_fields(self, counts=("n_iterations", "batch_size", "prompt_len", "max_new_tokens"),
                     positive=("lr", "max_grad_norm", "temperature"), open_unit=("clip_eps",),
                     non_negative=("vf_coef", "ent_coef", "ptx_coef"), unit=("gamma", "lam"),
                     naturals=("seed",))
        # clip_eps in (0, 1): at 1 or more the clip range [1 - eps, 1 + eps] reaches rho <= 0
        if self.clip_eps_v is not None:
            check_fields(self, positive=("clip_eps_v",))
        if self.value_model not in VALUE_MODELS:
            raise ValueError(f"PPOConfig.value_model: expected one of {VALUE_MODELS}, got {self.value_model!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"PPOConfig.trainable: expected one of {TRAINABLE}, got {self.trainable!r}")
        if self.kl_kind not in ppo.KL_ESTIMATORS:
            raise ValueError(f"PPOConfig.kl_kind: expected one of {list(ppo.KL_ESTIMATORS)}, got {self.kl_kind!r}")
        if self.batch_size % self.update.n_minibatches:
            raise ValueError(f"PPOConfig: batch_size={self.batch_size} is not divisible by "
                             f"update.n_minibatches={self.update.n_minibatches}")

    @classmethod
    def smoke(cls) -> PPOConfig:
        """A tiny run (3 iterations of 16 rollouts) for the --smoke lessons and the tests."""
        return cls(n_iterations=3, batch_size=16, update=ppo.PPOUpdateConfig(1, 2), lr=1e-4)


class PPOState(NamedTuple):
    train_state: TrainState        # params {"policy": gpt, "value": {"head"[, "backbone"]}} + Adam
    kl_ctl: ppo.KLControllerState  # current beta


class IterationOut(NamedTuple):
    metrics: dict              # scalar diagnostics (TRL names), see `ppo_iteration`
    prompt_idx: jax.Array      # [B] row of the prompt table each rollout answered
    tokens: jax.Array          # [B, P+N] the rollout (left-padded prompt + response)
    response_mask: jax.Array   # [B, P+N]


# ----------------------------------------------------------------------------- models

def reward_model_score(rm_params, tokens, attention_mask, response_mask, model_cfg: GPTConfig):
    """r_phi(x, y) = w . h_last + b of the reward model (reward.py), read at the last real token
    (the eos, or the last token of a cut response). [B, T] arrays -> [B]."""
    del response_mask
    return reward_forward(rm_params, tokens, attention_mask, model_cfg)


RewardFn = Callable  # (rm_params, tokens, attention_mask, response_mask, model_cfg) -> [B]


def init_ppo_params(policy_params: dict, rm_params: dict, model_cfg: GPTConfig, cfg: PPOConfig,
                    key: jax.Array) -> dict:
    """{"policy": a copy of pi_ref's weights, "value": {"head"} (shared: fresh head on the policy
    backbone) or {"backbone", "head"} (separate: the reward model's backbone and head)}."""
    if cfg.value_model == "separate":
        value = {"backbone": rm_params["backbone"], "head": rm_params["head"]}
    else:
        value = {"head": init_scalar_head(key, model_cfg)}
    copy = lambda tree: jax.device_put(tree, may_alias=False)   # distinct buffers from pi_ref / RM
    return {"policy": copy(policy_params), "value": copy(value)}


def ppo_labels(params: dict, trainable: str) -> dict:
    """"train"/"frozen" for each leaf of {"policy", "value"}: the policy's per `trainable`
    (training.gpt_labels), the value function's always "train"."""
    return {"policy": gpt_labels(params["policy"], trainable),
            "value": jax.tree_util.tree_map(lambda _: "train", params["value"])}


@functools.cache
def ppo_optimizer(lr: float, max_grad_norm: float, trainable: str = "all") -> optax.GradientTransformation:
    """Adam with global-norm clipping (zero updates for frozen policy weights), cached: runs with
    the same arguments share one optimizer object, which is part of the TrainState's static
    structure (so they share one compilation)."""
    adam = optax.adam(lr)
    if trainable != "all":
        adam = freeze_updates(adam, partial(ppo_labels, trainable=trainable))
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)


def init_ppo_state(policy_params, rm_params, model_cfg: GPTConfig, cfg: PPOConfig, key) -> PPOState:
    """PPOState at iteration 0: `init_ppo_params`, fresh Adam state, beta = cfg.kl.init_beta."""
    params = init_ppo_params(policy_params, rm_params, model_cfg, cfg, key)
    tx = ppo_optimizer(cfg.lr, cfg.max_grad_norm, cfg.trainable)
    ts = TrainState(step=0, apply_fn=None, params=params, tx=tx,
                    opt_state=jax.jit(tx.init)(params))   # one program for the whole Adam state
    return PPOState(ts, ppo.kl_controller_init(cfg.kl))


def compiled_part(cfg: PPOConfig) -> PPOConfig:
    """cfg with the fields that only the Python loop reads (n_iterations, seed, kl.init_beta: beta
    lives in PPOState) set to fixed values, so that runs differing only in them (lesson 05's beta
    sweep) hit the same compiled `ppo_iteration`."""
    return dataclasses.replace(cfg, n_iterations=1, seed=0,
                               kl=dataclasses.replace(cfg.kl, init_beta=1.0))


def state_values(head: dict, hidden):
    """values[:, t] = V(s_t) = w . h[:, t-1] + b, the value of the state in which token t is chosen;
    values[:, 0] = 0 (never an action).  hidden [B, T, D] -> [B, T]."""
    v = scalar_head(head, hidden)                                    # [B, T]: V after token t
    return jnp.pad(v[:, :-1], ((0, 0), (1, 0)))                      # [B, T]: V before token t


def policy_and_values(params: dict, tokens, attention_mask, cfg: PPOConfig, model_cfg: GPTConfig):
    """One pass of the policy (and of the value backbone when separate).
    tokens, attention_mask [B, T] -> (logps [B, T] at cfg.temperature, values [B, T], logits [B, T, V])."""
    out = forward(params["policy"], tokens, attention_mask, model_cfg)
    logps = token_logprobs(out.logits, tokens, cfg.temperature)      # [B, T]
    hidden = out.hidden
    if "backbone" in params["value"]:
        hidden = forward(params["value"]["backbone"], tokens, attention_mask, model_cfg).hidden
    return logps, state_values(params["value"]["head"], hidden), out.logits


# ----------------------------------------------------------------------------- loss

def ppo_loss(params: dict, mb: dict, cfg: PPOConfig, model_cfg: GPTConfig):
    """L = L_clip + vf_coef L_V - ent_coef H   (Schulman et al. 2017 eq. 9, as a loss)
         [+ ptx_coef L_ptx, the next-token loss on pretraining rows (Ouyang et al. 2022 eq. 2)].

    L_clip: ppo.policy_loss (eq. 7); L_V: ppo.value_loss (clipped); H: mean token entropy of
    pi_theta on the response tokens.  mb: {tokens, attention_mask, response_mask, old_logps,
    old_values, advantages, returns}, each [b, T].  Returns (loss, metrics).
    """
    params = stop_frozen(params, ppo_labels(params, cfg.trainable))  # "final_norm": only ln_f learns
    mask = mb["response_mask"]
    new_logps, new_values, logits = policy_and_values(params, mb["tokens"], mb["attention_mask"],
                                                      cfg, model_cfg)
    pg_loss, pg_metrics = ppo.policy_loss(new_logps, mb["old_logps"], mb["advantages"], mask,
                                          cfg.clip_eps)                                   # eq. 7
    v_loss, v_metrics = ppo.value_loss(new_values, mb["old_values"], mb["returns"], mask,
                                       cfg.clip_eps_v)
    token_entropy = ppo.entropy_from_logits(logits[:, :-1] / cfg.temperature)          # [b, T-1]
    entropy = ppo.masked_mean(jnp.pad(token_entropy, ((0, 0), (1, 0))), mask)           # aligned
    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy                      # eq. 9
    lm = ptx_loss(params["policy"], mb, model_cfg) if cfg.ptx_coef > 0 else jnp.zeros(())
    loss = loss + cfg.ptx_coef * lm                                  # PPO-ptx (Ouyang et al. eq. 2)
    ratio = ppo.masked_mean(jnp.exp(jnp.where(mask > 0, new_logps - mb["old_logps"], 0.0)), mask)
    return loss, {"loss/policy": pg_loss, "loss/value": v_loss, "loss/total": loss, "loss/ptx": lm,
                  "policy/approxkl": pg_metrics["policy/approxkl"],
                  "policy/clipfrac": pg_metrics["policy/clipfrac"],
                  "policy/entropy": entropy, "val/ratio": ratio,
                  "val/clipfrac": v_metrics["value/clipfrac"]}


# ----------------------------------------------------------------------------- rollout

def make_rollout(params, ref_params, rm_params, prompt_tokens, prompt_mask, beta, key, *,
                 cfg: PPOConfig, model_cfg: GPTConfig, reward_fn: RewardFn = reward_model_score):
    """Steps 1-4: sample, score, shape, GAE -> (batch for ppo_update, rollout statistics).

    prompt_tokens, prompt_mask: [B, P] left-padded; beta: [] KL coefficient.
    Everything computed here is data for the update: pi_theta's quantities are taken at the
    CURRENT params (old = before this iteration's update) and, like pi_ref's log-probs and the
    reward, under stop_gradient.
    """
    gen = generate(params["policy"], prompt_tokens, prompt_mask, key, cfg=model_cfg,
                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    tokens, attn = gen.tokens, gen.attention_mask                                   # [B, T]
    mask = gen.response_mask.astype(jnp.float32)                                    # [B, T]
    old_logps, old_values, _ = jax.lax.stop_gradient(
        policy_and_values(params, tokens, attn, cfg, model_cfg))                    # [B, T] each
    ref_logits = forward(jax.lax.stop_gradient(ref_params), tokens, attn, model_cfg).logits
    ref_logps = jax.lax.stop_gradient(token_logprobs(ref_logits, tokens, cfg.temperature))
    scores = jax.lax.stop_gradient(reward_fn(rm_params, tokens, attn, mask, model_cfg))   # [B]
    logratio = (old_logps - ref_logps) * mask                                        # [B, T]
    rewards = ppo.shape_rewards(scores, logratio, mask, beta, cfg.kl_kind)          # [B, T]
    advantages, returns = ppo.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = ppo.whiten(advantages, mask)
    batch = {"tokens": tokens, "attention_mask": attn, "response_mask": mask,
             "old_logps": old_logps, "old_values": old_values,
             "advantages": advantages, "returns": returns}
    seq_kl = jnp.sum(logratio, axis=1)                                               # [B] k1 sum
    non_score = jnp.sum(rewards, axis=1) - scores                                   # [B] -beta sum kl_t
    stats = {
        "objective/kl": jnp.mean(seq_kl),                        # E[log pi_theta(y) - log pi_ref(y)]
        "objective/kl_coef": jnp.asarray(beta, jnp.float32),
        "objective/entropy": jnp.mean(-jnp.sum(old_logps * mask, axis=1)),  # E[-log pi_theta(y)]
        "objective/scores": jnp.mean(scores),
        "objective/non_score_reward": jnp.mean(non_score),
        "objective/rlhf_reward": jnp.mean(scores + non_score),
        "val/explained_variance": ppo.explained_variance(old_values, returns, mask),
        "val/mean": ppo.masked_mean(old_values, mask),
        "rollout/response_length": jnp.mean(jnp.sum(mask, axis=1)),
        "rollout/logprob_mismatch": jnp.max(jnp.abs(old_logps - gen.logprobs) * mask),
    }
    return batch, stats


def draw_prompts(key, n_prompts: int, batch_size: int):
    """[B] prompt rows: a shuffled tiling of 0..n_prompts-1 (each prompt about B / n times)."""
    reps = -(-batch_size // n_prompts)
    return (jax.random.permutation(key, reps * n_prompts) % n_prompts)[:batch_size]


@partial(jax.jit, static_argnames=("cfg", "model_cfg", "reward_fn"))
def ppo_iteration(state: PPOState, ref_params, rm_params, prompt_tokens, prompt_mask, key, ptx=None, *,
                  cfg: PPOConfig, model_cfg: GPTConfig, reward_fn: RewardFn = reward_model_score):
    """One whole PPO iteration (steps 1-6 of the module docstring) under one jit.

    prompt_tokens, prompt_mask: [N, P] the table of training prompts (left-padded); the B
    prompts of this iteration are drawn from it inside the jit.  key: this iteration's key.
    ptx: with cfg.ptx_coef > 0, the pretraining table {tokens, attention_mask, loss_mask} [M, S];
    B of its rows are drawn per iteration and minibatched alongside the rollouts.
    Returns (state, IterationOut).  metrics: objective/{kl, kl_coef, entropy, scores,
    non_score_reward, rlhf_reward}, policy/{approxkl, clipfrac, entropy}, loss/{policy, value,
    total, ptx}, val/{ratio, clipfrac, explained_variance, mean}, rollout/{response_length,
    logprob_mismatch}; update metrics are averaged over the epochs x minibatches.
    """
    k_prompt, k_gen, k_update = jax.random.split(key, 3)
    idx = draw_prompts(k_prompt, prompt_tokens.shape[0], cfg.batch_size)             # [B]
    params = state.train_state.params
    batch, stats = make_rollout(params, ref_params, rm_params, prompt_tokens[idx], prompt_mask[idx],
                                state.kl_ctl.beta, k_gen, cfg=cfg, model_cfg=model_cfg,
                                reward_fn=reward_fn)
    if cfg.ptx_coef > 0:
        if ptx is None:
            raise ValueError("ppo_iteration: cfg.ptx_coef > 0 needs the pretraining table `ptx` "
                             "(pretrain.corpus_arrays(tok)); pass it, or set ptx_coef=0")
        rows = jax.random.randint(jax.random.fold_in(k_prompt, 1), (cfg.batch_size,), 0,
                                  ptx["tokens"].shape[0])                               # [B]
        batch = with_ptx_rows(batch, ptx, rows)
    loss_fn = partial(ppo_loss, cfg=cfg, model_cfg=model_cfg)
    train_state, upd = ppo.ppo_update(state.train_state, batch, k_update, loss_fn, cfg.update)
    kl_ctl = ppo.kl_controller_update(state.kl_ctl, stats["objective/kl"], cfg.batch_size, cfg.kl)
    metrics = {**stats, **jax.tree_util.tree_map(jnp.mean, upd)}
    return PPOState(train_state, kl_ctl), IterationOut(metrics, idx, batch["tokens"],
                                                       batch["response_mask"])


# ----------------------------------------------------------------------------- the Python loop

def rollout_gold(tok: Tokenizer, countries: list[str], out: IterationOut) -> dict:
    """Gold diagnostics of one rollout, from decoded text (outside the jit; never trained on)."""
    dec = decode_responses(tok, out.tokens, out.response_mask)
    rows = [countries[i] for i in np.asarray(out.prompt_idx)]
    return {"gold/reward": float(gold_rewards(rows, dec.texts, dec.ended).mean()),
            "gold/accuracy": float(gold_correct(rows, dec.texts).mean()),
            "gold/eos_rate": float(dec.ended.mean())}


SHOWN = ("objective/scores", "gold/reward", "gold/accuracy", "objective/kl", "policy/clipfrac")


def train_ppo(policy_params: dict, ref_params: dict, rm_params: dict, model_cfg: GPTConfig,
              tok: Tokenizer, cfg: PPOConfig, prompts: list[str] | None = None, quiet: bool = False):
    """Run cfg.n_iterations jitted PPO iterations on the capitals prompts (default: the train
    split) -> (PPOState, history) with history[name] = [n_iterations] numpy array of every
    metric of `ppo_iteration`, the gold diagnostics of each rollout (gold/reward,
    gold/accuracy, gold/eos_rate) and "time/iteration" (seconds, wall clock)."""
    prompts = list(prompts or split_prompts("train"))
    enc = encode_prompts(tok, prompts, max_len=cfg.prompt_len)
    countries = [parse_country(p) for p in prompts]
    ptx = corpus_arrays(tok) if cfg.ptx_coef > 0 else None   # the base model's pretraining docs
    k_init, k_run = jax.random.split(jax.random.PRNGKey(cfg.seed))
    state = init_ppo_state(policy_params, rm_params, model_cfg, cfg, k_init)
    history, progress = {}, Progress("ppo", cfg.n_iterations, quiet=quiet)
    for i, key in enumerate(jax.random.split(k_run, cfg.n_iterations), 1):
        t0 = time.perf_counter()
        state, out = ppo_iteration(state, ref_params, rm_params, enc.tokens, enc.attention_mask, key,
                                   ptx, cfg=compiled_part(cfg), model_cfg=model_cfg)
        metrics = {k: float(v) for k, v in jax.device_get(out.metrics).items()}
        check_finite("ppo", i, metrics["loss/total"])
        metrics.update(rollout_gold(tok, countries, out))
        metrics["time/iteration"] = time.perf_counter() - t0
        for name, value in metrics.items():
            history.setdefault(name, []).append(value)
        progress(i, {k: metrics[k] for k in SHOWN})
    return state, {k: np.array(v) for k, v in history.items()}


# ----------------------------------------------------------------------------- the stage

def ppo_recipe(smoke: bool, cfg: PPOConfig) -> dict:
    """What makes a PPO policy: this config, pi_ref (the SFT model of cfg.seed) and the reward
    model of the same seed (paths.recipe)."""
    return recipe("ppo", cfg, sft=file_digest(sft_model_path(smoke, cfg.seed)),
                  reward=file_digest(reward_model_path(smoke, cfg.seed)))


def save_ppo_policy(smoke: bool, params: dict, model_cfg: GPTConfig, meta: dict, cfg: PPOConfig):
    """Write the policy's GPT params of a run of `cfg` to runs[/smoke]/[seed{seed}/]ppo.ckpt, with
    its recipe (the value function is dropped)."""
    return save_checkpoint(artifact_path(smoke, "ppo.ckpt", cfg.seed), params, model_cfg,
                           {"stage": "ppo", **meta, "made_by": ppo_recipe(smoke, cfg)})


def ensure_ppo_policy(smoke: bool, seed: int = 0):
    """The PPO policy of `seed` from runs[/smoke]/[seed{seed}/]ppo.ckpt, trained with the default
    PPOConfig (lesson 05's main run) when missing or made by another recipe -> (params, GPTConfig)."""
    cfg = dataclasses.replace(PPOConfig.smoke() if smoke else PPOConfig(), seed=seed)
    tok, (sft_params, model_cfg) = ensure_tokenizer(smoke), ensure_sft_model(smoke, seed)
    rm_params, _ = ensure_reward_model(smoke, seed)

    def build():
        state, history = train_ppo(sft_params, sft_params, rm_params, model_cfg, tok, cfg)
        return (state.train_state.params["policy"], model_cfg,
                {"stage": "ppo", "final_kl": float(history["objective/kl"][-1])})

    params, model_cfg, _ = ensure_checkpoint(artifact_path(smoke, "ppo.ckpt", seed),
                                             ppo_recipe(smoke, cfg), build, "ppo")
    return params, model_cfg
