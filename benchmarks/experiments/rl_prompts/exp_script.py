"""Experiment: an "rl" split of 16 countries (corpus only, no SFT demos) whose prompts join the
preference and PPO prompt sets (treatment) vs train prompts only (baseline).

    cd /tmp/exp_rl && MINIRLHF_RUNS=/tmp/exp_rl/runs PYTHONPATH=/tmp/exp_rl \
        .venv/bin/python exp_script.py [--arms baseline treatment] [--seeds 0] [--n-eval 64]

Shared: tokenizer, base, SFT (runs/).  Per arm (runs/<arm>/): preference files, reward model,
PPO (ptx_coef 0, 1) and DPO (ptx_coef 0, 1).  Held-out / OOD / rl evaluation pair files are
identical in both arms (same SFT, same keys) and collected once (runs/eval_prefs/).
Results are appended to runs/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time

import jax
import numpy as np

from minirlhf import rlhf
from minirlhf.data import write_preferences
from minirlhf.dpo_train import DPOConfig, load_pair_arrays, train_dpo, with_reference_logps
from minirlhf.evaluation import sample_answers
from minirlhf.paths import runs_dir
from minirlhf.pretrain import SEQ_LEN, corpus_arrays, ensure_base_model, ensure_tokenizer
from minirlhf.reward import RewardConfig, canonical_ranking, fit_reward_model
from minirlhf.reward_data import (PREFERENCE_SPLITS, PreferenceConfig, collect_preferences,
                                  load_preference_data)
from minirlhf.checkpoint import load_checkpoint, save_checkpoint
from minirlhf.sft import ensure_sft_model
from minirlhf.worlds.capitals import CAPITAL, parse_country, split_prompts

RUNS = runs_dir(False)
RESULTS = RUNS / "results.json"
EVAL_SPLITS = ("train", "rl", "heldout", "ood")
_RESTATE = re.compile(r"^\s*The capital of (.+?) is\b")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def record(key, value):
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = value
    RESULTS.write_text(json.dumps(data, indent=1))


def restate_stats(prompts, texts):
    """Fractions of responses that (a) restate ANOTHER known country ("The capital of Spain is ..."
    to a Portugal prompt), (b) restate some non-country / unknown string, (c) are in the canonical
    form with the asked country (any capital)."""
    other = unknown = canon = 0
    for p, y in zip(prompts, texts):
        asked = parse_country(p)
        m = _RESTATE.match(y)
        if m:
            c = m.group(1)
            if c in CAPITAL and c != asked:
                other += 1
            elif c not in CAPITAL:
                unknown += 1
        s = y.strip()
        if re.fullmatch(rf"The capital of {re.escape(asked)} is [A-Z][a-z]+( [A-Z][a-z]+)?\.", s):
            canon += 1
    n = len(texts)
    return {"other_country": other / n, "unknown_restate": unknown / n, "canonical_form": canon / n}


def evaluate(params, cfg, tok, n_eval):
    key = jax.random.PRNGKey(1234)
    out = {}
    for name, k in zip(EVAL_SPLITS, jax.random.split(key, len(EVAL_SPLITS))):
        s = sample_answers(params, cfg, tok, split_prompts(name), k, n_eval)
        out[name] = {"acc": float(s.correct.mean()), "gold_reward": float(s.gold_reward.mean()),
                     "eos": float(s.ended.mean()), **restate_stats(s.prompts, s.texts)}
    return out


def timed(name, fn, times):
    t0 = time.perf_counter()
    r = fn()
    times[name] = round(time.perf_counter() - t0, 1)
    log(f"{name}: {times[name]} s")
    return r


def collect(params, cfg, tok, prompts, split, n_pairs, path, pcfg=PreferenceConfig()):
    """Exactly build_preferences' key / rng for `split` (rl eval file: index 4)."""
    idx = PREFERENCE_SPLITS.index(split) if split in PREFERENCE_SPLITS else 4
    key = jax.random.split(jax.random.PRNGKey(pcfg.seed), 5)[idx] if idx == 4 else \
        jax.random.split(jax.random.PRNGKey(pcfg.seed), len(PREFERENCE_SPLITS))[idx]
    rng = np.random.default_rng([pcfg.seed, idx])
    recs, skipped = collect_preferences(params, cfg, tok, prompts, split, key, rng, n_pairs,
                                        pcfg.world.rater_tau, pcfg.temperature)
    write_preferences(path, recs)
    log(f"  prefs {split}: {len(recs)} pairs ({skipped} identical skipped) over {len(prompts)} prompts")
    return len(recs)


