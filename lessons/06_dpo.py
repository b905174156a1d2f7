# %% [markdown]
# # Lesson 06: direct preference optimisation (DPO) — alignment without a reward model
#
# Lesson 04 fitted a reward model to preference pairs and lesson 05 optimised the policy
# against it with PPO.  DPO (Rafailov et al. 2023) skips both: it trains the policy directly on
# the pairs with a loss as simple as a logistic regression, and still optimises the same
# KL-regularised objective.  We start from the SFT policy pi_ref (lesson 03) and use the train
# split of lesson 04's comparisons (x, y_w, y_l), collected from pi_ref and labelled by the
# rater: every pair of distinct answers inside groups of 8, about 15,000 comparisons.  DPO's loss
# is a sum over comparisons, so it reads them as pairs; the reward model used the same comparisons.
#
# ## 1. From the RL objective to a classification loss
#
# RLHF maximises, for each prompt x,
#
#     J(pi) = E_{y ~ pi(.|x)}[ r(x, y) ] - beta KL( pi(.|x) || pi_ref(.|x) ).
#
# Over ALL distributions pi this has a closed-form maximiser (write J as
# -beta KL(pi || pi_ref exp(r/beta)/Z) + beta log Z; a KL is minimal, 0, when its arguments agree):
#
#     pi*(y|x) = pi_ref(y|x) exp( r(x, y) / beta ) / Z(x),    Z(x) = sum_y pi_ref(y|x) exp(r(x, y)/beta).
#
# Z(x) sums over every possible response: intractable.  But invert the equation:
#
#     r(x, y) = beta log pi*(y|x)/pi_ref(y|x) + beta log Z(x).
#
# The reward is a log-ratio of policies plus a term that depends on the PROMPT only.  The
# Bradley-Terry model of the preferences only looks at reward differences for the same x,
#
#     P(y_w > y_l | x) = sigma( r(x, y_w) - r(x, y_l) ),
#
# so beta log Z(x) cancels.  Parametrise the reward by the policy itself,
# r_theta = beta log pi_theta/pi_ref, and maximise the likelihood of the labels:
#
#     L_DPO(theta) = -E_{(x, y_w, y_l)} log sigma( beta log pi_theta(y_w|x)/pi_ref(y_w|x)
#                                                 - beta log pi_theta(y_l|x)/pi_ref(y_l|x) )    (eq. 7)
#
# **What the two log-ratio terms are.**  Each is a log-likelihood ratio of ONE whole response,
#
#     log pi_theta(y|x)/pi_ref(y|x) = sum_{t in y} [ log pi_theta(y_t|x, y_<t) - log pi_ref(y_t|x, y_<t) ],
#
# summed over the response's tokens (its eos included).  These terms are sometimes described as
# KL divergences; they are not.  KL(pi_theta || pi_ref) is the EXPECTATION of this log-ratio over
# y ~ pi_theta: always >= 0.  A single term is a random variable that can have either sign, and
# DPO drives the rejected response's term negative on purpose.  (Even averaged over the
# dataset it is not the KL: y_w and y_l were sampled from pi_ref, not from pi_theta.)

# %%
import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import dpo, paths
from minirlhf.dpo_train import (
    DPOConfig,
    encode_pairs,
    evaluate_pairs,
    implicit_rewards,
    load_pair_arrays,
    save_dpo_policy,
    sequence_logratios,
    train_dpo,
    with_reference_logps,
)
from minirlhf.evaluation import gold_metrics, sample_answers
from minirlhf.exact import world as exact
from minirlhf.exact.tabular import all_sequence_logprobs
from minirlhf.exact.training import TabularDPOConfig, run_dpo
from minirlhf.pretrain import ensure_tokenizer
from minirlhf.reward_data import ensure_preferences
from minirlhf.sft import ensure_sft_model
from minirlhf.worlds import capitals as cw

t_start = time.time()
args = paths.lesson_args()
RUNS, FIGURES = paths.runs_dir(args.smoke), paths.figures_dir(args.smoke)
dcfg = dataclasses.replace(DPOConfig.smoke() if args.smoke else DPOConfig(), seed=args.seed)
tok = ensure_tokenizer(args.smoke)
sft_params, model_cfg = ensure_sft_model(args.smoke, args.seed)   # pi_ref (lesson 03; built if missing)
pref_paths = ensure_preferences(args.smoke, args.seed)            # lesson 04's pairs (built if missing)
N_EVAL = 1 if args.smoke else 8                               # samples per train prompt (x4 on the 8-prompt splits)
print(dcfg)

