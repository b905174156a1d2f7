# %% [markdown]
# # Lesson 09: what alignment is allowed to change decides what carries to new prompts
#
# PPO (lesson 05) and DPO (lesson 06) learn from the 32 train countries only.  Both raise gold
# accuracy there; on the 8 held-out countries, which no preference ever mentioned, they gain
# little or lose.  This lesson asks why, and what does carry over:
#
# 1. **the alignment tax**: what the all-weights policies learn on train prompts is partly about
#    *tokens*, and InstructGPT's pretraining term (PPO-ptx, DPO-ptx) only pays that tax back;
# 2. **final norm only**: the same runs restricted to the final LayerNorm ln_f (192 numbers),
#    a change that acts on every prompt at once;
# 3. **the fair baseline**: pi_ref at a lower temperature, which needs no preferences at all and
#    is itself a final-norm policy.
#
# The lesson loads lesson 05's PPO policy and lesson 06's DPO policy (each built here if missing)
# and trains the new runs with the same configs, seeds and evaluation keys as those lessons.

# %%
import dataclasses
import time

import jax
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import paths, ppo_train
from minirlhf.dpo_train import (
    DPOConfig,
    ensure_dpo_policy,
    evaluate_pairs,
    load_pair_arrays,
    train_dpo,
    with_reference_logps,
)
from minirlhf.evaluation import evaluate_policy, sample_answers, samples_kl
from minirlhf.model import tempered
from minirlhf.pretrain import corpus_arrays, ensure_tokenizer
from minirlhf.reward import ensure_reward_model
from minirlhf.reward_data import ensure_preferences
from minirlhf.sft import ensure_sft_model
from minirlhf.worlds import capitals as cw

t_start = time.time()
args = paths.lesson_args()
RUNS, FIGURES = paths.runs_dir(args.smoke), paths.figures_dir(args.smoke)
tok = ensure_tokenizer(args.smoke)
ref_params, model_cfg = ensure_sft_model(args.smoke, args.seed)          # pi_ref (lesson 03)
rm_params, _ = ensure_reward_model(args.smoke, args.seed)                # r_phi (lesson 04)
ppo_policy, _ = ppo_train.ensure_ppo_policy(args.smoke, args.seed)       # lesson 05's main run
dpo_policy, _ = ensure_dpo_policy(args.smoke, args.seed)                 # lesson 06's policy
splits = {name: cw.split_prompts(name) for name in cw.SPLITS}
TEMPERATURES = (0.8, 0.7, 0.6)   # pi_ref at temperature T, as weights: ln_f's (g, b) / T (model.tempered)

# %% [markdown]
# ## 1. The alignment tax
#
# Lesson 05's PPO raised gold accuracy on the train prompts and lowered it on held-out countries
# (`benchmarks/heldout_seeds.py` finds the same over 3 seeds).  PPO's reward comes from train
# prompts only, and what it learns there is partly about *tokens*: train countries and train
# capitals are what good answers contain.  Asked about a held-out country, such a policy starts
# answering about a train country ("The capital of Peru is Lima." to "What's the capital of
# Portugal?"), and the reward model, which never learnt to check the answer against the question,
# scores that well.  InstructGPT's remedy is the pretraining term ("PPO-ptx", `ptx_coef` = gamma
# = 1, Ouyang et al. 2022 eq. 2),
#
#     max_theta  E[ r_phi(x, y) ] - beta KL(pi_theta || pi_ref) + gamma E_{x ~ D_pretrain}[ log pi_theta(x) ]:
#
# a next-token loss on pretraining documents in every minibatch keeps the policy able to talk
# about every country in the corpus.  It applies to DPO unchanged (`DPOConfig.ptx_coef`).
#
# Every policy is measured as in its own lesson: PPO's with `evaluate_policy` on lesson 05's
# evaluation key (N_ROWS samples per split, KL(pi || pi_ref) in nats per response), DPO's with
# lesson 06's sampling keys (KL from the sampler's log-probs, `evaluation.sequence_kl`).

