# %% [markdown]
# # Lesson 05: RLHF with PPO
#
# Lesson 03 gave us pi_ref (the SFT model), lesson 04 a reward model r_phi trained on the
# rater's comparisons.  Now a second copy of pi_ref, the policy pi_theta, learns to please
# r_phi while a KL penalty keeps it near pi_ref (Ziegler et al. 2019; Stiennon et al. 2020;
# Ouyang et al. 2022, eq. 2):
#
#     max_theta  E_{x ~ D, y ~ pi_theta(.|x)} [ r_phi(x, y) ]  -  beta KL(pi_theta(.|x) || pi_ref(.|x))
#                + gamma E_{x ~ D_pretrain} [ log pi_theta(x) ]
#
# The last term ("PPO-ptx", gamma = `PPOConfig.ptx_coef`, 0 by default) keeps the policy a good
# language model of the pretraining corpus; lesson 09 shows what it does on prompts PPO never
# sees.
#
# Why the KL term?  r_phi is only trustworthy near the data it was fitted on (samples of
# pi_ref).  Far from pi_ref, a policy can find responses that r_phi scores high and the
# rater would not: *reward hacking*.  beta sets how far we dare to go.
#
# The gold reward r* of the capitals world is never shown to the policy: we decode its
# samples outside the training step and score them with r* to watch what really happens.

# %%
import dataclasses
import time

import jax
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import paths, ppo, ppo_train
from minirlhf.evaluation import evaluate_policy, format_table, sample_answers
from minirlhf.exact import training as et
from minirlhf.exact import world as exact
from minirlhf.exact.world import ExactWorldConfig, make_exact_world
from minirlhf.pretrain import corpus_arrays, ensure_tokenizer
from minirlhf.reward import ensure_reward_model
from minirlhf.sft import ensure_sft_model
from minirlhf.tokenizer import encode_prompts
from minirlhf.worlds import capitals as cw

t_start = time.time()
args = paths.lesson_args()
RUNS, FIGURES = paths.runs_dir(args.smoke), paths.figures_dir(args.smoke)
cfg = ppo_train.PPOConfig.smoke() if args.smoke else ppo_train.PPOConfig()
cfg = ppo_train.PPOConfig(**{**cfg.__dict__, "seed": args.seed})
tok = ensure_tokenizer(args.smoke)
ref_params, model_cfg = ensure_sft_model(args.smoke, args.seed)   # pi_ref (lesson 03), built if missing
rm_params, _ = ensure_reward_model(args.smoke, args.seed)         # r_phi (lesson 04), built if missing
splits = {name: cw.split_prompts(name) for name in cw.SPLITS}
N_ROWS = 8 if args.smoke else 256  # evaluation samples per split (8 per train prompt, 32 per held-out
                                   # or OOD prompt): standard error ~0.03, one compiled shape for all
key_eval = jax.random.PRNGKey(args.seed + 11)   # the same samples' randomness for every policy
print(f"PPO config: {cfg}")


