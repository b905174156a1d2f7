# %% [markdown]
# # Lesson 04: the reward model
#
# RLHF never sees the gold reward r*.  It sees a rater comparing two answers.  This lesson
# turns comparisons into a scalar reward r_phi(x, y) that PPO (lesson 05) can maximise:
#
# 1. **collect** pairs y1, y2 ~ pi_SFT(.|x) and let the simulated rater pick a winner;
# 2. **fit** r_phi = (SFT transformer + linear head) with the Bradley-Terry loss, in two
#    regimes: head only (a linear probe of the frozen SFT model) and full fine-tuning;
# 3. **check** it against what real RLHF cannot see: the gold reward, on held-out and OOD
#    prompts, and find where it goes wrong (the seed of reward hacking in lesson 05);
# 4. **normalise** it and save it for lesson 05.
#
# Run with `python lessons/04_reward_model.py` (`--smoke` for the test run,
# `--prefs PATH` to train on your own preference JSONL in the same format).

# %%
import dataclasses
import time
from collections import Counter

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import paths
from minirlhf import reward as rm
from minirlhf.bradley_terry import bradley_terry_loss, grouped_bradley_terry_loss
from minirlhf.data import describe_preferences, read_preferences
from minirlhf.pretrain import SEQ_LEN, ensure_tokenizer
from minirlhf.reward_data import (
    encode_responses,
    ensure_preferences,
    load_groups,
    load_preference_data,
)
from minirlhf.sft import ensure_sft_model
from minirlhf.worlds.capitals import (
    CAPITAL,
    FACTS,
    SPLITS,
    CapitalsConfig,
    capitals_named,
    parse_country,
)

t_start = time.time()
PREFS_FLAG = {"default": None,
              "help": "train on this preference JSONL (prompt/chosen/rejected strings [+ *_ended, ...], "
                      "or TRL's single-turn conversational messages; see minirlhf/data.py); "
                      "validation, held-out and OOD evaluation still use the collected capitals pairs"}
args = paths.lesson_args(extra=(("--prefs", PREFS_FLAG),))
if args.prefs is not None:
    read_preferences(args.prefs)   # a bad file fails now, naming its line, not after training
RUNS, FIGURES = paths.runs_dir(args.smoke), paths.figures_dir(args.smoke)
rcfg = rm.RewardConfig.smoke() if args.smoke else rm.RewardConfig()
rcfg = dataclasses.replace(rcfg, seed=args.seed)
tau = CapitalsConfig().rater_tau
tok = ensure_tokenizer(args.smoke)
sft_params, cfg = ensure_sft_model(args.smoke, args.seed)
print(f"smoke={args.smoke} seed={args.seed}  runs -> {RUNS}  figures -> {FIGURES}")

# %% [markdown]
# ## 1. Collecting comparisons
#
# For each train prompt x the SFT model samples 20 groups of K = 8 answers at temperature 1,
# and the rater of lesson 01 compares every pair (y1, y2) inside a group:
#
#     P(y1 > y2 | x) = sigmoid((r*(x, y1) - r*(x, y2)) / tau),   tau = 0.5.
#
# This is InstructGPT's recipe (Ouyang et al. 2022, sec. 3.5): labellers ranked K = 4..9
# responses at once, which gives C(K, 2) comparisons for the price of K samples, 28 instead of
# 4 independent pairs from the same 8 answers.  (Our rater answers each comparison on its own,
# so every label follows the Bradley-Terry model exactly.)
#
# The dataset D holds triplets (x, y_w, y_l) with metadata: the group, the gold rewards, the
# rater's probability p_chosen, whether each response ended with `<eos>` (a truncated answer
# must stay truncated when re-encoded), and the split.  Comparisons of two identical responses
# are skipped: their label is a coin flip that carries no information.  Three more files of
# independent pairs (groups of 2), 24 pairs per prompt, are never trained on: **valid** (fresh pairs on the same train prompts: the
# in-distribution held-out set, used to pick the regime and to draw the training curves),
# **heldout** (countries never in SFT) and **ood** (a new question template).
#
# No reward model can beat the rater's own consistency: on a pair with probability p the
# best possible accuracy is max(p, 1 - p).  Its mean is the **Bayes rate**.

