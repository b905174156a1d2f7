"""What carries to held-out countries: PPO and DPO, all weights vs the final norm, with and without
the pretraining ("ptx") term, against pi_ref at lower temperatures; over seeds.

    .venv/bin/python benchmarks/heldout_seeds.py [--seeds 0 1 2] [--n-rows 512]

Uses the lesson checkpoints in runs/ (tokenizer, SFT = pi_ref, reward model, train preference
pairs; each is built first if missing) and trains, for each seed, the 8 policies
{PPO, DPO} x {all weights, final norm only} x {ptx_coef 0, 1}: lesson 05's and lesson 06's configs,
final-norm runs with lesson 09's learning rates and lengths (PPO 3e-2 for 20 iterations, DPO 0.1
for 60 steps).  Each policy is measured on n-rows temperature-1 samples per split (train: n-rows/32
per prompt, held-out: n-rows/8), with the seed's own sampling key: gold accuracy and the KL to
pi_ref (nats per response).  pi_ref at temperature T (model.tempered) is measured the same way.
Prints every run, then mean ± std over seeds.  Not part of `make lessons`: about 15 minutes on a
2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from minirlhf import ppo_train
from minirlhf.dpo_train import DPOConfig, load_pair_arrays, train_dpo, with_reference_logps
from minirlhf.evaluation import evaluate_policy
from minirlhf.model import tempered
from minirlhf.pretrain import corpus_arrays, ensure_tokenizer
from minirlhf.reward import ensure_reward_model
from minirlhf.reward_data import ensure_preferences
from minirlhf.sft import ensure_sft_model
from minirlhf.worlds.capitals import split_prompts

TEMPERATURES = (0.8, 0.7, 0.6)
FINAL_NORM = {"ppo": {"lr": 3e-2, "n_iterations": 20}, "dpo": {"lr": 0.1}}   # lessons 05 / 06


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-rows", type=int, default=512, help="samples per split")
    args = ap.parse_args()
    tok = ensure_tokenizer(False)
    sft, cfg = ensure_sft_model(False)
    rm, _ = ensure_reward_model(False)
    pairs = with_reference_logps(load_pair_arrays(tok, ensure_preferences(False)["train"], cfg), sft, cfg)
    ptx = corpus_arrays(tok)
    splits = {s: split_prompts(s) for s in ("train", "heldout")}

    def measure(params, key):
        """{split: (gold accuracy, KL to pi_ref)} of n-rows samples per split."""
        out = {}
        for split, prompts in splits.items():
            ev = evaluate_policy(params, sft, cfg, tok, {split: prompts}, key, args.n_rows // len(prompts))
            out[split] = (ev[split]["gold/accuracy"], ev[split]["kl"])
        return out

    rows = {}
    for seed in args.seeds:
        key = jax.random.PRNGKey(1000 + seed)
        policies = {"SFT (pi_ref)": sft, **{f"pi_ref at T = {T}": tempered(sft, T) for T in TEMPERATURES}}
        for trainable in ("all", "final_norm"):
            for gamma in (0.0, 1.0):
                fn = FINAL_NORM["ppo"] if trainable == "final_norm" else {}
                ppo_cfg = dataclasses.replace(ppo_train.PPOConfig(), seed=seed, ptx_coef=gamma, trainable=trainable, **fn)
                state, _ = ppo_train.train_ppo(sft, sft, rm, cfg, tok, ppo_cfg, quiet=True)
                policies[f"PPO{'-ptx' if gamma else ''}, {trainable}"] = state.train_state.params["policy"]
                fn = FINAL_NORM["dpo"] if trainable == "final_norm" else {}
                dpo_cfg = dataclasses.replace(DPOConfig(), seed=seed, ptx_coef=gamma, trainable=trainable, **fn)
                policies[f"DPO{'-ptx' if gamma else ''}, {trainable}"], _ = train_dpo(
                    sft, pairs, cfg, dpo_cfg, quiet=True, ptx=ptx)
        for name, params in policies.items():
            m = measure(params, key)
            rows.setdefault(name, []).append(m)
            print(f"seed {seed}  {name:<22} train {m['train'][0]:.3f} (KL {m['train'][1]:.2f})   "
                  f"held-out {m['heldout'][0]:.3f} (KL {m['heldout'][1]:.2f})", flush=True)
    print(f"\n{'mean ± std over seeds ' + str(args.seeds):<34}{'train acc':>16}{'KL':>7}{'held-out acc':>17}{'KL':>7}"
          f"   ({args.n_rows} samples per split and seed)")
    for name, runs in rows.items():
        a = np.array([[r["train"][0], r["train"][1], r["heldout"][0], r["heldout"][1]] for r in runs])
        mean, std = a.mean(0), a.std(0)
        print(f"{name:<34}{mean[0]:>9.3f} ± {std[0]:.3f}{mean[1]:>7.2f}{mean[2]:>10.3f} ± {std[2]:.3f}{mean[3]:>7.2f}")


if __name__ == "__main__":
    main()
