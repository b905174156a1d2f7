# %% [markdown]
# # Lesson 03: supervised fine-tuning (SFT) -> the reference policy pi_ref
#
# The base model continues web text.  To make it an *assistant* we fine-tune it on
# demonstrations (x, y): a question and an answer written by a (simulated) labeller.
# Our labellers are imperfect on purpose: 20% of the demos name the neighbour's capital
# and 20% ramble on with a filler sentence.  SFT imitates them, flaws included; that
# imperfection is what alignment (lessons 04-07) will fix.
#
# **The objective** is the same cross-entropy as pretraining, but only on the response:
#
#     L_SFT(theta) = - (1/N) sum_{(x,y)} sum_{t in y} log pi_theta(y_t | x, y_<t)
#
# implemented by passing `response_mask` as the loss mask: the prompt tokens are
# context, not targets.  The final `<eos>` is a response token, so the model learns to
# stop.  The resulting checkpoint is **pi_ref**, the anchor of the KL penalty in PPO
# (lesson 05) and of the log-ratios in DPO (lesson 06).

# %%
import time

import jax
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import paths
from minirlhf.evaluation import evaluate_splits, format_table, sample_answers
from minirlhf.pretrain import SEQ_LEN, ensure_base_model, ensure_tokenizer
from minirlhf.sft import SFTConfig, save_sft_model, sft
from minirlhf.tokenizer import encode_batch, id_to_token
from minirlhf.worlds import capitals as cw

t_start = time.time()
args = paths.lesson_args()
RUNS, FIGURES = paths.runs_dir(args.smoke), paths.figures_dir(args.smoke)
cfg = SFTConfig.smoke() if args.smoke else SFTConfig()
cfg = SFTConfig(**{**cfg.__dict__, "seed": args.seed})
tok = ensure_tokenizer(args.smoke)
base_params, model_cfg = ensure_base_model(args.smoke, args.seed)   # lesson 02's (built if missing)
splits = {name: cw.split_prompts(name) for name in cw.SPLITS}
N_EVAL = 2 if args.smoke else 16

# %% [markdown]
# ## 1. The demonstrations and the response mask

# %%
demos = cw.make_sft_demos(cw.CapitalsConfig())
print(f"{len(demos)} demonstrations, {np.mean([d.correct for d in demos]):.0%} correct; e.g.")
for d in demos[:4]:
    print(f"   {d.prompt!r} -> {d.response!r}  correct={d.correct}")
enc = encode_batch(tok, ["What's the capital of France?"], [" The capital of France is Paris."], max_len=SEQ_LEN)
n = int(enc.attention_mask[0].sum())
print("\n token        loss mask (response_mask)")
for tid, m in zip(enc.tokens[0, :n], enc.response_mask[0, :n]):
    print(f"  {id_to_token(tok, [int(tid)])[0]!r:<12} {m}")

# %% [markdown]
# ## 2. Fine-tuning, twice
#
# First on the demonstrations alone, then with **replay**: pretraining documents mixed into
# the SFT batches (about a third of the rows are demos).  The second keeps what the base
# model knew about countries that no demonstration mentions; it is the one we keep as pi_ref.

# %%
demos_only, _ = sft(base_params, model_cfg, tok, SFTConfig(**{**cfg.__dict__, "replay": False}), quiet=True)
params, history = sft(base_params, model_cfg, tok, cfg)
saved = save_sft_model(args.smoke, cfg, params, model_cfg, history)   # runs[/smoke]/[seed{seed}/]sft.ckpt
print(f"saved {saved} (pi_ref); final loss {history[-10:].mean():.3f} nats/token")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, len(history) + 1), history)
ax.set(xlabel="optimizer step", ylabel="cross-entropy (nats / token)",
       title="SFT with replay (demo responses + corpus documents)")
fig.tight_layout()
fig.savefig(FIGURES / "03_sft_loss.png", dpi=120)

# %% [markdown]
# ## 3. Base vs SFT under the gold reward
#
# Train prompts were in the demos; held-out countries were in the corpus but never in
# a demo; OOD prompts use a question template that occurs nowhere in the training data.
# Expect SFT to answer in the Q/A format and to be right only part of the time: it
# imitates labellers who were wrong 20% of the time, on top of a base model that learned a
# noisy web.  Expect the demos-only model to lose the held-out countries: it has learned
# "The capital of <a train country> is ..." and copies the wrong country.

# %%
key = jax.random.PRNGKey(3)
table = {}
for name, p in (("base", base_params), ("sft-demos-only", demos_only), ("sft (pi_ref)", params)):
    for split, metrics in evaluate_splits(p, model_cfg, tok, splits, key, n=N_EVAL).items():
        table[f"{name}/{split}"] = metrics
print(format_table(table))
s = sample_answers(demos_only, model_cfg, tok, cw.split_prompts("heldout")[:2], jax.random.PRNGKey(5), n=3)
print("\ndemos-only SFT on held-out countries:")
for prompt, text in zip(s.prompts, s.texts):
    print(f"   {prompt!r} -> {text!r}")

for name, p in (("base", base_params), ("sft", params)):
    s = sample_answers(p, model_cfg, tok, ["What's the capital of France?"], jax.random.PRNGKey(4), n=5)
    print(f"\n{name} answers to 'What's the capital of France?'")
    for text, r in zip(s.texts, s.gold_reward):
        print(f"   r*={r:+.2f}  {text!r}")
print(f"\nlesson 03 done in {time.time() - t_start:.0f} s")