def build_rm(tok, sft, cfg, paths, norm_prompts, out_path, scale=1.0):
    rcfg = RewardConfig()
    rcfg = dataclasses.replace(rcfg, steps_head=round(rcfg.steps_head * scale), steps_full=round(rcfg.steps_full * scale))
    data = load_preference_data(tok, paths, SEQ_LEN, model_max_len=cfg.max_len)
    rm, meta = fit_reward_model(tok, sft, cfg, data, rcfg, quiet=True, reference_prompts=norm_prompts)
    save_checkpoint(out_path, rm, cfg, {"stage": "reward", "regime": meta["regime"]})
    canon = {sp: canonical_ranking(rm, cfg, tok, sp)["accuracy"] for sp in ("valid", "heldout")}
    keep = ("loss", "accuracy", "bayes_rate", "gold_agreement")
    metrics = {g: {sp: {k: round(m[k], 4) for k in keep} for sp, m in meta["metrics"][g].items()}
               for g in meta["metrics"]}
    return rm, {"regime": meta["regime"], "metrics": metrics, "normalisation": meta["normalisation"],
                "canonical_ranking": canon}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", nargs="+", default=["baseline", "treatment"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-eval", type=int, default=64)
    args = ap.parse_args()
    times = {}
    tok = timed("tokenizer", lambda: ensure_tokenizer(False), times)
    timed("pretrain", lambda: ensure_base_model(False), times)
    sft, cfg = timed("sft", lambda: ensure_sft_model(False), times)
    ptx = corpus_arrays(tok)
    if not (RUNS / "eval_sft.json").exists():
        ev = timed("eval_sft", lambda: evaluate(sft, cfg, tok, args.n_eval), times)
        (RUNS / "eval_sft.json").write_text(json.dumps(ev))
        record("SFT", ev)
        log(f"SFT: {ev}")
    # evaluation pair files, shared by both arms
    evdir = RUNS / "eval_prefs"
    evdir.mkdir(exist_ok=True)
    eval_paths = {"heldout": evdir / "heldout.jsonl", "ood": evdir / "ood.jsonl", "rl": evdir / "rl.jsonl"}
    if not all(p.exists() for p in eval_paths.values()):
        def _c():
            for sp, path in eval_paths.items():
                collect(sft, cfg, tok, split_prompts(sp), sp, 24, path)
        timed("prefs_eval_files", _c, times)
    for arm in args.arms:
        adir = RUNS / arm
        adir.mkdir(exist_ok=True)
        prompts = split_prompts("train") + (split_prompts("rl") if arm.startswith("treatment") else [])
        if arm == "treatment_rm1.5x" and not (adir / "train.jsonl").exists():  # same pairs as treatment
            import shutil
            for f in ("train.jsonl", "valid.jsonl"):
                shutil.copy(RUNS / "treatment" / f, adir / f)
        paths = {"train": adir / "train.jsonl", "valid": adir / "valid.jsonl", **eval_paths}
        atimes = {}
        if not (adir / "train.jsonl").exists():
            def _c():
                return {sp: collect(sft, cfg, tok, prompts, sp, n, paths[sp])
                        for sp, n in (("train", 80), ("valid", 24))}
            record(f"{arm}/n_pairs", timed(f"{arm}/prefs", _c, atimes))
        rm_path = adir / "reward.ckpt"
        if not rm_path.exists():
            _, rm_info = timed(f"{arm}/reward_model", lambda: build_rm(tok, sft, cfg, paths, prompts, rm_path, 1.5 if arm == "treatment_rm1.5x" else 1.0), atimes)
            record(f"{arm}/rm", rm_info)
            log(f"{arm} RM: {json.dumps(rm_info)}")
        rm, _, _ = load_checkpoint(rm_path)
        pairs = with_reference_logps(load_pair_arrays(tok, paths["train"], cfg), sft, cfg)
        for seed in args.seeds:
            for gamma in (0.0, 1.0):
                name = f"{arm}/PPO ptx={gamma:g}/seed{seed}"
                pcfg = dataclasses.replace(rlhf.PPOConfig(), seed=seed, ptx_coef=gamma)
                state, hist = timed(name, lambda: rlhf.train_ppo(sft, sft, rm, cfg, tok, pcfg, prompts=prompts, quiet=True), atimes)
                ev = evaluate(state.train_state.params["policy"], cfg, tok, args.n_eval)
                ev["final_kl"] = float(hist["objective/kl"][-1])
                record(name, ev)
                log(f"{name}: " + " ".join(f"{s}={ev[s]['acc']:.3f}/oc{ev[s]['other_country']:.2f}" for s in EVAL_SPLITS))
                if arm == "treatment_rm1.5x":
                    continue  # DPO does not use the reward model: identical to the treatment arm
                name = f"{arm}/DPO ptx={gamma:g}/seed{seed}"
                dcfg = dataclasses.replace(DPOConfig(), seed=seed, ptx_coef=gamma)
                params, _ = timed(name, lambda: train_dpo(sft, pairs, cfg, dcfg, quiet=True, ptx=ptx), atimes)
                ev = evaluate(params, cfg, tok, args.n_eval)
                record(name, ev)
                log(f"{name}: " + " ".join(f"{s}={ev[s]['acc']:.3f}/oc{ev[s]['other_country']:.2f}" for s in EVAL_SPLITS))
        record(f"{arm}/times", atimes)
    record("shared_times", times)


if __name__ == "__main__":
    main()
