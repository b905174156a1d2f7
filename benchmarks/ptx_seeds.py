"""Held-out gold accuracy of PPO and DPO with and without the pretraining ("ptx") term, over seeds.

    .venv/bin/python benchmarks/ptx_seeds.py [--seeds 0 1 2] [--n-eval 64]

Uses the lesson checkpoints in runs/ (tokenizer, SFT = pi_ref, reward model, train preference
pairs; each is built first if missing) and trains, for each seed, PPO (lesson 05's config) and
DPO (lesson 06's config) with ptx_coef = 0 and 1.  Prints gold accuracy on the train and held-out
prompts (n-eval temperature-1 samples per prompt, the same sampling key for every policy) and the
mean over seeds.  Not part of `make lessons`: about 8 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from minirlhf import rlhf
from minirlhf.dpo_train import DPOConfig, load_pair_arrays, train_dpo, with_reference_logps
from minirlhf.evaluation import evaluate_splits
from minirlhf.pretrain import corpus_arrays, ensure_tokenizer
from minirlhf.reward import ensure_reward_model
from minirlhf.reward_data import ensure_preferences
from minirlhf.sft import ensure_sft_model
from minirlhf.worlds.capitals import split_prompts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-eval", type=int, default=64, help="samples per prompt")
    args = ap.parse_args()
    tok = ensure_tokenizer(False)
    sft, cfg = ensure_sft_model(False)
    rm, _ = ensure_reward_model(False)
    pairs = with_reference_logps(load_pair_arrays(tok, ensure_preferences(False)["train"], cfg), sft, cfg)
    ptx = corpus_arrays(tok)
    splits = {s: split_prompts(s) for s in ("train", "heldout")}
    key = jax.random.PRNGKey(1234)

    def accuracy(params):
        ev = evaluate_splits(params, cfg, tok, splits, key, args.n_eval)
        return ev["train"]["gold/accuracy"], ev["heldout"]["gold/accuracy"]

    rows = {"SFT (pi_ref)": [accuracy(sft)]}
    for seed in args.seeds:
        for gamma in (0.0, 1.0):
            ppo_cfg = dataclasses.replace(rlhf.PPOConfig(), seed=seed, ptx_coef=gamma)
            state, _ = rlhf.train_ppo(sft, sft, rm, cfg, tok, ppo_cfg, quiet=True)
            rows.setdefault(f"PPO, ptx_coef={gamma}", []).append(accuracy(state.train_state.params["policy"]))
            dpo_cfg = dataclasses.replace(DPOConfig(), seed=seed, ptx_coef=gamma)
            params, _ = train_dpo(sft, pairs, cfg, dpo_cfg, quiet=True, ptx=ptx)
            rows.setdefault(f"DPO, ptx_coef={gamma}", []).append(accuracy(params))
            print(f"seed {seed} ptx_coef {gamma}: PPO train/held-out {rows[f'PPO, ptx_coef={gamma}'][-1]}, "
                  f"DPO {rows[f'DPO, ptx_coef={gamma}'][-1]}", flush=True)
    print(f"\n{'gold accuracy':<20}{'train':>16}{'held-out':>16}   (mean ± std over seeds {args.seeds}, "
          f"{args.n_eval} samples per prompt)")
    for name, acc in rows.items():
        a = np.array(acc)
        print(f"{name:<20}{a[:, 0].mean():>9.3f} ± {a[:, 0].std():.3f}{a[:, 1].mean():>9.3f} ± {a[:, 1].std():.3f}")


if __name__ == "__main__":
    main()
