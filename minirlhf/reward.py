"""Stage 04: the Bradley-Terry reward model r_phi(x, y).

The reward model is the SFT transformer with a linear head on the final hidden state of the
LAST non-pad token (Ziegler et al. 2019; Stiennon et al. 2020 sec. 3.4; Ouyang et al. 2022):

    r_phi(x, y) = w . h_phi(x, y)_last + b              params {"backbone": gpt, "head": {w, b}}

fitted by maximum likelihood on rater comparisons (x, y_w, y_l) (InstructGPT eq. 1):

    L(phi) = -E_{(x, y_w, y_l) ~ D} [ log sigmoid(r_phi(x, y_w) - r_phi(x, y_l)) ],

with the comparisons among one group of K responses to a prompt as ONE batch element, each
response scored once (`bradley_terry.grouped_bradley_terry_loss`; InstructGPT sec. 3.5).

Two regimes: "head" (backbone frozen: stop_gradient in the loss AND the optimizer masked, so the
backbone is bit-for-bit the SFT model) and "full" (backbone and head fine-tuned).

Implementation details (each pinned by tests/test_reward.py):
* The reward is read at the last non-pad token (`model.reward_from_hidden`): the eos of a finished
  response, the last sampled token of a truncated one (see reward_data.encode_responses).  Left-,
  right- or both-side padding give the same reward, so `score` works on PPO's generated batches.
* One forward pass scores every response of a batch of groups ([G * K] rows, then [G, K]); a
  file of plain pairs is groups of K = 2 (reward_data.encode_groups).
* After training the reward is NORMALISED (`fold_normalisation`): shift and scale so the rewards of
  fresh SFT samples on the train prompts have mean 0 and std 1, folded into the head
  (w <- w / s, b <- (b - m) / s).  BT identifies r only up to a constant (and its scale is set by
  the rater's tau); fixing both makes PPO's KL coefficient beta mean the same thing for any RM.
  Orderings are unchanged; sigmoid(r_w - r_l) of the normalised reward is no longer the fitted
  BT probability (use the raw model, before folding, for calibration).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tokenizers import Tokenizer

from minirlhf.bradley_terry import bradley_terry_loss, grouped_bradley_terry_loss
from minirlhf.checkpoint import ensure_checkpoint, save_checkpoint
from minirlhf.config import check_fields
from minirlhf.evaluation import map_concurrently, sample_answers
from minirlhf.model import GPTConfig, forward, init_scalar_head, reward_from_hidden
from minirlhf.paths import artifact_path, file_digest, recipe
from minirlhf.pretrain import SEQ_LEN, ensure_tokenizer
from minirlhf.reward_data import (
    PROMPT_SPLIT,
    GroupedPreferences,
    PreferenceData,
    encode_responses,
    ensure_preferences,
    load_groups,
    load_preference_data,
    preference_paths,
)
from minirlhf.sft import ensure_sft_model, sft_model_path
from minirlhf.tokenizer import unique_rows
from minirlhf.training import (
    Progress,
    batches,
    check_finite,
    freeze_updates,
    init_train_state,
    make_optimizer,
    make_train_step,
)
from minirlhf.worlds.capitals import (
    CAPITAL,
    FACTS,
    SPLITS,
    canonical_answer,
    is_correct,
    make_prompt,
    parse_country,
)

REGIMES = ("head", "full")


def select_regime(metrics: dict) -> str:
    """The regime with the lower Bradley-Terry loss on the validation pairs ("valid": fresh pairs on
    the train prompts).  Only the rater's labels enter, as in real RLHF: neither the gold reward nor
    the held-out / OOD pairs (which evaluate the kept model) are used to choose it.
    metrics: {regime: {split: {name: value}}}."""
    return min(REGIMES, key=lambda g: metrics[g]["valid"]["loss"])


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Reward-model training (both regimes) and normalisation."""

    steps_head: int = 100
    """Optimizer steps of the "head" regime (cheap: no backward pass through the backbone)."""
    steps_full: int = 300
    """Optimizer steps of the "full" regime (8 groups per step: ~3.75 epochs of lesson 04's 640
    groups)."""
    batch_responses: int = 64
    """Responses scored per step: batch_responses // K groups (at least 1) of K responses each
    (lesson 04: 8 groups of 8 responses; a file of plain pairs: 32 pairs)."""
    lr_head: float = 1e-2
    """Peak AdamW learning rate of the "head" regime (a linear probe tolerates a large one)."""
    lr_full: float = 1e-3
    """Peak AdamW learning rate of the "full" regime (backbone + head)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (never applied to a frozen backbone)."""
    eval_every: int = 100
    """Validation loss/accuracy is measured every eval_every steps (training curves)."""
    n_reference_per_prompt: int = 8
    """SFT samples per train prompt whose rewards define the normalisation (mean 0, std 1)."""
    seed: int = 0
    """Seeds the head init, the batch order and the reference samples."""

    def __post_init__(self):
        check_fields(self, counts=("steps_head", "steps_full", "batch_responses", "eval_every",
                                   "n_reference_per_prompt"),
                     positive=("lr_head", "lr_full"), non_negative=("weight_decay",),
                     naturals=("seed",))

    @classmethod
    def smoke(cls) -> RewardConfig:
        """A tiny run (6 steps per regime, 16 responses per batch) for the --smoke lessons and the tests."""
        return cls(steps_head=6, steps_full=6, batch_responses=16, eval_every=3, n_reference_per_prompt=2)

    def steps(self, regime: str) -> int:
        """Optimizer steps of `regime`."""
        return self.steps_head if regime == "head" else self.steps_full