# %%
pref_paths = ensure_preferences(args.smoke, args.seed)   # runs[/smoke]/[seed{s}/]preferences_{split}.jsonl
if args.prefs is not None:
    pref_paths = {**pref_paths, "train": args.prefs}  # validated by data.read_preferences
data = load_preference_data(tok, pref_paths, SEQ_LEN, model_max_len=cfg.max_len)   # pairs, every split
groups = load_groups(tok, pref_paths["train"])   # [G, K, T], T: as wide as the file needs
records = {split: read_preferences(path) for split, path in pref_paths.items()}   # parsed once, cached
for split, d in data.items():
    print(f"{split:8s} {describe_preferences(records[split])} from {pref_paths[split]}  "
          f"Bayes rate {np.mean(np.maximum(d.p_chosen, 1 - d.p_chosen)):.3f}")
print(f"train as groups: {groups.tokens.shape[0]} groups of up to K = {groups.tokens.shape[1]} distinct "
      f"responses, {groups.wins.sum(axis=(1, 2)).mean():.1f} comparisons per group")
for r in records["train"][:4]:
    print(f"  {r['prompt']!r}\n     chosen   {r['chosen']!r}\n     rejected {r['rejected']!r}"
          f"  p_chosen={r.get('p_chosen', float('nan')):.2f}")

# %% [markdown]
# ## 2. The reward model and the Bradley-Terry loss
#
# The reward model is the SFT transformer with a linear head read at the **last non-pad
# token** (the `<eos>` of a finished answer; by then the model has seen the whole answer):
#
#     r_phi(x, y) = w . h_phi(x, y)_last + b.
#
# It is fitted by maximum likelihood under the Bradley-Terry model (InstructGPT eq. 1):
#
#     L(phi) = -E_{(x, y_w, y_l) ~ D} [ log sigmoid(r_phi(x, y_w) - r_phi(x, y_l)) ].
#
# Only differences of rewards enter, so r_phi is identified up to a constant; and since the
# rater used sigmoid(dr*/tau), the best r_phi is r*/tau + const (scale 2 here).
# The comparisons of one group are one batch element, as in InstructGPT:
#
#     L_g(phi) = -1/|C_g| sum_{(y_w, y_l) in C_g} log sigmoid(r_phi(x, y_w) - r_phi(x, y_l)),
#
# so each of the K answers is scored once per step however many comparisons it is in, and
# all of a prompt's comparisons move the model together (InstructGPT found that shuffling the
# comparisons as independent pairs overfits: each answer is then seen K - 1 times per epoch).
# `rm.reward_loss` scores a batch of 8 groups x 8 answers in one forward pass; `regime="head"` puts a
# stop_gradient on the backbone and masks its optimizer updates (the frozen backbone stays
# bit-for-bit the SFT model), `regime="full"` trains everything.
#
# **The loss on five hand-made pairs.**  Before the transformer: the package's
# `bradley_terry_loss` and its `jax.grad` on five pairs of made-up rewards, beside the same numbers
# from the equation in plain NumPy.  With m_i = r_w,i - r_l,i and B pairs,
#
#     L = -(1/B) sum_i log sigma(m_i),    dL/dr_w,i = -sigma(-m_i) / B,    dL/dr_l,i = +sigma(-m_i) / B:
#
# each pair is pushed apart with weight sigma(-m_i), the probability the model gives to the label
# being the other way round.

# %%
sigmoid = lambda z: 1 / (1 + np.exp(-z))
r_w = np.array([1.0, 0.5, -0.2, 2.0, 0.3])      # r_phi(x, y_w) of five hand-made pairs  [B]
r_l = np.array([0.0, 0.8, -1.0, -1.0, 0.3])     # r_phi(x, y_l)                          [B]
bt = lambda a, b: bradley_terry_loss(a, b)[0]
m = r_w - r_l                                     # [B]
print(f"{'':<8}{'package':>10}{'by hand':>10}")
r_w32, r_l32 = jnp.asarray(r_w, jnp.float32), jnp.asarray(r_l, jnp.float32)
print(f"{'loss':<8}{float(bt(r_w32, r_l32)):>10.4f}{float(-np.mean(np.log(sigmoid(m)))):>10.4f}")
g_w, g_l = np.asarray(jax.grad(bt, argnums=(0, 1))(r_w32, r_l32))
print(f"{'pair':>4}{'m_i':>7}{'dL/dr_w package':>17}{'by hand':>9}{'dL/dr_l package':>17}{'by hand':>9}")
for i in range(len(m)):
    print(f"{i:>4}{float(m[i]):>7.2f}{float(g_w[i]):>17.4f}{float(-sigmoid(-m[i]) / len(m)):>9.4f}"
          f"{float(g_l[i]):>17.4f}{float(sigmoid(-m[i]) / len(m)):>9.4f}")

