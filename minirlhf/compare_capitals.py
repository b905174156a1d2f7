"""Lesson 08, experiment 4: SFT, best-of-n, PPO, GRPO, RLOO, DPO and IPO on the capitals world,
side by side.

All methods start from the same pi_ref (the SFT checkpoint) and use the same preference data
(lesson 04's train pairs): PPO, GRPO, RLOO and best-of-n through the reward model fitted to
them, DPO and IPO directly.  One more row, "grpo-gold", is GRPO given the verifiable reward
(right capital and no other: the gold accuracy itself) instead of the reward model: not a
method on the same data, but what the same optimiser reaches when the reward is exact.  Each
trained method is rerun for every seed (seed of its batch order / rollouts,
and of the evaluation samples), timed on this machine, then measured by

* gold accuracy of temperature-1 samples on the train / held-out / OOD prompts,
* KL(pi || pi_ref): the sampled k1 estimate E_{y ~ pi}[log pi(y|x) - log pi_ref(y|x)] of the
  sequence KL (train prompts). For best-of-n we print the bound log n - (n-1)/n instead (the
  best-of-n policy has no tractable log-prob; the bound is exact for continuous rewards).

The transformer runs do not vmap over seeds (each one is a Python loop of jitted steps with
host-side decoding); the seeds run one after another.  DPO for seed 0 with lesson 06's config is
lesson 06's own run (same pi_ref, pairs, config and seed): its checkpoint is loaded
(`dpo_train.ensure_dpo_policy`, trained if missing) rather than trained again, and its time_s
is NaN (markdown_table averages the seeds that trained here).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from minirlhf import dpo_train, grpo_train, ppo_train
from minirlhf.evaluation import evaluate_policy, sample_answers
from minirlhf.exact.world import best_of_n_kl_bound
from minirlhf.pretrain import ensure_tokenizer
from minirlhf.reward import ensure_reward_model, score_batched
from minirlhf.reward_data import ensure_preferences
from minirlhf.sft import ensure_sft_model
from minirlhf.worlds.capitals import split_prompts

SPLITS = ("train", "heldout", "ood")
COLUMNS = ("acc/train", "acc/heldout", "acc/ood", "kl", "time_s")
GRPO_ROWS = {   # row name: the GRPOConfig fields that make it (lesson 07)
    "grpo": {"estimator": "grpo", "reward": "model", "kl_in": "loss"},    # k3 in the loss
    "rloo": {"estimator": "rloo", "reward": "model", "kl_in": "reward"},  # k1 in the reward
    "grpo-gold": {"estimator": "grpo", "reward": "gold", "kl_in": "loss"},  # verifiable reward
}


@dataclasses.dataclass(frozen=True)
class CapitalsCompareConfig:
    seeds: tuple = (0, 1, 2)
    """Seeds of each trained method (>= 3 for a spread)."""
    n_eval: int = 4
    """Temperature-1 answers per prompt for the gold accuracy and the KL estimate."""
    bon_n: int = 8
    """n of best-of-n (samples from pi_ref = SFT, pick the highest reward-model score)."""
    ppo: ppo_train.PPOConfig = dataclasses.field(   # plain PPO vs plain DPO: no ptx term
        default_factory=lambda: ppo_train.PPOConfig(n_iterations=20, ptx_coef=0.0))
    """PPO run (reduced from lesson 05's default to fit lesson 08's time budget)."""
    grpo: grpo_train.GRPOConfig = dataclasses.field(
        default_factory=lambda: grpo_train.GRPOConfig(n_iterations=20))
    """GRPO / RLOO runs (grpo_train's default with 20 iterations, like the PPO run here and
    lesson 07's runs); each row of GRPO_ROWS sets its estimator, reward and KL placement."""
    dpo: dpo_train.DPOConfig = dataclasses.field(default_factory=dpo_train.DPOConfig)
    """DPO run (lesson 06's default); IPO uses the same with loss_type="ipo"."""

    @classmethod
    def smoke(cls) -> CapitalsCompareConfig:
        """One seed, one answer per prompt and the stages' smoke configs: for the tests."""
        return cls(seeds=(0,), n_eval=1, bon_n=2, ppo=ppo_train.PPOConfig.smoke(),
                   grpo=grpo_train.GRPOConfig.smoke(), dpo=dpo_train.DPOConfig.smoke())


def _evaluate(params, ref_params, model_cfg, tok, splits, key, n_eval) -> dict:
    out = evaluate_policy(params, ref_params, model_cfg, tok, splits, key, n_eval, kl_splits=("train",))
    return {**{f"acc/{s}": out[s]["gold/accuracy"] for s in SPLITS}, "kl": out["train"]["kl"]}


def lesson06_dpo(smoke: bool, cfg: CapitalsCompareConfig, seed: int):
    """The policy of lesson 06's DPO run when the DPO row of `seed` is that run (seed 0: the
    same pi_ref, pairs and config), else None."""
    default = dpo_train.DPOConfig.smoke() if smoke else dpo_train.DPOConfig()
    mine = dataclasses.replace(cfg.dpo, seed=seed, loss_type="dpo")
    if seed != 0 or mine != dataclasses.replace(default, seed=seed):
        return None
    params, _ = dpo_train.ensure_dpo_policy(smoke, seed)
    return params


def best_of_n_accuracy(params, rm_params, model_cfg, tok, prompts, key, n: int, n_eval: int):
    """Gold accuracy of best-of-n: n_eval picks per prompt, each the answer with the highest
    reward-model score among n samples of pi_ref."""
    samples = sample_answers(params, model_cfg, tok, prompts, key, n * n_eval)
    gen = samples.generation
    scores = score_batched(rm_params, gen.tokens, gen.attention_mask, model_cfg)  # one program
    scores = scores.reshape(len(prompts), n_eval, n)  # rows are prompt-major
    best = scores.argmax(-1)  # [prompts, n_eval]
    correct = samples.correct.reshape(len(prompts), n_eval, n)
    return float(np.take_along_axis(correct, best[..., None], -1).mean())


def capitals_table(smoke: bool, cfg: CapitalsCompareConfig, quiet: bool = True) -> dict:
    """{method: {column: [len(seeds)] numpy}} for SFT, best-of-n, PPO, GRPO_ROWS, DPO, IPO
    (COLUMNS)."""
    tok, (sft_params, model_cfg) = ensure_tokenizer(smoke), ensure_sft_model(smoke)
    rm_params, _ = ensure_reward_model(smoke)
    splits = {s: split_prompts(s) for s in SPLITS}
    arrays = dpo_train.with_reference_logps(
        dpo_train.load_pair_arrays(tok, ensure_preferences(smoke)["train"], model_cfg),
        sft_params, model_cfg)
    rows: dict = {}

    def add(method, metrics):
        for k, v in metrics.items():
            rows.setdefault(method, {}).setdefault(k, []).append(v)

    for seed in cfg.seeds:
        key = jax.random.PRNGKey(1000 + seed)
        add("sft", {**_evaluate(sft_params, sft_params, model_cfg, tok, splits, key, cfg.n_eval),
                    "time_s": 0.0})
        t0 = time.perf_counter()
        bon = {f"acc/{s}": best_of_n_accuracy(sft_params, rm_params, model_cfg, tok, splits[s],
                                              jax.random.fold_in(key, i), cfg.bon_n, cfg.n_eval)
               for i, s in enumerate(SPLITS)}
        add(f"best-of-{cfg.bon_n}", {**bon, "kl": best_of_n_kl_bound(cfg.bon_n),
                                     "time_s": time.perf_counter() - t0})
        t0 = time.perf_counter()
        state, _ = ppo_train.train_ppo(sft_params, sft_params, rm_params, model_cfg, tok,
                                  dataclasses.replace(cfg.ppo, seed=seed), quiet=quiet)
        elapsed = time.perf_counter() - t0
        add("ppo", {**_evaluate(state.train_state.params["policy"], sft_params, model_cfg, tok,
                                splits, key, cfg.n_eval), "time_s": elapsed})
        for method, fields in GRPO_ROWS.items():
            t0 = time.perf_counter()
            params, _ = grpo_train.train_grpo(
                sft_params, sft_params, rm_params, model_cfg, tok,
                dataclasses.replace(cfg.grpo, seed=seed, **fields), quiet=quiet)
            elapsed = time.perf_counter() - t0
            add(method, {**_evaluate(params, sft_params, model_cfg, tok, splits, key, cfg.n_eval),
                         "time_s": elapsed})
        for loss_type in ("dpo", "ipo"):
            t0 = time.perf_counter()
            params = lesson06_dpo(smoke, cfg, seed) if loss_type == "dpo" else None
            if params is None:
                params, _ = dpo_train.train_dpo(
                    sft_params, arrays, model_cfg,
                    dataclasses.replace(cfg.dpo, seed=seed, loss_type=loss_type), quiet=quiet)
                elapsed = time.perf_counter() - t0
            else:
                elapsed = float("nan")   # trained in lesson 06
            add(loss_type, {**_evaluate(params, sft_params, model_cfg, tok, splits, key,
                                        cfg.n_eval), "time_s": elapsed})
    return {m: {k: np.array(v) for k, v in cols.items()} for m, cols in rows.items()}


def markdown_table(rows: dict) -> str:
    """A markdown table of mean ± std over seeds for each method and column (NaN entries,
    e.g. the time of a run loaded from its lesson, left out; "n/a" if all are NaN)."""
    def cell(x):
        x = x[~np.isnan(x)]
        return f"{x.mean():.3f} ± {x.std():.3f}" if x.size else "n/a"

    head = "| method | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for method, cols in rows.items():
        cells = [cell(np.asarray(cols[c], float)) for c in COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