# ----------------------------------------------------------------------------- model

def init_reward_model(key: jax.Array, backbone: dict, cfg: GPTConfig) -> dict:
    """{"backbone": the (SFT) GPT params, "head": a fresh scalar head (w ~ N(0, 0.02), b = 0)}."""
    return {"backbone": backbone, "head": init_scalar_head(key, cfg)}


def reward_forward(rm_params: dict, tokens, attention_mask, cfg: GPTConfig,
                   freeze_backbone: bool = False) -> jax.Array:
    """r_phi(x, y) = w . h_last + b for every row.  tokens, attention_mask: [B, T] (any padding)
    -> [B] float32.  freeze_backbone: stop_gradient on the backbone (its gradients are exactly 0)."""
    backbone = rm_params["backbone"]
    if freeze_backbone:
        backbone = jax.lax.stop_gradient(backbone)
    hidden = forward(backbone, tokens, attention_mask, cfg).hidden           # [B, T, D]
    return reward_from_hidden(rm_params["head"], hidden, attention_mask)     # [B]


@partial(jax.jit, static_argnames=("cfg",))
def score(rm_params: dict, tokens, attention_mask, cfg: GPTConfig) -> jax.Array:
    """Jitted r_phi for scoring (PPO): tokens, attention_mask [B, T] LEFT-padded generations (or
    right-padded batches) -> [B].  Read at the last real token of each row."""
    return reward_forward(rm_params, tokens, attention_mask, cfg)


def score_batched(rm_params: dict, tokens, attention_mask, cfg: GPTConfig, chunk: int = 128) -> np.ndarray:
    """`score` over many rows in chunks of `chunk` rows, each padded to the full chunk with
    all-pad rows (one compiled shape for every call), the chunks run concurrently
    (`evaluation.map_concurrently`).  tokens, attention_mask: [N, T] -> [N]."""
    tokens, attention_mask = np.asarray(tokens), np.asarray(attention_mask)

    def one(i):
        t, m = tokens[i:i + chunk], attention_mask[i:i + chunk]
        pad = ((0, chunk - len(t)), (0, 0))
        return score(rm_params, np.pad(t, pad), np.pad(m, pad), cfg)

    out = map_concurrently(one, range(0, len(tokens), chunk))             # each [chunk]
    return np.concatenate(out)[:len(tokens)] if out else np.zeros((0,), np.float32)


# ----------------------------------------------------------------------------- loss and training