# %% [markdown]
# ## 2. The loss on four hand-made pairs
#
# Before any transformer: the package's pure functions on four pairs of hand-made summed
# log-probs (beta = 0.1), beside the same numbers computed here from the equations with plain
# NumPy.  With h = log pi_theta/pi_ref(y_w) - log pi_theta/pi_ref(y_l) per pair,
#
#     implicit rewards      r_w = beta log pi_theta(y_w)/pi_ref(y_w),   r_l likewise
#     DPO  (eq. 7)          l = -log sigma(beta h)              dl/d log pi_theta(y_w) = -beta sigma(-beta h)
#     cDPO (eps)            l = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
#     IPO  (Azar eq. 17)    l = (h - 1/(2 beta))^2              dl/d log pi_theta(y_w) = 2 (h - 1/(2 beta))
#
# and each batch loss is the mean over pairs, so its gradient carries a factor 1/B.
# `dpo.preference_losses(h, beta, loss_type, label_smoothing)` returns the per-pair losses: the
# one place where the variant is chosen, used by the transformer, the exact world and lesson 08.

# %%
beta_toy, eps_toy = 0.1, 0.1
pc = np.array([-5.0, -7.2, -3.1, -9.0])    # log pi_theta(y_w|x), summed over the response [B]
pr = np.array([-6.0, -6.5, -4.0, -8.0])    # log pi_theta(y_l|x)                           [B]
rc = np.array([-5.5, -7.0, -3.6, -9.5])    # log pi_ref(y_w|x)                             [B]
rr = np.array([-5.0, -7.0, -4.0, -9.0])    # log pi_ref(y_l|x)                             [B]
sigmoid = lambda z: 1 / (1 + np.exp(-z))
h_hand = (pc - rc) - (pr - rr)                                             # [B]


@jax.jit
def package_toy(pc, pr, rc, rr):
    """The package's numbers on the toy, as one compiled program: DPO and IPO losses with their
    gradients in log pi_theta(y_w|x), DPO's metrics, and the per-pair losses of each variant."""
    (dpo_loss, metrics), g_dpo = jax.value_and_grad(dpo.dpo_loss, has_aux=True)(pc, pr, rc, rr, beta_toy)
    ipo_loss, g_ipo = jax.value_and_grad(lambda a: dpo.ipo_loss(a, pr, rc, rr, beta_toy)[0])(pc)
    h = dpo.preference_logratios(pc, pr, rc, rr).h
    per_pair = {"dpo": dpo.preference_losses(h, beta_toy),
                "cdpo": dpo.preference_losses(h, beta_toy, label_smoothing=eps_toy),
                "ipo": dpo.preference_losses(h, beta_toy, "ipo")}
    return dpo_loss, metrics, g_dpo, ipo_loss, g_ipo, per_pair


dpo_pkg, m_pkg, g_dpo, ipo_pkg, g_ipo, per_pair_pkg = jax.device_get(package_toy(pc, pr, rc, rr))
by_hand = {
    "DPO loss": (dpo_pkg, np.mean(-np.log(sigmoid(beta_toy * h_hand)))),
    "IPO loss": (ipo_pkg, np.mean((h_hand - 1 / (2 * beta_toy)) ** 2)),
    "rewards/chosen": (m_pkg["rewards/chosen"], np.mean(beta_toy * (pc - rc))),
    "rewards/rejected": (m_pkg["rewards/rejected"], np.mean(beta_toy * (pr - rr))),
    "rewards/accuracies": (m_pkg["rewards/accuracies"], np.mean(beta_toy * (pc - rc) > beta_toy * (pr - rr)))}
print(f"{'':<20}{'package':>10}{'by hand':>10}")
for name, (pkg, hand) in by_hand.items():
    print(f"{name:<20}{float(pkg):>10.4f}{float(hand):>10.4f}")
print(f"\n{'pair':>4}{'h':>7}{'dDPO/dlogpi_w package':>23}{'by hand':>10}{'dIPO/dlogpi_w package':>23}{'by hand':>10}")
for i in range(4):
    print(f"{i:>4}{float(h_hand[i]):>7.2f}{float(g_dpo[i]):>23.4f}"
          f"{float(-beta_toy * sigmoid(-beta_toy * h_hand[i]) / 4):>10.4f}"
          f"{float(g_ipo[i]):>23.4f}{float(2 * (h_hand[i] - 1 / (2 * beta_toy)) / 4):>10.4f}")
