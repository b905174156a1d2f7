# %% [markdown]
# # Lesson 01: two toy worlds
#
# Alignment methods are easiest to understand where we can *check* them.  This course
# uses two worlds:
#
# * **The capitals world** (text).  A prompt x = "What's the capital of France?", a
#   response y = " The capital of France is Paris.", and a hidden **gold reward**
#   r*(x, y) that we can compute for any response.  Real RLHF never sees r*: it sees
#   human preferences.  Here a simulated rater produces those preferences *from* r*, so
#   at every stage we can ask "did the policy actually get better?" (gold accuracy).
# * **The exact world** (tables).  A few prompts, each with 256 possible responses, so
#   every expectation in the papers is a finite sum: we can compute the optimal policy
#   of the RLHF objective exactly and compare PPO and DPO against it.
#
# This lesson builds both, tokenizes the running example and looks at the rater.
# Run it with `python lessons/01_toy_worlds.py` (or `--smoke` for the quick test run).

# %%
import time
from collections import Counter

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import paths
from minirlhf.exact import world as exact
from minirlhf.tokenizer import (
    TOKENIZER_FILENAME,
    encode_batch,
    encode_text,
    id_to_token,
    load_or_train_tokenizer,
)
from minirlhf.worlds import capitals as cw

t_start = time.time()
args = paths.lesson_args()
RUNS, FIGURES = paths.runs_dir(args.smoke), paths.figures_dir(args.smoke)
cfg = cw.CapitalsConfig(seed=args.seed)
print(f"smoke={args.smoke} seed={args.seed}  runs -> {RUNS}  figures -> {FIGURES}")

# %% [markdown]
# ## 1. The pretraining corpus: a noisy web
#
# A base model learns from whatever text it is given.  Our "web" states capitals in
# several phrasings, but a fraction `corpus_wrong_fraction` = 0.3 of those statements
# are wrong: most often the capital of a neighbour (France -> Berlin), otherwise any
# other capital.  Filler sentences carry no facts, and 30% of the documents are Q/A
# pairs in the prompt template, so a base model will sometimes *answer* a question,
# sometimes ramble on, and sometimes confidently state the wrong capital.

# %%
corpus = cw.make_corpus(cfg)
print(f"{len(corpus.docs)} documents, {corpus.n_statements} capital statements, "
      f"{corpus.n_wrong} wrong ({corpus.n_wrong / corpus.n_statements:.1%})\n")
for doc in corpus.docs[:8]:
    print("  ", doc)

# What does the web say about France?  Count the sentences that mention France and name
# exactly one capital.
split_sentences = lambda doc: doc.replace("? ", "?|").replace(". ", ".|").split("|")
sentences = [s for doc in corpus.docs for s in split_sentences(doc)]
about_france = [cw.capitals_named(s) for s in sentences if "France" in s]
named = Counter(next(iter(c)) for c in about_france if len(c) == 1)
print(f"\nsentences about France naming one capital: {named.total()}: {dict(named.most_common())}")

# %% [markdown]
# ## 2. SFT demonstrations: good, but not perfect
#
# Supervised fine-tuning imitates demonstrations (prompt, response) over the 32 **train**
# countries.  Like real labellers, ours make mistakes: 20% name the neighbour's capital,
# 20% append an unrelated sentence.  8 **held-out** countries appear in the corpus but
# never in a demo, and 8 **OOD** countries are asked with a template that appears
# nowhere ("Which city is the capital of X?").

# %%
demos = cw.make_sft_demos(cfg)
print(f"{len(demos)} demos, gold accuracy {np.mean([d.correct for d in demos]):.1%}")
for d in demos[:6]:
    print(f"  {'ok ' if d.correct else 'BAD'} {d.prompt!r} -> {d.response!r}")
for split in ("train", "heldout", "ood"):
    prompts = cw.split_prompts(split)
    print(f"{split:8s} {len(prompts):2d} prompts, e.g. {prompts[0]!r}")

# %% [markdown]
# ## 3. Tokenization and the three masks
#
# A byte-pair-encoding tokenizer (Sennrich et al. 2016) trained on this text turns
# strings into ids; "▁" marks a space.  Ids 0, 1, 2 are `<pad>`, `<bos>`, `<eos>`.
# A training row is `<bos> prompt response <eos>`, right-padded, with
#
# * `attention_mask` = 1 on every real token (0 on pads),
# * `response_mask` = 1 exactly on the response tokens and the final `<eos>`: the tokens
#   whose log-probabilities SFT trains and RLHF/DPO score, log pi(y|x) = sum_t m_t log p_t.
#
# The prompt and response are encoded separately, so the response mask is exact.