def reward_loss(rm_params: dict, batch: dict, cfg: GPTConfig, freeze_backbone: bool):
    """Bradley-Terry NLL of a batch of groups (InstructGPT eq. 1, K-wise):

        L = mean_g  -1/|C_g| sum_{i, j} W_gij log sigmoid(r_phi(x_g, y_gi) - r_phi(x_g, y_gj))

    batch: {tokens, attention_mask: [G, K, T]; wins: [G, K, K]} (`group_arrays`).  All G * K
    responses go through ONE forward pass, each scored once however many comparisons it is in.
    Returns (loss, metrics) with TRL names (see grouped_bradley_terry_loss).
    """
    G, K, T = batch["tokens"].shape
    rewards = reward_forward(rm_params, batch["tokens"].reshape(G * K, T),
                             batch["attention_mask"].reshape(G * K, T), cfg, freeze_backbone)   # [G * K]
    return grouped_bradley_terry_loss(rewards.reshape(G, K), batch["wins"])                      # eq. 1


def reward_optimizer(regime: str, rcfg: RewardConfig) -> optax.GradientTransformation:
    """AdamW (make_optimizer); in the "head" regime the backbone's updates are set to zero (so no
    weight decay or Adam moment ever moves it)."""
    if regime not in REGIMES:
        raise ValueError(f"reward_optimizer: regime expected one of {REGIMES}, got {regime!r}")
    if regime == "full":
        return make_optimizer(rcfg.lr_full, rcfg.steps_full, warmup_steps=5, weight_decay=rcfg.weight_decay)
    head_opt = make_optimizer(rcfg.lr_head, rcfg.steps_head, warmup_steps=5, weight_decay=rcfg.weight_decay)
    return freeze_updates(head_opt, {"backbone": "frozen", "head": "train"})


def group_arrays(groups: GroupedPreferences) -> dict:
    """The arrays of a GroupedPreferences, as the dict `reward_loss` takes."""
    return {"tokens": groups.tokens, "attention_mask": groups.attention_mask, "wins": groups.wins}


def make_reward_step(regime: str, cfg: GPTConfig, rcfg: RewardConfig):
    """(optimizer, jitted step state, batch -> state, metrics) for one regime."""
    optimizer = reward_optimizer(regime, rcfg)
    loss_fn = partial(reward_loss, cfg=cfg, freeze_backbone=(regime == "head"))
    return optimizer, make_train_step(loss_fn, optimizer)


def train_groups(step_fn, state, arrays: dict, steps: int, batch_size: int, rng: np.random.Generator,
                eval_fn=None, eval_every: int = 0, progress: Progress | None = None):
    """The loop: `steps` jitted steps on shuffled minibatches of `arrays` -> (state, history) with
    per-step "loss" and "accuracy" and, when eval_fn (params -> metrics) is given, "eval_step",
    "eval_loss", "eval_accuracy" at steps 1, every eval_every, and the last."""
    history = {k: [] for k in ("loss", "accuracy", "eval_step", "eval_loss", "eval_accuracy")}
    batch_size = min(batch_size, len(next(iter(arrays.values()))))
    for i, batch in enumerate(batches(rng, arrays, batch_size, steps), 1):
        state, metrics = step_fn(state, batch)
        history["loss"].append(float(metrics["loss"]))
        history["accuracy"].append(float(metrics["accuracy"]))
        check_finite(progress.name if progress is not None else "reward", i, history["loss"][-1])
        if eval_fn is not None and (i % eval_every == 0 or i in (1, steps)):
            ev = eval_fn(state.params)
            history["eval_step"].append(i)
            history["eval_loss"].append(ev["loss"])
            history["eval_accuracy"].append(ev["accuracy"])
        if progress is not None:
            progress(i, {k: metrics[k] for k in ("loss", "accuracy", "margin")})
    return state, {k: np.array(v) for k, v in history.items()}