# %% [markdown]
# The grouped loss on one hand-made group of K = 3 answers that the rater ranked y_0 > y_1 > y_2
# (three comparisons, W_01 = W_02 = W_12 = 1): the mean over the group's comparisons, by hand a
# loop over them, each adding -sigma(-(r_i - r_j)) / |C| to dL/dr_i and the opposite to dL/dr_j.

# %%
group_r = np.array([[0.4, 0.9, -0.3]])                         # r_phi of the K = 3 answers  [G=1, K]
wins = np.array([[[0, 1, 1], [0, 0, 1], [0, 0, 0]]], np.float32)     # W_ij = 1: y_i beat y_j  [1, K, K]
loss_g, grad_g = jax.value_and_grad(lambda r: grouped_bradley_terry_loss(r, jnp.asarray(wins))[0])(
    jnp.asarray(group_r, jnp.float32))
grad_g = np.asarray(grad_g)
loss_h, grad_h = 0.0, [0.0, 0.0, 0.0]
comparisons = [(0, 1), (0, 2), (1, 2)]
for i, j in comparisons:
    loss_h += -np.log(sigmoid(group_r[0, i] - group_r[0, j])) / len(comparisons)
    grad_h[i] += -sigmoid(-(group_r[0, i] - group_r[0, j])) / len(comparisons)
    grad_h[j] += sigmoid(-(group_r[0, i] - group_r[0, j])) / len(comparisons)
print(f"{'':<10}{'package':>10}{'by hand':>10}")
print(f"{'loss':<10}{float(loss_g):>10.4f}{float(loss_h):>10.4f}")
for k in range(3):
    print(f"{f'dL/dr_{k}':<10}{float(grad_g[0, k]):>10.4f}{float(grad_h[k]):>10.4f}")

# %%
k_head, k_ref = jax.random.split(jax.random.PRNGKey(args.seed))
init = rm.init_reward_model(k_head, sft_params, cfg)
trained, histories, train_time = {}, {}, {}
for regime in rm.REGIMES:
    t0 = time.time()
    trained[regime], histories[regime] = rm.train_reward_model(
        init, groups, cfg, rcfg, regime, eval_data=data["valid"])
    train_time[regime] = time.time() - t0
    print(f"{regime}: {rcfg.steps(regime)} steps in {train_time[regime]:.1f} s")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
smooth = lambda v, k=10: np.convolve(v, np.ones(k) / k, mode="valid") if len(v) >= k else v
for regime, h in histories.items():
    line, = ax1.plot(smooth(h["loss"]), alpha=0.8, label=f"{regime}: train (moving avg)")
    ax1.plot(h["eval_step"] - 1, h["eval_loss"], "o--", color=line.get_color(), label=f"{regime}: valid")
    ax2.plot(smooth(h["accuracy"]), color=line.get_color(), alpha=0.8, label=f"{regime}: train")
    ax2.plot(h["eval_step"] - 1, h["eval_accuracy"], "o--", color=line.get_color(), label=f"{regime}: valid")
ax2.axhline(np.mean(np.maximum(data["valid"].p_chosen, 1 - data["valid"].p_chosen)), color="gray",
            ls=":", label="valid Bayes rate")
ax1.set(xlabel="optimizer step", ylabel="Bradley-Terry loss (nats / pair)", title="reward model training")
ax2.set(xlabel="optimizer step", ylabel="accuracy on the rater's labels", title="accuracy")
ax1.legend(fontsize=8)
ax2.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "04_reward_training.png", dpi=120)
plt.close(fig)
print(f"wrote {FIGURES / '04_reward_training.png'}")

# %% [markdown]
# ## 3. Evaluation: the rater's labels and the gold reward
#
# * `accuracy`: agreement with the rater's labels (TRL's name); compare with the Bayes rate,
#   and with `gold_label_acc`, the accuracy of r* itself on the same finite set of labels.
# * `gold_agree`: fraction of pairs where sign(r_phi(y_w) - r_phi(y_l)) = sign(r*(y_w) - r*(y_l))
#   (gold ties excluded): does the RM rank like the truth, ignoring the rater's noise?
# * `pearson`: correlation of r_phi and r* over all responses of the split.
# * `canonical`: for every country, is " The capital of X is <right>." scored above the same
#   sentence with the neighbour's capital (the web's favourite mistake)?