per_pair = {"dpo": (per_pair_pkg["dpo"], -np.log(sigmoid(beta_toy * h_hand))),
            "cdpo": (per_pair_pkg["cdpo"], -(1 - eps_toy) * np.log(sigmoid(beta_toy * h_hand))
                     - eps_toy * np.log(sigmoid(-beta_toy * h_hand))),
            "ipo": (per_pair_pkg["ipo"], (h_hand - 1 / (2 * beta_toy)) ** 2)}
print(f"\nper-pair losses (dpo.preference_losses, cDPO eps = {eps_toy}): package | by hand")
print(f"{'pair':>4}" + "".join(f"{name:>20}" for name in per_pair))
for i in range(4):
    print(f"{i:>4}" + "".join(f"{float(pkg[i]):>11.4f} |{float(hand[i]):>8.4f}" for pkg, hand in per_pair.values()))

# %% [markdown]
# Pair 0 already favours y_w (h = 1.5) and gets the smallest DPO gradient; pair 1 favours y_l
# (h = -0.7) and gets the largest: DPO weights each pair by sigma(-beta h), the probability that
# the implicit reward currently ranks it WRONG.  IPO pulls every h towards the same finite target
# 1/(2 beta) = 5, with a gradient that grows linearly with the distance to it.

# %% [markdown]
# ## 3. The data, and the reference log-probs computed once
#
# Each pair is encoded twice (chosen row, rejected row), right-padded, with a response mask that
# is 1 exactly on the response tokens and the final eos.  A response that was cut by the length
# limit when it was sampled is encoded without eos: appending one would score a different,
# finished response.
#
# pi_ref never changes, so log pi_ref(y_w|x) and log pi_ref(y_l|x) are computed once for the whole
# dataset (each distinct answer once: one answer is in up to 7 comparisons of its group) and
# stored as two more columns of it.  The training step never sees pi_ref's weights:
# it cannot update them, and a step costs one forward/backward of pi_theta on the [2B, T] batch
# (chosen and rejected concatenated) instead of an extra reference forward pass each time.

# %%
t0 = time.time()
train = with_reference_logps(load_pair_arrays(tok, pref_paths["train"], model_cfg), sft_params, model_cfg)
heldout = with_reference_logps(load_pair_arrays(tok, pref_paths["heldout"], model_cfg), sft_params, model_cfg)
n_pairs, width = train["chosen_tokens"].shape
print(f"{n_pairs} train pairs, {len(heldout['chosen_tokens'])} held-out pairs, width {width} tokens; "
      f"reference log-probs cached in {time.time() - t0:.1f} s")
print(f"mean log pi_ref(y_w|x) = {train['reference_chosen_logps'].mean():.2f}, "
      f"mean log pi_ref(y_l|x) = {train['reference_rejected_logps'].mean():.2f} nats")

# %% [markdown]
# ## 4. Training
#
# One jitted step: concatenate chosen and rejected, one forward pass, summed response log-probs,
# the loss of `dpo.py`, AdamW.  The metrics carry TRL's names: `rewards/chosen` and
# `rewards/rejected` are the batch means of the implicit rewards beta log pi_theta/pi_ref,
# `rewards/margins` their difference, `rewards/accuracies` the fraction of pairs where the
# implicit reward ranks y_w first.  At step 0 pi_theta = pi_ref: every implicit reward is 0, the
# loss is log 2.  `DPOConfig(loss_type="ipo")` or `label_smoothing=eps` (conservative DPO) select
# the variants.

# %%
t0 = time.time()
dpo_params, history = train_dpo(sft_params, train, model_cfg, dcfg)
t_train = time.time() - t0
saved = save_dpo_policy(args.smoke, dcfg, dpo_params, model_cfg, history, pref_paths["train"])
print(f"trained {dcfg.steps} steps in {t_train:.0f} s; saved {saved}")
heldout_pairs = evaluate_pairs(dpo_params, heldout, model_cfg, dcfg)
print(f"held-out pairs: implicit-reward accuracy {heldout_pairs['rewards/accuracies']:.3f}, "
      f"margin {heldout_pairs['rewards/margins']:.3f}, loss {heldout_pairs['loss']:.3f} (log 2 = 0.693)")