def train_reward_model(rm_params: dict, groups: GroupedPreferences, cfg: GPTConfig, rcfg: RewardConfig,
                       regime: str, eval_data: PreferenceData | None = None, quiet: bool = False):
    """Minimise the BT loss on `groups` for rcfg.steps(regime) steps in `regime` ("head" or "full"),
    rcfg.batch_responses // K groups per step -> (params, history) (see train_groups; eval on the
    pairs `eval_data` when given)."""
    optimizer, step_fn = make_reward_step(regime, cfg, rcfg)
    eval_fn = None if eval_data is None else (lambda p: evaluate_preferences(p, cfg, eval_data).metrics)
    state, history = train_groups(
        step_fn, init_train_state(rm_params, optimizer), group_arrays(groups), rcfg.steps(regime),
        max(rcfg.batch_responses // groups.tokens.shape[1], 1), np.random.default_rng([rcfg.seed, REGIMES.index(regime)]), eval_fn,
        rcfg.eval_every, Progress(f"reward/{regime}", rcfg.steps(regime), quiet=quiet))
    return state.params, history


# ----------------------------------------------------------------------------- normalisation

def fold_normalisation(head: dict, mean: float, std: float) -> dict:
    """The head of r' = (r - mean) / std:  w' = w / std,  b' = (b - mean) / std."""
    if not std > 0:
        raise ValueError(f"fold_normalisation: std must be > 0, got {std}")
    return {"w": head["w"] / std, "b": (head["b"] - mean) / std}


def reference_rewards(rm_params: dict, cfg: GPTConfig, tok: Tokenizer, policy_params: dict,
                      key: jax.Array, n_per_prompt: int, prompts=None) -> np.ndarray:
    """r_phi of fresh samples of the reference (SFT) policy on `prompts` (default: the train
    prompts) -> [len(prompts) * n]."""
    prompts = list(prompts or [make_prompt(c) for c in SPLITS["train"]])
    samples = sample_answers(policy_params, cfg, tok, prompts, key, n=n_per_prompt)
    enc = encode_responses(tok, samples.prompts, samples.texts, samples.ended, max_len=SEQ_LEN)
    return score_batched(rm_params, enc.tokens, enc.attention_mask, cfg)


def normalise_reward_model(rm_params: dict, ref_rewards) -> tuple[dict, dict]:
    """Fold (mean, std) of `ref_rewards` [N] into the head -> (params, {"mean", "std"})."""
    ref_rewards = np.asarray(ref_rewards, np.float64)
    stats = {"mean": float(ref_rewards.mean()), "std": float(ref_rewards.std())}
    head = fold_normalisation(rm_params["head"], stats["mean"], stats["std"])
    return {"backbone": rm_params["backbone"], "head": head}, stats


# ----------------------------------------------------------------------------- evaluation

def gold_agreement(chosen_rewards, rejected_rewards, chosen_gold, rejected_gold) -> float:
    """Fraction of pairs with sign(r_phi(y_w) - r_phi(y_l)) == sign(r*(y_w) - r*(y_l)), gold ties
    (|dr*| < 1e-9) and unknown gold (NaN) excluded.  NaN if no pair is left.  All [N]."""
    d_phi = np.asarray(chosen_rewards, np.float64) - np.asarray(rejected_rewards, np.float64)
    d_gold = np.asarray(chosen_gold, np.float64) - np.asarray(rejected_gold, np.float64)
    keep = np.abs(d_gold) > 1e-9                                   # NaN compares False: dropped too
    return float(np.mean(np.sign(d_phi[keep]) == np.sign(d_gold[keep]))) if keep.any() else float("nan")


def differ_in_correctness(records) -> np.ndarray:
    """[N] bool: exactly one of a pair's two responses is gold-correct (`is_correct`: it names the
    right capital and no other).  Pairs whose prompt is not a capitals prompt count as False.

    Splitting `gold_agreement` by this mask separates the two things a reward model can learn:
    "which answer is right for this question" (the pairs where it is True) and form, length and
    termination (both responses right or both wrong)."""
    out = np.zeros(len(records), bool)
    for i, record in enumerate(records):
        try:
            country = parse_country(record["prompt"])
        except ValueError:
            continue
        out[i] = is_correct(country, record["chosen"]) != is_correct(country, record["rejected"])
    return out


def pearson(x, y) -> float:
    """Pearson correlation sum (x - x_bar)(y - y_bar) / sqrt(sum (x - x_bar)^2 sum (y - y_bar)^2),
    over the finite entries; NaN if fewer than 2 or a constant input."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
    denom = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    return float((x * y).sum() / denom) if keep.sum() >= 2 and denom > 0 else float("nan")


class PairEval(NamedTuple):
    metrics: dict                 # see evaluate_preferences
    chosen_rewards: np.ndarray    # [N] r_phi(x, y_w)
    rejected_rewards: np.ndarray  # [N] r_phi(x, y_l)


def evaluate_preferences(rm_params: dict, cfg: GPTConfig, data: PreferenceData) -> PairEval:
    """Score every pair.  metrics: the BT metrics (loss, accuracy = agreement with the rater's labels,
    margin, mean/min/max_reward); bayes_rate = mean max(p, 1 - p) of the rater's p (the best
    expected accuracy any model can reach on these labels); gold_label_accuracy = the accuracy of r*
    itself on the labels (ties count 1/2); gold_agreement; gold_pearson (r_phi vs r* over all
    responses of the pairs)."""
    tokens = np.concatenate([data.chosen_tokens, data.rejected_tokens])                # [2N, T]
    mask = np.concatenate([data.chosen_attention_mask, data.rejected_attention_mask])
    first, inverse = unique_rows(tokens)              # each distinct response scored once
    r = score_batched(rm_params, tokens[first], mask[first], cfg)[inverse]             # [2N]
    r_w, r_l = np.split(r, 2)                                                       # [N] each
    _, m = bradley_terry_loss(jnp.asarray(r_w), jnp.asarray(r_l))
    d_gold = data.chosen_gold - data.rejected_gold
    metrics = {k: float(v) for k, v in m.items()}
    metrics.update({
        "bayes_rate": float(np.mean(np.maximum(data.p_chosen, 1 - data.p_chosen))),
        "gold_label_accuracy": float(np.mean(np.where(np.abs(d_gold) < 1e-9, 0.5, d_gold > 0))),
        "gold_agreement": gold_agreement(r_w, r_l, data.chosen_gold, data.rejected_gold),
        "gold_pearson": pearson(np.concatenate([r_w, r_l]),
                                np.concatenate([data.chosen_gold, data.rejected_gold])),
    })
    return PairEval(metrics, r_w, r_l)


def calibration_bins(chosen_rewards, rejected_rewards, p_chosen, n_bins: int = 10) -> dict:
    """Reliability diagram of q = sigmoid(r_w - r_l) against the rater's labels, symmetrised: each
    pair counts as (q, label 1, p) and (1 - q, label 0, 1 - p).  Equal-width bins of q in [0, 1];
    -> {"predicted", "empirical", "rater_p", "count"} each [n_bins] (NaN in empty bins)."""
    q = 1 / (1 + np.exp(-(np.asarray(chosen_rewards, np.float64) - np.asarray(rejected_rewards))))
    q, label = np.concatenate([q, 1 - q]), np.concatenate([np.ones_like(q), np.zeros_like(q)])
    p = np.concatenate([p_chosen, 1 - np.asarray(p_chosen)])
    bins = np.minimum((q * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    mean = lambda v: np.bincount(bins, v, minlength=n_bins) / np.where(count, count, np.nan)
    return {"predicted": mean(q), "empirical": mean(label), "rater_p": mean(p), "count": count}


def canonical_ranking(rm_params: dict, cfg: GPTConfig, tok: Tokenizer, split: str) -> dict:
    """For each country of `split`: r_phi of the canonical right answer vs the canonical answer
    with the neighbour's capital (France: Paris vs Berlin).  -> {"accuracy", "right", "wrong"}."""
    countries = SPLITS[PROMPT_SPLIT[split]]          # "valid" asks the train countries
    prompts = [make_prompt(c, ood_template=(split == "ood")) for c in countries]
    right = [canonical_answer(c) for c in countries]
    wrong = [canonical_answer(c, CAPITAL[FACTS[c][1]]) for c in countries]
    enc = encode_responses(tok, prompts * 2, right + wrong, [True] * (2 * len(countries)), SEQ_LEN)
    r = score_batched(rm_params, enc.tokens, enc.attention_mask, cfg)
    r_right, r_wrong = r[:len(countries)], r[len(countries):]
    return {"accuracy": float(np.mean(r_right > r_wrong)), "right": r_right, "wrong": r_wrong}