# %%
evals = {g: {s: rm.evaluate_preferences(trained[g], cfg, d) for s, d in data.items()} for g in rm.REGIMES}
canon = {g: {s: rm.canonical_ranking(trained[g], cfg, tok, s) for s in data} for g in rm.REGIMES}
cols = ("accuracy", "bayes_rate", "gold_label_accuracy", "gold_agreement", "gold_pearson", "loss")
print(f"{'regime':6s} {'split':8s} " + " ".join(f"{c[:14]:>14s}" for c in cols) + f" {'canonical':>10s}")
for g in rm.REGIMES:
    for s in data:
        m = evals[g][s].metrics
        print(f"{g:6s} {s:8s} " + " ".join(f"{m[c]:14.3f}" for c in cols) + f" {canon[g][s]['accuracy']:10.3f}")
best = rm.select_regime({g: {s: evals[g][s].metrics for s in evals[g]} for g in rm.REGIMES})
print(f"\nkept for lesson 05: the '{best}' regime (lower Bradley-Terry loss on the valid pairs)")

# %% [markdown]
# How to read the table: compare `accuracy` (on the rater's noisy labels) with `bayes_rate`,
# the best any reward model can do on those labels, and `gold_agreement` (does r_phi order the
# pair like the gold reward?).  The `valid` row is the honest in-distribution number: the same
# prompts as training, pairs it never saw.
#
# * **Head only underfits.**  A linear probe of the frozen SFT model stays near 0.67 on valid
#   pairs against a Bayes rate of 0.86: the SFT model's last hidden state does not carry "this
#   capital is right for this country" as a direction a linear head can read.
# * **Full fine-tuning fits the distribution** (valid accuracy 0.83 against the Bayes rate of
#   0.86, gold agreement above 0.9, and it ranks the right canonical answer above the
#   neighbour's for all 32 train countries) and is kept: it has the lower valid loss.  The
#   K-wise comparisons help it get there: a group of 8 samples gives up to 28 comparisons instead
#   of 4 independent pairs, and each group's comparisons move the model together (section 2).
# * **Neither generalises to countries it never saw**, and the full model is worse than chance
#   there: it learned which capital words appear in good answers, and a held-out capital only
#   ever appeared in the train responses as a *wrong* answer (section 6).
#
# The regime is chosen on the valid pairs' loss alone, as a real RLHF pipeline could: the gold
# reward and the held-out / OOD pairs only evaluate the choice.

# %% [markdown]
# ## 4. Calibration
#
# A BT model does more than rank: sigmoid(r_phi(y_w) - r_phi(y_l)) is its predicted
# probability that the rater prefers y_w.  Binning pairs by that prediction, the rate at which
# the rater actually chose it should match (each pair is counted in both orders, so the plot
# is symmetric about 1/2).  We also plot the rater's true probability p in each bin, which the
# empirical rate estimates with binomial noise.  Left: the valid pairs (in distribution, never
# trained on); right: held-out countries.  Calibration is checked on
# the raw model: normalisation (section 5) rescales r_phi, after which sigmoid(dr) is no longer
# the fitted probability.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
for ax, split in zip(axes, ("valid", "heldout")):
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    for g in rm.REGIMES:
        ev = evals[g][split]
        cal = rm.calibration_bins(ev.chosen_rewards, ev.rejected_rewards, data[split].p_chosen, n_bins=10)
        line, = ax.plot(cal["predicted"], cal["empirical"], "o-", label=f"{g}: rater's labels")
        ax.plot(cal["predicted"], cal["rater_p"], "x--", color=line.get_color(), label=f"{g}: rater's true p")
    ax.set(xlabel="predicted P(rater prefers y) = sigmoid(r_phi(y) - r_phi(y'))",
           ylabel="empirical rate at which the rater preferred y", title=f"calibration on {split} pairs",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "04_calibration.png", dpi=120)
plt.close(fig)
print(f"wrote {FIGURES / '04_calibration.png'}")