def evaluate(params, names=("train", "heldout", "ood")):
    """evaluate_policy on each split: gold metrics and KL(pi || pi_ref) of N_ROWS samples."""
    return {name: evaluate_policy(params, ref_params, model_cfg, tok, {name: splits[name]}, key_eval,
                                       max(N_ROWS // len(splits[name]), 1))[name] for name in names}

# %% [markdown]
# ## 1. A rollout, and the two policies' log-probs
#
# For each prompt x, pi_theta samples a response y (KV-cache sampler, `sampling.generate`).
# Then one forward pass of each model over the whole sequence gives, per response token t,
#
#     log pi_old(y_t | x, y_<t)    pi_theta before this iteration's update ("old" policy)
#     log pi_ref(y_t | x, y_<t)    the frozen reference (stop_gradient: never differentiated)
#     V(s_t)                       the value head: expected return from the state before y_t
#     r_phi(x, y)                  the reward model, read at the last token
#
# The recomputed log pi_old must equal the log-probs the sampler drew the tokens with
# (a mismatch, e.g. from a different temperature or position ids, silently biases PPO).
# At iteration 0 pi_theta = pi_ref, so the per-token log-ratio is exactly 0.

# %%
enc = encode_prompts(tok, splits["train"], max_len=cfg.prompt_len)
state0 = ppo_train.init_ppo_state(ref_params, rm_params, model_cfg, cfg, jax.random.PRNGKey(args.seed))
ptx_table = corpus_arrays(tok) if cfg.ptx_coef > 0 else None   # PPO-ptx's documents (lesson 09)
_, out0 = ppo_train.ppo_iteration(state0, ref_params, rm_params, enc.tokens, enc.attention_mask,
                             jax.random.PRNGKey(1), ptx_table, cfg=ppo_train.compiled_part(cfg),
                             model_cfg=model_cfg)   # the same program train_ppo runs below
print(f"max |log pi_old (forward pass) - log pi (sampler)| = {float(out0.metrics['rollout/logprob_mismatch']):.2e}")
print(f"KL(pi_theta || pi_ref) at iteration 0: {float(out0.metrics['objective/kl']):.2e} nats")
print(f"mean r_phi of these {cfg.batch_size} samples: {float(out0.metrics['objective/scores']):+.3f}")

# %% [markdown]
# ## 2. Reward shaping: the KL penalty per token
#
# The KL term is spread over the tokens; the reward model's score arrives on the last one
# (Ziegler et al. 2019 eq. 2; `ppo.shape_rewards`):
#
#     R_t = - beta * k1_t                  k1_t = log pi_old(y_t | .) - log pi_ref(y_t | .)
#     R_T = - beta * k1_T + r_phi(x, y)    (T = last response token)
#
# With gamma = 1 the return of the first token is r_phi(x, y) - beta log(pi/pi_ref)(y), whose
# expectation is exactly the objective above.  k1 is unbiased but can be negative per token;
# `PPOConfig.kl_kind` switches to k2 or k3 (Schulman 2020), non-negative per token.
#
# **beta: fixed or adaptive.**  By default beta is fixed.  Ziegler et al.'s controller instead
# steers the measured KL towards a target:
#
#     e_t = clip(KL_t / KL_target - 1, -0.2, 0.2),   beta_{t+1} = beta_t (1 + K_beta e_t B / horizon)
#
# (`PPOConfig.kl = ppo.KLControllerConfig(adaptive=True, target=..., horizon=...)`).

# %%
mask0 = np.asarray(out0.response_mask, np.float32)[:1]                 # one rollout's response
rewards = jax.jit(ppo.shape_rewards, static_argnames="kl_kind")(
    np.ones(1, np.float32), np.full_like(mask0, 0.1), mask0, 0.05)
row = np.asarray(rewards[0])[mask0[0] > 0]
print("shaped rewards of one response if every log-ratio were 0.1, beta = 0.05, r_phi = 1:")
print(np.round(row, 3))

# %% [markdown]
# ## 3. Advantages, the clipped surrogate and the value loss
#
# GAE (Schulman et al. 2016, eqs. 11-16) over the response tokens:
#
#     delta_t = R_t + gamma V(s_{t+1}) - V(s_t),     A_t = delta_t + gamma lambda A_{t+1},
#     returns_t = A_t + V(s_t)
#
# (advantages whitened over the batch when `whiten_advantages`).  Then n_epochs passes over
# the batch in n_minibatches, minimising (Schulman et al. 2017 eqs. 7 and 9)
#
#     rho_t = pi_theta(y_t | .) / pi_old(y_t | .)
#     L = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))
#         + vf_coef * 0.5 mean_t max((V - ret)^2, (V_clip - ret)^2)  -  ent_coef * H(pi_theta)
#
# The value head sits on the policy's own backbone ("shared", the default): one forward and
# backward pass per minibatch.  InstructGPT uses a separate value transformer initialised
# from the reward model (`value_model="separate"`): V starts as r_phi of the prefix, but every
# update step costs a second forward/backward pass.  With a 3-minute CPU budget we keep the
# shared head, with a small vf_coef so the critic's regression barely moves the policy's
# features (benchmarks/bench_ppo.py --value-model separate measures the cost).
#
# **The equations on a 5-token toy.**  Before any training, the package's pure functions run on
# one hand-made response of 5 tokens, beside the same numbers computed here from the equations
# with plain NumPy: GAE as the explicit backwards recursion (gamma = 1, lambda = 0.95, V = 0 after
# the last token), and the clipped surrogate with its clip fraction (the share of tokens with
# |rho_t - 1| > eps) and its gradient
#
#     dL/d log pi_theta(y_t) = -A_t rho_t / n   where the unclipped term is the max,  0 where the
#                                               clipped one is (n = number of response tokens).

# %%
toy_rewards = np.array([[0.0, -0.1, 0.05, -0.05, 1.0]])    # R_t: -beta k1_t, r_phi on the last  [1, 5]
toy_values = np.array([[0.2, 0.3, 0.1, 0.5, 0.4]])         # V(s_t)                            [1, 5]
toy_mask = np.ones((1, 5))
adv_pkg, ret_pkg = np.asarray(jax.jit(ppo.gae, static_argnames=("gamma", "lam"))(
    toy_rewards, toy_values, toy_mask, gamma=1.0, lam=0.95))   # one compiled program, not one per op
adv_hand, next_v, next_a = np.zeros(5), 0.0, 0.0
for t in reversed(range(5)):                               # delta_t = R_t + gamma V_{t+1} - V_t
    delta = toy_rewards[0, t] + 1.0 * next_v - toy_values[0, t]
    adv_hand[t] = delta + 1.0 * 0.95 * next_a               # A_t = delta_t + gamma lambda A_{t+1}
    next_v, next_a = toy_values[0, t], adv_hand[t]
print(f"{'t':>3}{'A_t package':>14}{'A_t by hand':>14}{'ret package':>14}{'ret by hand':>14}")
for t in range(5):
    print(f"{t:>3}{float(adv_pkg[0, t]):>14.5f}{float(adv_hand[t]):>14.5f}"
          f"{float(ret_pkg[0, t]):>14.5f}{float(adv_hand[t] + toy_values[0, t]):>14.5f}")

eps = 0.2
old_logps = np.array([[-1.0, -2.0, -0.5, -1.5, -0.7]])         # log pi_old(y_t)           [1, 5]
new_logps = old_logps + np.array([[0.0, 0.1, 0.3, -0.3, -0.05]])    # log pi_theta(y_t)    [1, 5]
toy_adv = np.array([[1.0, -0.5, 0.8, 0.6, -1.2]])               # hand-made A_t            [1, 5]
(loss_pkg, m_pkg), grad_pkg = jax.jit(jax.value_and_grad(ppo.policy_loss, has_aux=True),
                                      static_argnums=4)(new_logps, old_logps, toy_adv, toy_mask, eps)
grad_pkg = np.asarray(grad_pkg)
rho = np.exp(new_logps - old_logps)
unclipped, clipped = -toy_adv * rho, -toy_adv * np.clip(rho, 1 - eps, 1 + eps)
loss_hand = np.mean(np.maximum(unclipped, clipped))
grad_hand = np.where(unclipped >= clipped, -toy_adv * rho / 5, 0.0)
print(f"\n{'':<18}{'package':>10}{'by hand':>10}")
print(f"{'clipped surrogate':<18}{float(loss_pkg):>10.4f}{float(loss_hand):>10.4f}")
print(f"{'clip fraction':<18}{float(m_pkg['policy/clipfrac']):>10.4f}"
      f"{float(np.mean(np.abs(rho - 1) > eps)):>10.4f}")
print(f"{'t':>3}{'rho_t':>8}{'A_t':>7}{'dL/dlogpi package':>20}{'by hand':>10}")
for t in range(5):
    print(f"{t:>3}{float(rho[0, t]):>8.3f}{float(toy_adv[0, t]):>7.2f}"
          f"{float(grad_pkg[0, t]) + 0.0:>20.4f}{float(grad_hand[0, t]) + 0.0:>10.4f}")   # + 0.0: no -0

# %% [markdown]
# Token 2 (rho = 1.35, A > 0) is clipped: its gradient is 0, PPO will not push it further.
# Token 3 (rho = 0.74, A > 0) is outside the clip range too, and counts in the clip fraction, but
# there the unclipped term is the pessimistic one: the gradient still pulls it back up.
#
# **The whole iteration** (rollout -> scoring -> shaping -> GAE -> epochs x minibatches of
# updates under `lax.scan` -> KL controller) is one jitted function, `ppo_train.ppo_iteration`,
# called once per iteration from the Python loop below.

# %%
state, history = ppo_train.train_ppo(ref_params, ref_params, rm_params, model_cfg, tok, cfg)
policy = state.train_state.params["policy"]
ppo_train.save_ppo_policy(args.smoke, policy, model_cfg, {"final_kl": float(history["objective/kl"][-1])}, cfg)
print(f"saved {RUNS / 'ppo.ckpt'}; {np.sum(history['time/iteration']):.0f} s for "
      f"{cfg.n_iterations} iterations (first one includes compilation)")

# %%
its = np.arange(1, cfg.n_iterations + 1)
fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
panels = [("objective/scores", "learned reward r_phi (normalised units)"),
          ("gold/reward", "gold reward r* (world units)"),
          ("objective/kl", "KL(pi_theta || pi_ref) (nats / response)"),
          ("policy/clipfrac", "clip fraction (share of tokens)")]
for ax, (name, label) in zip(axes.ravel(), panels):
    ax.plot(its, history[name], marker=".")
    ax.set(ylabel=label)
    ax.grid(alpha=0.3)
for ax in axes[1]:
    ax.set(xlabel="PPO iteration")
fig.suptitle(f"PPO on the capitals world (beta = {cfg.kl.init_beta}, rollout samples)")
fig.tight_layout()
fig.savefig(FIGURES / "05_ppo_curves.png", dpi=120)
print(f"{'iteration':>10}" + "".join(f"{n:>20}" for n, _ in panels) + f"{'gold/accuracy':>16}")
for i in sorted({0, len(its) // 4, len(its) // 2, 3 * len(its) // 4, len(its) - 1}):
    print(f"{i + 1:>10}" + "".join(f"{history[n][i]:>20.3f}" for n, _ in panels)
          + f"{history['gold/accuracy'][i]:>16.3f}")

# %% [markdown]
# ## 4. Before and after
#
# Samples at temperature 1 (what PPO optimised), for the lesson's running question and for
# held-out countries the SFT demos never covered.

# %%
key_show = jax.random.PRNGKey(args.seed + 7)
show = ["What's the capital of France?"] + list(splits["heldout"][:3])
for name, params in (("SFT (pi_ref)", ref_params), ("PPO", policy)):
    samples = sample_answers(params, model_cfg, tok, show, key_show, n=1 if args.smoke else 2)
    print(f"--- {name}")
    for p, y, r in zip(samples.prompts, samples.texts, samples.gold_reward):
        print(f"  {p!r:<40} -> {y!r}  r*={r:+.2f}")

# %% [markdown]
# ## 5. Gold accuracy: SFT vs PPO, with the KL each spent
#
# N_ROWS samples per split.  KL is the Monte-Carlo estimate
# E_y~pi [log pi(y|x) - log pi_ref(y|x)] in nats per response (0 for pi_ref itself).

# %%
results = {}
for name, params in (("SFT", ref_params), ("PPO", policy)):
    ev = evaluate(params)
    results.update({f"{name} {split}": m for split, m in ev.items()})
print(format_table(results, ("gold/accuracy", "gold/reward", "gold/eos_rate", "kl")))
gain = results["PPO heldout"]["gold/accuracy"] - results["SFT heldout"]["gold/accuracy"]
print(f"held-out gold accuracy: SFT {results['SFT heldout']['gold/accuracy']:.3f} -> "
      f"PPO {results['PPO heldout']['gold/accuracy']:.3f} ({gain:+.3f}) at KL "
      f"{results['PPO heldout']['kl']:.2f} nats")

# %% [markdown]
# PPO's reward comes from the train prompts only: gold accuracy rises there, and on held-out
# countries it gains little or falls.  Lesson 09 measures why (the policy learns partly which
# *tokens* good train answers contain), what InstructGPT's pretraining term does about it, and
# what carries over when PPO may change only the final LayerNorm.

# %% [markdown]
# ## 6. The role of beta
#
# Three betas at the same learning rate: 0, the main run's 0.5 and 2 (0.5 we picked by a small
# sweep on the gold reward, which real RLHF cannot see: there one tunes beta on held-out human
# judgements).  With beta = 0 nothing holds the policy near pi_ref,
# the KL grows fast, and the policy is free to exploit the reward model's mistakes: if it
# finds some, the learned reward keeps rising while the gold reward stalls or falls (reward
# hacking, Gao et al. 2023).  With beta = 2 the penalty dominates and the policy barely moves.
#
# The printout below says whether this run shows the pattern (gold peaking early while r_phi
# keeps rising), from its own numbers.  When hacking starts depends on the reward model.  Lesson
# 04's (K-wise comparisons, 0.83 valid accuracy) holds up within 30 iterations: r_phi does not
# climb away from the gold reward, and beta = 0 ends near beta = 0.5's gold reward (0.84 vs 0.80,
# last 20% of iterations) at twice the KL (0.83 vs 0.41 nats).  A better reward model moves the
# point where hacking starts further out (Gao et al. 2023 find the same with larger reward
# models); the KL it costs to get there is what beta still buys.

# %%
SWEEP = (0.0, cfg.kl.init_beta, 2.0)
sweep = {cfg.kl.init_beta: history}               # the main run is the middle of the sweep
for beta in (SWEEP[0], SWEEP[2]):
    sweep_cfg = dataclasses.replace(cfg, kl=dataclasses.replace(cfg.kl, init_beta=beta))
    _, sweep[beta] = ppo_train.train_ppo(ref_params, ref_params, rm_params, model_cfg, tok, sweep_cfg, quiet=True)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for beta in SWEEP:
    h = sweep[beta]
    for ax, name in zip(axes, ("objective/scores", "gold/reward", "objective/kl")):
        ax.plot(its, h[name], label=f"beta = {beta}")
for ax, label in zip(axes, ("learned reward r_phi (normalised units)", "gold reward r* (world units)",
                            "KL(pi_theta || pi_ref) (nats / response)")):
    ax.set(xlabel="PPO iteration", ylabel=label)
    ax.grid(alpha=0.3)
axes[0].legend()
fig.suptitle(f"beta sweep at lr {cfg.lr} (rollout samples of each iteration)")
fig.tight_layout()
fig.savefig(FIGURES / "05_beta_sweep.png", dpi=120)
tail = slice(-max(len(its) // 5, 1), None)                   # mean of the last 20% of iterations
print(f"{'beta':>8}{'r_phi':>10}{'gold r*':>10}{'gold acc':>10}{'KL':>10}   (last 20% of iterations)")
for beta in SWEEP:
    h = sweep[beta]
    print(f"{beta:>8}{h['objective/scores'][tail].mean():>10.3f}{h['gold/reward'][tail].mean():>10.3f}"
          f"{h['gold/accuracy'][tail].mean():>10.3f}{h['objective/kl'][tail].mean():>10.2f}")
small = sweep[SWEEP[0]]
peak = int(np.argmax(small["gold/reward"]))
print(f"beta = {SWEEP[0]}: gold reward peaked at iteration {peak + 1} ({small['gold/reward'][peak]:.3f}) "
      f"and ended at {small['gold/reward'][tail].mean():.3f} while r_phi went "
      f"{small['objective/scores'][peak]:.3f} -> {small['objective/scores'][tail].mean():.3f}")
# %% [markdown]
# ## 7. The exact check: PPO reaches the closed-form optimum
#
# On the exact world (2 prompts x 27 responses, lesson 01) the optimum of
# E[r] - beta KL(pi || pi_ref) is known: pi*_beta = pi_ref exp(r / beta) / Z.  The same PPO
# pieces (`ppo.shape_rewards`, `ppo.gae`, `ppo.policy_loss`, `ppo.ppo_update`), driving a
# tabular policy (`minirlhf/exact/training.py`), should converge to it: we print the exact
# KL(pi_theta || pi*_beta) before and after, and the exact expected reward against pi*_beta's.

# %%
world = make_exact_world(ExactWorldConfig(n_prompts=2, alphabet_size=3, length=3, seed=0))
exact_cfg = et.TabularPPOConfig(beta=0.3, n_iterations=20 if args.smoke else 200)
logp_star = exact.optimal_policy(world.logp_ref, world.reward, exact_cfg.beta)
_, exact_hist = jax.jit(lambda k: et.run_ppo(world, exact_cfg, k))(jax.random.PRNGKey(args.seed))
kl_before = float(np.mean(exact.kl(world.logp_ref, logp_star)))
kl_after = float(exact_hist["exact/kl_to_optimum"][-1])
print(f"exact world, beta = {exact_cfg.beta}: KL(pi || pi*_beta) {kl_before:.4f} at pi_ref -> "
      f"{kl_after:.2e} after {exact_cfg.n_iterations} PPO iterations ({kl_before / max(kl_after, 1e-12):.0f}x lower); "
      f"expected reward {float(np.mean(exact.expected_reward(world.logp_ref, world.reward))):.4f} -> "
      f"{float(exact_hist['exact/expected_reward'][-1]):.4f} "
      f"(pi*_beta: {float(np.mean(exact.expected_reward(logp_star, world.reward))):.4f})")

print(f"lesson 05 ran in {time.time() - t_start:.0f} s")