# ----------------------------------------------------------------------------- the stage

def reward_config(smoke: bool, seed: int = 0) -> RewardConfig:
    """The course's reward-model run (the smoke one with smoke=True) with the given seed."""
    return dataclasses.replace(RewardConfig.smoke() if smoke else RewardConfig(), seed=seed)


def reward_model_recipe(smoke: bool, rcfg: RewardConfig, pref_paths: dict) -> dict:
    """What makes a reward model: this config, the SFT model of rcfg.seed and the preference
    files {split: path} (paths.recipe)."""
    return recipe("reward", rcfg, sft=file_digest(sft_model_path(smoke, rcfg.seed)),
                  preferences={s: file_digest(p) for s, p in pref_paths.items()})


def reward_model_path(smoke: bool, seed: int = 0, train_prefs=None):
    """runs[/smoke]/[seed{seed}/]reward.ckpt for the course's preference files; trained on another
    train file `train_prefs`, reward-<its digest>.ckpt, so it never replaces the course's model."""
    course = preference_paths(smoke, seed)["train"]
    own = train_prefs is None or Path(train_prefs).resolve() == course.resolve()
    return artifact_path(smoke, "reward.ckpt", seed, tag=None if own else file_digest(train_prefs, 8))


def save_reward_model(smoke: bool, rm_params: dict, cfg: GPTConfig, meta: dict, rcfg: RewardConfig,
                      pref_paths: dict):
    """Write the reward model (params {"backbone", "head"}, meta e.g. normalisation) trained with
    `rcfg` on `pref_paths` ({split: path}) to `reward_model_path`, with its recipe."""
    return save_checkpoint(reward_model_path(smoke, rcfg.seed, pref_paths["train"]), rm_params, cfg,
                           {"stage": "reward", **meta,
                            "made_by": reward_model_recipe(smoke, rcfg, pref_paths)})