steps = np.arange(1, dcfg.steps + 1)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
axes[0].plot(steps, history["loss"])
axes[0].axhline(np.log(2), color="gray", ls=":", label="log 2 (pi = pi_ref)")
axes[0].set(xlabel="optimizer step", ylabel="DPO loss (nats / pair)", title="loss")
axes[0].legend()
for name in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
    axes[1].plot(steps, history[name], label=name)
axes[1].axhline(0, color="gray", lw=0.5)
axes[1].set(xlabel="optimizer step", ylabel="beta log pi/pi_ref (nats)", title="implicit rewards (batch mean)")
axes[1].legend()
axes[2].plot(steps, history["rewards/accuracies"])
axes[2].set(xlabel="optimizer step", ylabel="fraction of pairs", title="rewards/accuracies", ylim=(0, 1.02))
fig.tight_layout()
fig.savefig(FIGURES / "06_dpo_curves.png", dpi=120)

# %% [markdown]
# ## 5. Did it work?  Gold accuracy, and the KL it cost
#
# The labels came from a simulated rater, the gold reward r* is known: we sample answers at
# temperature 1 and count the right ones, on the train prompts (where the pairs came from),
# on held-out countries (never in a pair) and on OOD prompts (a template never seen).
#
# The price is the KL to pi_ref.  We estimate the sequence-level KL by sampling from the policy:
#
#     KL(pi_theta || pi_ref) = E_{y ~ pi_theta}[ log pi_theta(y|x) - log pi_ref(y|x) ]
#                           ~= (1/n) sum_i [ log pi_theta(y_i|x) - log pi_ref(y_i|x) ],  y_i ~ pi_theta
#
# (the k1 estimator: unbiased, its individual terms can be negative).  It is 0 for the SFT model.
#
# What to expect where.  DPO only re-weights responses: it raises the log-ratio of the kinds of
# answers that won and lowers those that lost, on the train prompts.  That transfers to another
# prompt only through what the network shares between prompts.  The held-out samples printed
# below show the limit: if pi_ref answers a held-out country with a memorised TRAIN country
# ("What's the capital of Portugal?" -> "The capital of Poland is Warsaw."), no train pair ever
# contained that mistake, so the preference data says nothing about it.

# %%
splits = {name: cw.split_prompts(name) for name in cw.SPLITS}
n_per = {"train": N_EVAL, "heldout": 4 * N_EVAL, "ood": 4 * N_EVAL}   # 32 N_EVAL rows each: one jit shape
results, samples = {}, {}
for model_name, params in (("sft", sft_params), ("dpo", dpo_params)):
    for split_i, (split, prompts) in enumerate(splits.items()):
        key = jax.random.PRNGKey(100 + split_i)                     # same key for both models
        s = sample_answers(params, model_cfg, tok, prompts, key, n=n_per[split])
        logratio = np.asarray(sequence_logratios(params, sft_params, s.generation, model_cfg))
        results[f"{model_name}/{split}"] = {**gold_metrics(s), "kl_k1": float(logratio.mean()),
                                            "kl_k1_stderr": float(logratio.std() / np.sqrt(len(logratio)))}
        samples[model_name, split] = s
cols = ("gold/accuracy", "gold/reward", "gold/eos_rate", "kl_k1", "kl_k1_stderr")
print(f"{'':<14}" + "".join(f"{c:>15}" for c in cols))
for row, m in results.items():
    print(f"{row:<14}" + "".join(f"{m[c]:>15.3f}" for c in cols))
print(f"\nheld-out gold accuracy: SFT {results['sft/heldout']['gold/accuracy']:.3f} -> "
      f"DPO {results['dpo/heldout']['gold/accuracy']:.3f}")
for model_name in ("sft", "dpo"):                              # what the held-out answers look like
    s = samples[model_name, "heldout"]
    print(f"{model_name} on {s.prompts[0]!r}: {s.texts[:3]}")

# %% [markdown]
# DPO, like PPO (lesson 05), learns from train prompts only, and part of what it learns is about
# tokens: train countries and capitals are what the chosen answers contain.  Lesson 09 measures
# what InstructGPT's pretraining term does about it, and what carries to held-out countries when
# DPO may change only the final LayerNorm.

# %% [markdown]
# ## 6. The France prompt, and a reward without a reward model
#
# Rearranging the derivation, beta log pi_theta(y|x)/pi_ref(y|x) = r(x, y) - beta log Z(x):
# up to a constant per prompt, the trained policy IS a reward model.  It should rank the right
# answer above the web's misconception, though we never trained a reward head.