# %%
tok = load_or_train_tokenizer(RUNS / TOKENIZER_FILENAME, cw.tokenizer_training_texts(cfg))
print(f"vocabulary: {tok.get_vocab_size()} tokens  (saved at {RUNS / TOKENIZER_FILENAME})")
prompt, good = cw.make_prompt("France"), cw.canonical_answer("France")
batch = encode_batch(tok, [prompt], [good], max_len=24)
print(f"\n{'t':>3} {'id':>4} {'token':12s} attn resp")
rows = zip(batch.tokens[0], batch.attention_mask[0], batch.response_mask[0])
for t, (i, a, r) in enumerate(rows):
    print(f"{t:3d} {i:4d} {id_to_token(tok, [i])[0]:12s} {a:4d} {r:4d}")
assert tok.decode(encode_text(tok, prompt + good)) == prompt + good  # exact round trip

# %% [markdown]
# ## 4. The gold reward r*(x, y)
#
# The gold reward is a sum of terms (see `gold_reward`'s docstring):
#
# | term | condition | value |
# |---|---|---|
# | correctness | names exactly the right capital / no capital / a wrong one | +1.0 / -0.5 / -1.0 |
# | form | is the sentence "The capital of {country} is {capital}." | +0.5 |
# | verbosity | per word beyond the canonical answer (capped) | -0.05 (>= -1.0) |
# | termination | no `<eos>` (cut off by the length limit) | -1.0 |
#
# It is graded on purpose: a reward model trained on preferences has form, length and
# termination to pick up, not just right/wrong, and over-optimising a learned reward
# has somewhere to go wrong.  "Gold accuracy" is just the correctness term being +1.

# %%
examples = {
    "correct, concise": (good, True),
    "wrong capital": (cw.canonical_answer("France", "Berlin"), True),
    "correct, rambling": (good + " Our team won the game on Monday.", True),
    "short answer": (" Paris.", True),
    "no capital": (" I had cheese for lunch on Friday.", True),
    "correct, no eos": (good, False),
}
print(f"{'case':18s} {'r*':>6} correct  response")
for name, (y, eos) in examples.items():
    print(f"{name:18s} {cw.gold_reward('France', y, eos):6.2f} {cw.is_correct('France', y)!s:7s}  "
          f"{y!r}{'' if eos else ' (no eos)'}")

# %% [markdown]
# ## 5. The simulated rater: Bradley-Terry preferences
#
# Given two responses, the rater prefers y1 with probability (Bradley & Terry 1952;
# Ouyang et al. 2022, eq. 1; Rafailov et al. 2023, eq. 1)
#
#     P(y1 > y2 | x) = sigmoid((r*(x, y1) - r*(x, y2)) / tau).
#
# A small temperature tau makes a careful rater (always picks the better answer); a large
# tau a careless one (a coin flip).  A reward model trained on these labels can recover
# r* only up to a constant, and only up to the scale 1/tau.

# %%
taus = [0.1, 0.25, 0.5, 1.0, 2.0, 4.0]
good_r = cw.gold_reward("France", good, True)
rivals = {k: v for k, v in examples.items() if k != "correct, concise"}
print("P(correct concise > rival) under the rater, by tau")
print(f"{'rival':18s} " + " ".join(f"{t:>6}" for t in taus))
for name, (y, eos) in rivals.items():
    probs = cw.rater_prob(good_r, cw.gold_reward("France", y, eos), np.array(taus))
    print(f"{name:18s} " + " ".join(f"{p:6.3f}" for p in probs))

# Monte Carlo check of the sampler: the empirical preference rate matches the formula.
rng = np.random.default_rng(args.seed)
n_mc = 2000
ramble = examples["correct, rambling"][0]
wins = np.mean([cw.rate_pair(rng, "France", good, ramble, ended1=True, ended2=True,
                             tau=cfg.rater_tau).y1_preferred for _ in range(n_mc)])
p_ramble = float(cw.rater_prob(good_r, cw.gold_reward("France", ramble, True), cfg.rater_tau))
print(f"\ntau={cfg.rater_tau}: concise beats rambling in {wins:.3f} of {n_mc} draws "
      f"(formula {p_ramble:.3f}, binomial s.e. {np.sqrt(p_ramble * (1 - p_ramble) / n_mc):.3f})")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
dr = np.linspace(-3, 3, 201)
for tau in taus:
    ax1.plot(dr, cw.rater_prob(dr, 0.0, tau), label=f"tau = {tau}")