# %% [markdown]
# ## 5. Normalisation, then the running example
#
# r_phi is defined up to a constant, and its scale is set by the rater's tau.  PPO adds the
# reward to a KL penalty beta * KL, so we fix both: shift and scale so that the rewards of
# fresh SFT samples on the train prompts have mean 0 and std 1,
#
#     r'(x, y) = (r_phi(x, y) - m) / s   <=>   w' = w / s,  b' = (b - m) / s,
#
# folded into the head (`rm.normalise_reward_model`).  Orderings are unchanged.  A reward of
# +1 now means "one standard deviation better than a typical SFT answer".

# %%
ref = rm.reference_rewards(trained[best], cfg, tok, sft_params, k_ref, rcfg.n_reference_per_prompt)
rm_params, stats = rm.normalise_reward_model(trained[best], ref)
ref_after = (ref - stats["mean"]) / stats["std"]
print(f"reference rewards of {len(ref)} SFT samples: mean {stats['mean']:.3f}, std {stats['std']:.3f}"
      f" -> after folding mean {ref_after.mean():.2e}, std {ref_after.std():.3f}")

prompt = "What's the capital of France?"
france = [" The capital of France is Paris.", " The capital of France is Berlin."]
enc = encode_responses(tok, [prompt] * 2, france, [True, True], SEQ_LEN)
r_fr = np.asarray(rm.score(rm_params, enc.tokens, enc.attention_mask, cfg))
for y, r in zip(france, r_fr):
    print(f"r({prompt!r}, {y!r}) = {r:+.3f}")
print(f"Paris ranked above Berlin: {bool(r_fr[0] > r_fr[1])}")

# %% [markdown]
# ## 6. Where the learned reward is wrong
#
# The reward model only saw SFT answers to train prompts.  On held-out countries and on the
# OOD template it is extrapolating.  The scatter shows r' against r* for every response in the
# evaluation pairs (train pairs for reference).
#
# Bradley-Terry only learns features that *differ within a pair*.  Both answers in a train pair
# respond to the same question and nearly always name the right country, so "does the answer
# fit the question?" is never what separates them; which capital word appears, the form, the
# length and the eos do.  The table below shows the consequence on held-out countries: the
# canonical answer with the neighbour's capital (Madrid for Portugal) often wins, because
# Madrid was a *right* answer in training (to Spain), while Lisbon only ever appeared in a
# train response as a *wrong* one (a random wrong capital in the SFT model's samples; the
# brackets count them).  And the SFT model's typical held-out answer, a fluent answer about a different
# train country ("The capital of Poland is Warsaw." to Portugal), is scored like a correct one
# (see the list of high-proxy, low-gold answers printed below).
# PPO will push the policy towards exactly such responses: this is where reward hacking
# (lesson 05) starts.  The last table below measures it: gold agreement on the pairs where
# exactly one answer is right (the capital has to fit the question) against the pairs where
# form, length and eos decide.  Only the first kind gets worse on held-out countries.

# %%
fig, ax = plt.subplots(figsize=(6, 5))
rows = []
for s, marker in (("train", "."), ("heldout", "o"), ("ood", "x")):
    ev, d = evals[best][s], data[s]
    r_n = (np.concatenate([ev.chosen_rewards, ev.rejected_rewards]) - stats["mean"]) / stats["std"]
    gold = np.concatenate([d.chosen_gold, d.rejected_gold])
    jitter = np.random.default_rng(0).uniform(-0.04, 0.04, len(gold))  # gold values are discrete
    ax.scatter(gold + jitter, r_n, s=8, alpha=0.3, marker=marker,
               label=f"{s} (pearson {rm.pearson(r_n, gold):.2f})")
    recs = records[s]
    texts = [(r["prompt"], r["chosen"]) for r in recs] + [(r["prompt"], r["rejected"]) for r in recs]
    rows += [(s, *t, rr, gg) for t, rr, gg in zip(texts, r_n, gold)]