def fit_reward_model(tok: Tokenizer, sft_params: dict, cfg: GPTConfig, groups: GroupedPreferences,
                     data: dict, rcfg: RewardConfig, quiet: bool = False, reference_prompts=None):
    """Lesson 04 without the plots: train both regimes on the train `groups`, keep the one with
    the lower validation loss (select_regime), normalise it on fresh SFT samples of
    `reference_prompts` (default: the train prompts).  `data` = {split: PreferenceData} (pairs), with
    a "valid" split.  -> (rm_params, meta = {"regime", "normalisation", "metrics"})."""
    k_head, k_ref = jax.random.split(jax.random.PRNGKey(rcfg.seed))
    init = init_reward_model(k_head, sft_params, cfg)
    results = {}
    for regime in REGIMES:
        params, _ = train_reward_model(init, groups, cfg, rcfg, regime, quiet=quiet)
        results[regime] = (params, {s: evaluate_preferences(params, cfg, d).metrics for s, d in data.items()})
    best = select_regime({g: results[g][1] for g in REGIMES})
    ref = reference_rewards(results[best][0], cfg, tok, sft_params, k_ref, rcfg.n_reference_per_prompt,
                            reference_prompts)
    rm_params, stats = normalise_reward_model(results[best][0], ref)
    return rm_params, {"regime": best, "normalisation": stats,
                       "metrics": {g: results[g][1] for g in REGIMES}}


def build_reward_model(smoke: bool, quiet: bool = False, seed: int = 0):
    """`fit_reward_model` on the lesson-04 preference files of `seed` -> (rm_params, cfg, meta)."""
    rcfg = reward_config(smoke, seed)
    tok, (sft_params, cfg) = ensure_tokenizer(smoke), ensure_sft_model(smoke, seed)
    paths = ensure_preferences(smoke, seed)
    data = load_preference_data(tok, paths, SEQ_LEN, model_max_len=cfg.max_len)
    groups = load_groups(tok, paths["train"])
    rm_params, meta = fit_reward_model(tok, sft_params, cfg, groups, data, rcfg, quiet=quiet)
    return rm_params, cfg, {"stage": "reward", **meta}


def ensure_reward_model(smoke: bool, seed: int = 0):
    """The normalised reward model of `seed` from runs[/smoke]/[seed{seed}/]reward.ckpt, built
    (lesson 04's stage) when missing or made by another recipe -> (rm_params {"backbone",
    "head"}, GPTConfig)."""
    paths = ensure_preferences(smoke, seed)
    want = reward_model_recipe(smoke, reward_config(smoke, seed), paths)
    rm_params, cfg, _ = ensure_checkpoint(reward_model_path(smoke, seed), want,
                                          lambda: build_reward_model(smoke, seed=seed), "reward")
    return rm_params, cfg
