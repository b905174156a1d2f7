# %% [markdown]
# # Lesson 02: a tiny GPT, pretrained on a noisy web
#
# Every alignment method in this course starts from a language model.  Here we write one
# from scratch (`minirlhf/model.py`, ~250 lines of pure functions) and pretrain it on the
# capitals corpus of lesson 01, where about 30% of the capital statements are wrong.
#
# **The model.**  A decoder-only transformer (GPT-2 layout).  With token ids x_1..x_T:
#
#     h_0    = W_te[x_t] + W_pe[t]                                  embeddings
#     h'_l   = h_{l-1} + Attn(LN(h_{l-1}))                          causal self-attention
#     h_l    = h'_l + W_2 gelu(W_1 LN(h'_l) + b_1) + b_2            MLP
#     logits = LN(h_L) W_te^T                                       weight-tied unembedding
#
#     Attn(u) = concat_heads( softmax(q k^T / sqrt(d_head) + M) v ) W_o,
#     M[i, j] = 0 if j <= i and token j is not padding, else -inf
#
# **The objective.**  Next-token cross-entropy over every document `<bos> doc <eos>`:
#
#     L(theta) = - (1/N) sum_t log p_theta(x_t | x_<t)
#
# whose gradient w.r.t. the logits z_{t-1} is softmax(z_{t-1}) - onehot(x_t)
# (pinned in `tests/test_model.py`).  A model that minimises it learns the corpus's
# *distribution*: if the web says "France -> Berlin" 20% of the time, so will the model.

# %%
import time

import jax
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import paths
from minirlhf.evaluation import evaluate_splits, format_table, sample_answers
from minirlhf.model import count_params, init_params
from minirlhf.pretrain import (
    PretrainConfig,
    corpus_arrays,
    ensure_tokenizer,
    pretrain,
    save_base_model,
)
from minirlhf.worlds import capitals as cw

t_start = time.time()
args = paths.lesson_args()
RUNS, FIGURES = paths.runs_dir(args.smoke), paths.figures_dir(args.smoke)
cfg = PretrainConfig.smoke() if args.smoke else PretrainConfig()
cfg = PretrainConfig(**{**cfg.__dict__, "seed": args.seed})
tok = ensure_tokenizer(args.smoke)
splits = {name: cw.split_prompts(name) for name in cw.SPLITS}
N_EVAL = 2 if args.smoke else 16   # samples per prompt when measuring accuracy
print(f"model: {cfg.model}")

# %% [markdown]
# ## 1. The parameters are a plain pytree
#
# `init_params(key, cfg)` returns nested dicts of arrays.  The L blocks' weights are
# stacked along a leading axis so the forward pass can `lax.scan` over layers.

# %%
params = init_params(jax.random.PRNGKey(cfg.seed), cfg.model)
for name, leaf in jax.tree_util.tree_leaves_with_path(params):
    print(f"  {jax.tree_util.keystr(name):<28} {leaf.shape!s:<16}")
print(f"{count_params(params):,} parameters")
arrays = corpus_arrays(tok)
n_tokens = int(arrays["loss_mask"].sum())
print(f"corpus: {arrays['tokens'].shape[0]} documents, {n_tokens:,} training tokens")

# %% [markdown]
# ## 2. Before training: babble
#
# An untrained model samples from a nearly uniform distribution over the 512 tokens.

# %%
before = sample_answers(params, cfg.model, tok, ["What's the capital of France?"], jax.random.PRNGKey(1), n=3)
for text in before.texts:
    print("  untrained:", repr(text[:80]))

# %% [markdown]
# ## 3. Pretraining
#
# One jitted step (forward, backward, AdamW update) per batch of 32 documents; the data
# are encoded once, so each batch is a single numpy fancy-index.

# %%
params, history = pretrain(tok, cfg)
saved = save_base_model(args.smoke, cfg, params, history)   # runs[/smoke]/[seed{seed}/]base.ckpt
print(f"saved {saved}; final loss {history[-10:].mean():.3f} nats/token")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, len(history) + 1), history, lw=0.8, label="per step")
w = max(len(history) // 20, 1)
ax.plot(np.arange(w, len(history) + 1), np.convolve(history, np.ones(w) / w, "valid"), lw=2, label=f"mean of {w}")
ax.set(xlabel="optimizer step", ylabel="cross-entropy (nats / token)", title="Pretraining on the noisy capitals corpus")
ax.legend()
fig.tight_layout()
fig.savefig(FIGURES / "02_pretrain_loss.png", dpi=120)

# %% [markdown]
# ## 4. After training: a base model that *continues text*
#
# The base model was never taught to answer questions, but 30% of its corpus are Q/A
# documents, so it often answers, sometimes rambles on, and states the wrong capital
# about as often as its web did.  "Gold accuracy" = the answer names the right capital
# and no other (lesson 01).  Samples are drawn at temperature 1 (the model's own
# distribution), `N_EVAL` per prompt.

# %%
after = sample_answers(params, cfg.model, tok, ["What's the capital of France?"], jax.random.PRNGKey(2), n=6)
for text, r in zip(after.texts, after.gold_reward):
    print(f"  base: r*={r:+.2f}  {text!r}")
results = evaluate_splits(params, cfg.model, tok, splits, jax.random.PRNGKey(3), n=N_EVAL)
print("\nbase model, gold metrics per prompt split:")
print(format_table(results))
print(f"\nlesson 02 done in {time.time() - t_start:.0f} s")