# %%
france = cw.split_prompts("train").index("What's the capital of France?")
for model_name in ("sft", "dpo"):
    s = samples[model_name, "train"]
    print(f"\n{model_name} answers to 'What's the capital of France?'")
    for text, r in zip(s.texts[france * N_EVAL:(france + 1) * N_EVAL], s.gold_reward[france * N_EVAL:]):
        print(f"   r*={r:+.2f}  {text!r}")

pair = encode_pairs(tok, [{"prompt": "What's the capital of France?",
                           "chosen": cw.canonical_answer("France"),
                           "rejected": cw.canonical_answer("France", "Berlin")}], width)
r_paris, r_berlin = (float(r[0]) for r in implicit_rewards(dpo_params, sft_params, pair, model_cfg, dcfg.beta))
print(f"\nimplicit reward beta log pi/pi_ref: {cw.canonical_answer('France')!r}: {r_paris:+.3f}   "
      f"{cw.canonical_answer('France', 'Berlin')!r}: {r_berlin:+.3f}   "
      f"-> Paris ranked {'ABOVE' if r_paris > r_berlin else 'BELOW'} Berlin")

# %% [markdown]
# ## 7. A puzzle: the chosen responses become LESS likely too
#
# Watch log pi_theta(y_w|x) and log pi_theta(y_l|x) during training (TRL's `logps/chosen` and
# `logps/rejected`).  Often both go down, while the margin between their log-ratios grows.  The
# loss only constrains the DIFFERENCE h = log pi/pi_ref(y_w) - log pi/pi_ref(y_l): nothing in it
# asks the chosen response to become more likely.  Probability mass is conserved, so it has to go
# somewhere: it can leave both y_w and y_l for responses in neither set (e.g. the mode of what
# the pairs have in common, sharpened), as long as it leaves y_l faster.  Moreover our pairs are
# two samples of pi_ref, so y_w is often a mediocre answer that merely beat a worse one; and the
# gradient sigma(r_l - r_w)(grad log pi(y_w) - grad log pi(y_l)) pushes shared tokens (the same
# prompt template, the same first words) in opposite directions, with no net lift for them.

# %%
fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
ax[0].plot(steps, history["logps/chosen"], label="log pi_theta(y_w|x)  (logps/chosen)")
ax[0].plot(steps, history["logps/rejected"], label="log pi_theta(y_l|x)  (logps/rejected)")
ax[0].axhline(train["reference_chosen_logps"].mean(), color="C0", ls=":", label="pi_ref, chosen (dataset mean)")
ax[0].axhline(train["reference_rejected_logps"].mean(), color="C1", ls=":", label="pi_ref, rejected (dataset mean)")
ax[0].set(xlabel="optimizer step", ylabel="summed log-prob (nats / response)", title="batch means")
ax[0].legend(fontsize=7)
ax[1].plot(steps, history["rewards/margins"] / dcfg.beta)
ax[1].set(xlabel="optimizer step", ylabel="h = log-ratio(y_w) - log-ratio(y_l) (nats)", title="the margin grows")
fig.tight_layout()
fig.savefig(FIGURES / "06_logps_puzzle.png", dpi=120)
print(f"first 5 / last 5 steps: logps/chosen {history['logps/chosen'][:5].mean():.2f} -> "
      f"{history['logps/chosen'][-5:].mean():.2f}, logps/rejected {history['logps/rejected'][:5].mean():.2f} -> "
      f"{history['logps/rejected'][-5:].mean():.2f}, margin {history['rewards/margins'][:5].mean():.3f} -> "
      f"{history['rewards/margins'][-5:].mean():.3f}")

# %% [markdown]
# ## 8. The exact world: DPO really targets pi*_beta
#
# On the transformer we can only sample.  In the exact world of lesson 01 every response can be
# enumerated, so we can train a tabular policy with DPO on the POPULATION loss (the expectation
# over all pairs drawn from pi_ref and labelled by Bradley-Terry with the gold reward, an exact
# sum) and measure KL(pi_theta || pi*_beta) exactly.  The derivation above says it goes to 0.
# (`exact.training.run_dpo`, the same `dpo.py` losses on a table of logits.)