ax.set(xlabel="gold reward r*(x, y)  (reward units, jittered)", ylabel="learned reward r'(x, y)  (SFT std units)",
       title=f"learned vs gold reward ('{best}' regime)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "04_reward_vs_gold.png", dpi=120)
plt.close(fig)
print(f"wrote {FIGURES / '04_reward_vs_gold.png'}")

# How often each capital is named in a right / a wrong answer among the train comparisons'
# responses (a response counts once per comparison it is in).
named_right, named_wrong = Counter(), Counter()
for split, prompt, text, _, g in rows:
    try:
        country = parse_country(prompt)
    except ValueError:                       # not a capitals prompt (a user's own --prefs file)
        continue
    for cap in capitals_named(text) if split == "train" else ():
        (named_right if cap == CAPITAL[country] else named_wrong)[cap] += 1
print("\nheld-out countries: canonical answer with the right capital vs with the neighbour's capital"
      "\n(in brackets: times named in a right / wrong answer in the train comparisons)")
hc = canon[best]["heldout"]
for c, r_right, r_wrong in zip(SPLITS["heldout"], hc["right"], hc["wrong"]):
    right, wrong = CAPITAL[c], CAPITAL[FACTS[c][1]]
    print(f"  {c:9s} {right:11s} [{named_right[right]:3d}/{named_wrong[right]:3d}] "
          f"{(r_right - stats['mean']) / stats['std']:+.2f}   vs {wrong:9s} "
          f"[{named_right[wrong]:3d}/{named_wrong[wrong]:3d}] {(r_wrong - stats['mean']) / stats['std']:+.2f}")

print(f"\nper split ('{best}'): gold agreement / pearson / canonical right-vs-neighbour")
for s in data:
    m = evals[best][s].metrics
    print(f"  {s:8s} {m['gold_agreement']:.3f} / {m['gold_pearson']:.3f} / {canon[best][s]['accuracy']:.3f}")
print(f"\ngold agreement ('{best}') split by what separates the pair: exactly one answer right"
      "\n(which capital fits the question) vs both right or both wrong (form, length, eos):")
for s in data:
    ev, d = evals[best][s], data[s]
    fit = rm.differ_in_correctness(records[s])
    parts = [f"{name} {rm.gold_agreement(ev.chosen_rewards[m], ev.rejected_rewards[m], d.chosen_gold[m], d.rejected_gold[m]):.3f}"
             f" ({m.sum()} pairs)" for name, m in (("one right", fit), ("same correctness", ~fit))]
    print(f"  {s:8s} " + "   ".join(parts))
print("\nhigh proxy, low gold: wrong answers (r* <= -1) that the RM scores highest, held-out/OOD:")
seen = set()
for i in sorted(range(len(rows)), key=lambda i: -rows[i][3]):
    split, prompt, text, r_phi, g = rows[i]
    if split == "train" or g > -1 or (prompt, text) in seen:
        continue
    seen.add((prompt, text))
    print(f"  [{split}] {prompt!r} -> {text!r}\n      r' = {r_phi:+.2f}   r* = {g:+.2f}")
    if len(seen) == 5:
        break

# %% [markdown]
# ## 7. Saving the reward model for lesson 05
#
# `runs/reward.ckpt` holds {"backbone", "head"} (normalised head) with the normalisation stats
# and the metrics in its meta (trained with `--prefs`, it goes to `reward-<digest of the
# file>.ckpt` instead, and the course's model stays); `rm.ensure_reward_model(smoke)` loads it
# (or reruns this stage, also when it was made from other data, seed or config),
# and `rm.score(rm_params, tokens, attention_mask, cfg)` scores PPO's left-padded generations.

# %%
meta = {"regime": best, "normalisation": stats, "train_prefs": str(pref_paths["train"]),
        "metrics": {g: {s: evals[g][s].metrics for s in data} for g in rm.REGIMES}}
print(f"saved {rm.save_reward_model(args.smoke, rm_params, cfg, meta, rcfg, pref_paths)}")
print(f"lesson 04 done in {time.time() - t_start:.1f} s")

# %% [markdown]
# ## Takeaways
#
# * A reward model is a classifier of comparisons: BT on noisy labels can at best reach the
#   rater's Bayes rate, and held-out accuracy should be judged against it, not against 1.
# * Agreement with the rater is not agreement with the truth: gold agreement and correlation
#   drop off the training distribution (held-out countries, OOD template).
# * Fitting the distribution and generalising beyond it pull apart: the fully fine-tuned model
#   is the better reward model for the train prompts (valid pairs) and the worse one for
#   countries it never saw.  Choose on a validation set from the distribution you will optimise
#   on, and know that it says nothing about the rest.
# * The learned reward ranks some wrong answers high.  Maximising it (lesson 05) will find them.