ax1.set(xlabel="gold reward difference r*(y1) - r*(y2)  (reward units)",
        ylabel="P(rater prefers y1)", title="Bradley-Terry rater")
ax1.legend(fontsize=8)
tau_grid = np.geomspace(0.05, 10, 100)
for name, (y, eos) in rivals.items():
    p_win = cw.rater_prob(good_r, cw.gold_reward("France", y, eos), tau_grid)
    ax2.semilogx(tau_grid, p_win, label=name)
ax2.axvline(cfg.rater_tau, color="gray", ls=":", label=f"default tau = {cfg.rater_tau}")
ax2.set(xlabel="rater temperature tau  (reward units)", ylabel="P(correct concise > rival)",
        title="France: the right answer vs rivals", ylim=(0.45, 1.01))
ax2.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "01_rater.png", dpi=120)
plt.close(fig)
print(f"wrote {FIGURES / '01_rater.png'}")

# %% [markdown]
# ## 6. The exact world and the optimum of the RLHF objective
#
# RLHF maximises reward while staying close to the reference policy pi_ref (the SFT model):
#
#     max_pi  E_{y ~ pi}[r(x, y)] - beta KL(pi(.|x) || pi_ref(.|x)).
#
# Its maximiser has a closed form (Ziegler et al. 2019; Rafailov et al. 2023, eq. 4):
#
#     pi*_beta(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z_beta(x).
#
# In the exact world every response is enumerable (4 symbols, length 4: 256 responses),
# so pi*_beta is a table we can compute.  Large beta keeps pi*_beta at pi_ref; small beta
# piles the mass onto the highest-reward responses.  PPO and DPO, later, should land on
# exactly this table.

# %%
ex_cfg = exact.ExactWorldConfig(seed=args.seed)
world = exact.make_exact_world(ex_cfg)
betas = [1.0, 0.1, 0.03]
p0 = 0  # the first prompt
order = np.argsort(np.asarray(world.reward[p0]))  # responses sorted by gold reward
print(f"exact world: {ex_cfg.n_prompts} prompts x {world.reward.shape[1]} responses")
print(f"{'policy':15s} {'E[r]':>6} {'KL(.||ref)':>10} {'P(best y)':>9}")
best = int(order[-1])
policies = {"pi_ref": world.logp_ref}
policies.update({f"pi*(beta={b})": exact.optimal_policy(world.logp_ref, world.reward, b)
                 for b in betas})
for name, logp in policies.items():
    e_r = float(exact.expected_reward(logp, world.reward)[p0])
    kl_ref = float(exact.kl(logp, world.logp_ref)[p0])
    print(f"{name:15s} {e_r:6.3f} {kl_ref:10.3f} {float(jnp.exp(logp[p0, best])):9.3f}")

beta_grid = np.geomspace(0.01, 10.0, 60)
frontier_kl, frontier_r = exact.optimal_frontier(world.logp_ref, world.reward, beta_grid)  # [M, P]

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
rank = np.arange(len(order))
ax1.plot(rank, np.exp(np.asarray(world.logp_ref[p0]))[order], "k--", lw=1, label="pi_ref")
for b in betas:
    logp = policies[f"pi*(beta={b})"]
    ax1.plot(rank, np.exp(np.asarray(logp[p0]))[order], label=f"pi*_beta, beta = {b}")
ax1.set(xlabel="response, ranked by gold reward (0 = worst)", ylabel="probability",
        title=f"exact world, prompt {p0}: pi*_beta = pi_ref exp(r/beta) / Z", yscale="log")
ax1.legend(fontsize=8)
ax2.plot(np.asarray(frontier_kl[:, p0]), np.asarray(frontier_r[:, p0]), "o-", ms=3)
ax2.set(xlabel="KL(pi*_beta || pi_ref)  (nats)", ylabel="expected gold reward E[r]",
        title="reward vs KL frontier (beta from 10 down to 0.01)")
fig.tight_layout()
fig.savefig(FIGURES / "01_exact_world_optimum.png", dpi=120)
plt.close(fig)
print(f"wrote {FIGURES / '01_exact_world_optimum.png'}")
print(f"lesson 01 done in {time.time() - t_start:.1f} s")

# %% [markdown]
# ## Takeaways
#
# * The base model will learn a web where ~30% of capital statements are wrong; SFT
#   demos are right ~75% of the time.  Gold accuracy tells us how each stage does.
# * The gold reward is graded (correctness, form, verbosity, termination); the rater only
#   reveals it through noisy Bradley-Terry comparisons with temperature tau.
# * In the exact world the RLHF optimum pi*_beta is a table: the target for lessons 05-08.