# %%
world = exact.make_exact_world(exact.ExactWorldConfig(n_prompts=2, alphabet_size=3, length=3))
beta_exact = 0.5
tcfg = TabularDPOConfig(beta=beta_exact, population=True, n_steps=60 if args.smoke else 600)
_, exact_hist = jax.jit(partial(run_dpo, world, tcfg))(jax.random.PRNGKey(args.seed))
logp_star = exact.optimal_policy(world.logp_ref, world.reward, beta_exact)
kl_before = float(exact.kl(world.logp_ref, logp_star).mean())
print(f"exact world (P=2, N={world.responses.shape[0]}), beta={beta_exact}: KL(pi || pi*_beta) "
      f"{kl_before:.4f} at pi_ref -> {float(exact_hist['exact/kl_to_optimum'][-1]):.2e} after "
      f"{tcfg.n_steps} DPO steps; expected reward {float(exact.expected_reward(world.logp_ref, world.reward).mean()):.3f}"
      f" -> {float(exact_hist['exact/expected_reward'][-1]):.3f} "
      f"(pi*_beta: {float(exact.expected_reward(logp_star, world.reward).mean()):.3f})")

# %% [markdown]
# ## 9. Where DPO's regularisation fails: deterministic preferences (IPO)
#
# Azar et al. (2023) point out a gap.  If y_w ALWAYS beats y_l, the Bradley-Terry reward gap is
# infinite, and so is DPO's optimum log-ratio: the loss -log sigma(beta h) keeps decreasing as
# h -> infinity, for EVERY beta.  The loser's probability goes to 0 and beta only sets the speed:
# the KL "regularisation" does nothing.  IPO replaces the logistic loss by a regression to a
# finite target,
#
#     L_IPO = E (h - 1/(2 beta))^2,    optimum  h* = 1/(2 beta),
#
# so with pi_ref uniform over {y_w, y_l}: pi(y_l) = sigma(-1/(2 beta)), which goes to 1/2 (=pi_ref)
# as beta grows.  Toy: one prompt, two responses, pi_ref = (1/2, 1/2), r(y_w) - r(y_l) = 30
# (P(y_w > y_l) = 1 - 1e-13), both trained on the exact population loss for each beta.

# %%
toy = exact.ExactWorld(
    responses=jnp.array([[0], [1]], jnp.int32), targets=jnp.array([[1]], jnp.int32),
    reward=jnp.array([[0.0, 30.0]]), ref_logits=jnp.zeros((1, 1, 2)),
    logp_ref=jnp.log(jnp.full((1, 2), 0.5)))
betas = np.logspace(-1.5, 1.0, 3 if args.smoke else 6)
toy_steps = 50 if args.smoke else 500


def loser_probability(loss_type: str) -> np.ndarray:
    """pi_theta(y_l) after run_dpo on the toy's population loss, for every beta at once
    (beta is traced and vmapped: one compilation per loss, not one per beta)."""
    tc = TabularDPOConfig(loss_type=loss_type, population=True, n_steps=toy_steps)
    train = jax.vmap(lambda b: run_dpo(toy, tc, jax.random.PRNGKey(0), beta=b)[0])
    params = jax.jit(train)(jnp.asarray(betas, jnp.float32))             # leaves [len(betas), ...]
    return np.exp(np.asarray(jax.vmap(all_sequence_logprobs)(params))[:, 0, 0])


p_dpo, p_ipo = loser_probability("dpo"), loser_probability("ipo")
p_ipo_theory = 1 / (1 + np.exp(1 / (2 * betas)))
print(f"{'beta':>8}{'DPO pi(y_l)':>14}{'IPO pi(y_l)':>14}{'IPO theory':>14}")
for row in zip(betas, p_dpo, p_ipo, p_ipo_theory):
    print("".join(f"{float(v):>14.3g}" if i else f"{float(v):>8.3g}" for i, v in enumerate(row)))
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.loglog(betas, p_dpo, "o-", label=f"DPO after {toy_steps} steps (-> 0 with more)")
ax.loglog(betas, p_ipo, "s-", label=f"IPO after {toy_steps} steps")
dense = np.logspace(-1.5, 1.0, 100)
ax.loglog(dense, 1 / (1 + np.exp(1 / (2 * dense))), "k:", label="IPO optimum sigma(-1/(2 beta))")
ax.axhline(0.5, color="gray", lw=0.5)
ax.set(xlabel="beta (KL strength)", ylabel="pi_theta(y_l): the loser's probability",
       title="deterministic preference y_w > y_l, pi_ref = (1/2, 1/2)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "06_ipo_vs_dpo.png", dpi=120)
print(f"\nlesson 06 done in {time.time() - t_start:.0f} s")