# %%
ppo_cfg = ppo_train.PPOConfig.smoke() if args.smoke else ppo_train.PPOConfig()
ppo_cfg = dataclasses.replace(ppo_cfg, seed=args.seed)
N_ROWS = 8 if args.smoke else 256  # lesson 05's evaluation samples per split
key_eval = jax.random.PRNGKey(args.seed + 11)   # lesson 05's evaluation key


def evaluate(params, names=("train", "heldout", "ood")):
    """Lesson 05's evaluation: gold metrics and KL(pi || pi_ref) of N_ROWS samples per split."""
    return {name: evaluate_policy(params, ref_params, model_cfg, tok, {name: splits[name]}, key_eval,
                                  max(N_ROWS // len(splits[name]), 1))[name] for name in names}


ppo_results = {"SFT": evaluate(ref_params), "PPO": evaluate(ppo_policy, ("train", "heldout"))}
print("PPO, all weights (lesson 05's evaluation): gold accuracy " + ", ".join(
    f"{split} {ppo_results['SFT'][split]['gold/accuracy']:.3f} -> {ppo_results['PPO'][split]['gold/accuracy']:.3f}"
    for split in ("train", "heldout")))

dcfg = dataclasses.replace(DPOConfig.smoke() if args.smoke else DPOConfig(), seed=args.seed)
pref_paths = ensure_preferences(args.smoke, args.seed)
train = with_reference_logps(load_pair_arrays(tok, pref_paths["train"], model_cfg), ref_params, model_cfg)
heldout = with_reference_logps(load_pair_arrays(tok, pref_paths["heldout"], model_cfg), ref_params, model_cfg)
N_EVAL = 1 if args.smoke else 8                                    # lesson 06's samples per train prompt
n_per = {"train": N_EVAL, "heldout": 4 * N_EVAL}


def accuracy_and_kl(params):
    """Lesson 06's evaluation: {split: (gold accuracy, KL(pi || pi_ref) in nats)}, train and held-out."""
    out = {}
    for split_i, split in enumerate(("train", "heldout")):
        s = sample_answers(params, model_cfg, tok, splits[split], jax.random.PRNGKey(100 + split_i),
                           n=n_per[split])
        out[split] = (float(s.correct.mean()),
                      float(np.mean(samples_kl(ref_params, s.generation, model_cfg))))
    return out


ptx_cfg = dataclasses.replace(dcfg, ptx_coef=1.0)
dpo_ptx_policy, _ = train_dpo(ref_params, train, model_cfg, ptx_cfg, quiet=True, ptx=corpus_arrays(tok))
dpo_rows = {"sft": accuracy_and_kl(ref_params), "dpo": accuracy_and_kl(dpo_policy),
            "dpo-ptx": accuracy_and_kl(dpo_ptx_policy)}
print(f"{'gold accuracy (lesson 06)':<26}{'train':>8}{'held-out':>10}")
for name, m in dpo_rows.items():
    print(f"{name:<26}{m['train'][0]:>8.3f}{m['heldout'][0]:>10.3f}")

# %% [markdown]
# ## 2. Final norm only: PPO
#
# Every run so far updated all ~0.35M weights.  On the train prompts that works, but on held-out
# countries it gains little or loses: with every weight free, PPO can make a change *specific to
# each train country* (this prompt -> that capital), which says nothing about Portugal.  Now
# restrict PPO to the final LayerNorm ln_f (`PPOConfig.trainable="final_norm"`: its gain and
# bias, 2 x d_model = 192 numbers, a parameter-efficient regime in the spirit of BitFit, Ben Zaken
# et al. 2022).  ln_f sits under every prompt at once, so whatever PPO learns there must hold for
# every prompt at once.  The same run as lesson 05's main one otherwise (beta = 0.5) plus the ptx
# term (gamma = 1), with a learning rate fit for 192 numbers of order 1 (3e-2, picked like beta by
# a small sweep: 1e-2 moved too little, 1e-1 drifted further from pi_ref for the same gain) and
# 20 iterations instead of 30 (its rollouts' gold accuracy levels off by then).
#
# Which shared change does the reward favour?  The SFT model's temperature-1 samples are right
# only ~40% of the time on held-out countries, but its samples at lower temperatures (printed
# below) are right far more often: the knowledge is there, the samples are spread out.
# So the fair baseline is not pi_ref at temperature 1 but pi_ref at a LOWER temperature, which
# needs no preferences at all.  Its cost is a KL too: KL(pi_T || pi_ref), estimated on samples of
# pi_T exactly like the policies' KL.  And temperature lives inside the final-norm regime: the
# logits are linear in ln_f's (g, b), so
#
#     logits = (g * xhat + b) W^T   =>   (g/T, b/T) gives logits / T:   pi_ref at temperature T
#
# (`model.tempered`).  Final-norm PPO can reach every point of the temperature curve, and 190 other
# directions besides: does it find anything better than a temperature?  The figure puts the PPO
# policies on the same held-out axes: accuracy against KL, with the temperature curve as the
# reference line.

# %%
FINAL_NORM_LR = 3e-2
fn_cfg = dataclasses.replace(ppo_cfg, trainable="final_norm", lr=FINAL_NORM_LR, ptx_coef=1.0,
                             n_iterations=max(2 * ppo_cfg.n_iterations // 3, 1))
fn_state, _ = ppo_train.train_ppo(ref_params, ref_params, rm_params, model_cfg, tok, fn_cfg, quiet=True)
fn_eval = evaluate(fn_state.train_state.params["policy"])
tempered_ref = {T: evaluate(tempered(ref_params, T), ("train", "heldout")) for T in TEMPERATURES}
rows = [("SFT (pi_ref), T = 1", ppo_results["SFT"]),
        *[(f"pi_ref at T = {T}", tempered_ref[T]) for T in TEMPERATURES],
        ("PPO, all weights (main run)", ppo_results["PPO"]),
        ("PPO-ptx, final norm only", fn_eval)]
print(f"{'gold accuracy (KL to pi_ref, nats)':<34}{'train':>16}{'held-out':>16}")
for name, ev in rows:
    print(f"{name:<34}" + "".join(f"{ev[s]['gold/accuracy']:>9.3f} ({abs(ev[s]['kl']):4.2f})"
                                   for s in ("train", "heldout")))
sft_eval = ppo_results["SFT"]
print(f"held-out gold accuracy: SFT {sft_eval['heldout']['gold/accuracy']:.3f} -> final-norm PPO-ptx "
      f"{fn_eval['heldout']['gold/accuracy']:.3f} at KL {fn_eval['heldout']['kl']:.2f} nats "
      f"(OOD {sft_eval['ood']['gold/accuracy']:.3f} -> {fn_eval['ood']['gold/accuracy']:.3f})")

fig, ax = plt.subplots(figsize=(6.4, 4.4))
curve = [(0.0, sft_eval["heldout"]["gold/accuracy"])] + [
    (tempered_ref[T]["heldout"]["kl"], tempered_ref[T]["heldout"]["gold/accuracy"]) for T in TEMPERATURES]
ax.plot(*zip(*curve), "k--", marker="o", label="pi_ref at T = 1, 0.8, 0.7, 0.6")
for name, ev in rows[-2:]:
    ax.scatter(ev["heldout"]["kl"], ev["heldout"]["gold/accuracy"], s=60, label=name, zorder=3)
ax.set(xlabel="KL(pi || pi_ref) on held-out prompts (nats / response)",
       ylabel="held-out gold accuracy", title="What carries to countries PPO never saw")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "09_what_transfers.png", dpi=120)
print(f"wrote {FIGURES / '09_what_transfers.png'}")

# %% [markdown]
# Read the table with the temperature rows in mind.  Restricted to ln_f, PPO lifts held-out
# accuracy far above the SFT model's, where the all-weights run lowered it: the one change it can
# make everywhere, and that the reward model pays for on every train prompt, is *commit to your
# most likely answer*.  And that is what a lower temperature does.
#
# ## 3. Final norm only: DPO
#
# The same experiment for DPO: the DPO-ptx run again, but only ln_f trains
# (`DPOConfig(trainable="final_norm")`, at lr 0.1 instead of 1e-4; picked by a small sweep on the
# gold reward, 3e-2 moved too little in 60 steps).  A change to ln_f acts on every prompt, so DPO
# can only learn what holds across the train pairs: the chosen answers are, far more often than
# the rejected ones, the answer pi_ref itself finds most likely.  The baseline is again pi_ref at a
# lower temperature, measured with lesson 06's keys.

# %%
dpo_fn_cfg = dataclasses.replace(ptx_cfg, trainable="final_norm", lr=0.1)
dpo_fn_policy, _ = train_dpo(ref_params, train, model_cfg, dpo_fn_cfg, quiet=True, ptx=corpus_arrays(tok))
dpo_table = {"SFT (pi_ref), T = 1": dpo_rows["sft"],
             **{f"pi_ref at T = {T}": accuracy_and_kl(tempered(ref_params, T)) for T in TEMPERATURES},
             "DPO-ptx, all weights": dpo_rows["dpo-ptx"],
             "DPO-ptx, final norm only": accuracy_and_kl(dpo_fn_policy)}
print(f"{'gold accuracy (KL, nats)':<28}{'train':>16}{'held-out':>16}")
for name, m in dpo_table.items():
    print(f"{name:<28}" + "".join(f"{m[s][0]:>9.3f} ({abs(m[s][1]):4.2f})" for s in ("train", "heldout")))
fn_held = dpo_table["DPO-ptx, final norm only"]["heldout"]
print(f"held-out gold accuracy: SFT {dpo_table['SFT (pi_ref), T = 1']['heldout'][0]:.3f} -> final-norm "
      f"DPO-ptx {fn_held[0]:.3f} at KL {fn_held[1]:.2f} nats")
fn_pairs = evaluate_pairs(dpo_fn_policy, heldout, model_cfg, dpo_fn_cfg)
all_pairs = evaluate_pairs(dpo_policy, heldout, model_cfg, dcfg)
print(f"implicit reward on the held-out-country pairs (lesson 04's, rater-labelled): accuracy "
      f"{fn_pairs['rewards/accuracies']:.3f} (final norm) vs {all_pairs['rewards/accuracies']:.3f} (all weights)")

# %% [markdown]
# As with PPO: restricted to ln_f, DPO's gain on the train prompts carries to the held-out
# countries, in the direction a temperature moves: compare it with the temperature rows at a
# similar KL.  No pair ever mentioned Portugal; the knowledge came from pretraining, the
# preferences only taught the model to trust it.  The implicit reward says the same from the other
# side: on the held-out-country pairs it agrees with the rater more often than the all-weights
# policy's (printed above): for pi_ref sharpened to temperature T,
#
#     log pi_T(y_t|.) - log pi_ref(y_t|.) = (1/T - 1) log pi_ref(y_t|.) + c(context),
#
# so the implicit reward is "what pi_ref finds likely".
#
# ## 4. What this says
#
# Aligned on 32 train countries, the all-weights policies learn something specific to those
# countries and carry little to the other 8.  Restricted to the final norm, PPO and DPO land near
# pi_ref's temperature curve on held-out prompts: the shared change the preferences pay for is,
# to a first approximation, *sharpen pi_ref*.  Whether one run sits a little above or below the
# curve changes from seed to seed; `benchmarks/heldout_seeds.py` trains every policy of this lesson
# for several seeds and prints the spread.  No new knowledge either: nothing here teaches the model
# a capital it did not know (OOD stays low); the preferences taught it to trust what pretraining
# put there.  RLHF'd models are known to become more confident and less diverse (Kirk et al. 2024;
# the GPT-4 report's calibration plot); in this world that effect is most of what generalises.

# %%
print(f"lesson 09 done in {time.time() - t_start:.0f} s")
