# %% [markdown]
# # Lesson 07: GRPO, Dr. GRPO and RLOO — policy gradients without a critic
#
# PPO (lesson 05) trains a value head to tell good tokens from bad ones.  For a response that
# gets ONE score at the end, a cheaper baseline is available: sample G answers to the same
# prompt and compare each answer with its group mates.  Three recipes differ in how:
#
#     GRPO      A_i = (r_i - mean_g r) / (std_g r + eps)        Shao et al. 2024 (DeepSeekMath)
#     Dr. GRPO  A_i =  r_i - mean_g r                           Liu et al. 2025
#     RLOO      A_i =  r_i - 1/(G-1) sum_{j != i} r_j           Ahmadian et al. 2024
#
# and in where they put the KL to pi_ref: GRPO adds k3 per token to the LOSS, RLOO (like PPO)
# subtracts beta * log(pi / pi_ref) from the REWARD.  This lesson shows each equation on
# hand-made numbers, then asks the exact world (lesson 01) what each objective converges to
# — the two KL placements do not land on the same policy — and how large each finite-group
# gradient's bias is.  Section 5 trains GRPO, RLOO and expert iteration on the capitals world,
# with lesson 04's learned reward and with the verifiable gold reward.

# %%
import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minirlhf import expert_iteration, grpo, grpo_train, paths
from minirlhf.evaluation import evaluate_policy, format_table
from minirlhf.exact import grpo as eg
from minirlhf.exact import world as exact
from minirlhf.pretrain import ensure_tokenizer
from minirlhf.reward import ensure_reward_model
from minirlhf.sft import ensure_sft_model
from minirlhf.worlds import capitals as cw

t_start = time.time()
args = paths.lesson_args()
FIGURES = paths.figures_dir(args.smoke)
SMOKE = args.smoke

# %% [markdown]
# ## 1. Group advantages
#
# Two prompts, G = 4 answers each: the first group scored by a verifier (1 = right), the second
# by a graded reward.  `grpo.group_advantages(rewards [P, G], kind)` beside the formulas in plain
# NumPy.  GRPO's std is the population std of the group (ddof = 0).
#
# Two identities to read off the table: RLOO's advantages sum to 0 in every group, and they
# are G/(G-1) = 4/3 times Dr. GRPO's, because r_i - mean_{j != i} r_j = G/(G-1) (r_i - mean r).
# A group whose answers all score the same (all right, or all wrong) carries no signal: every
# advantage is 0, and GRPO's eps keeps 0 / 0 from becoming nan.

# %%
rewards = np.array([[1.0, 0.0, 0.0, 1.0],
                    [0.2, 0.9, 0.4, 0.5]])                            # [P=2, G=4]
mean = rewards.mean(-1, keepdims=True)
std = np.sqrt(((rewards - mean) ** 2).mean(-1, keepdims=True))        # population std
by_hand = {"grpo": (rewards - mean) / (std + 1e-4),
           "drgrpo": rewards - mean,
           "rloo": rewards - (rewards.sum(-1, keepdims=True) - rewards) / 3}
group_advantages = jax.jit(grpo.group_advantages, static_argnames="kind")   # one program per kind
print(f"{'kind':<8}{'group':>6}   {'package':<34}{'by hand':<34}{'sum':>7}")
for kind, hand in by_hand.items():
    pkg = np.asarray(group_advantages(rewards, kind))
    for p in range(2):
        print(f"{kind:<8}{p:>6}   {np.array2string(pkg[p], precision=4):<34}"
              f"{np.array2string(hand[p], precision=4):<34}{float(pkg[p].sum()):>7.3f}")
rloo, dr = (np.asarray(group_advantages(rewards, kind)) for kind in ("rloo", "drgrpo"))
print(f"max |RLOO - 4/3 Dr. GRPO| = {float(np.max(np.abs(rloo - 4 / 3 * dr))):.1e}")
print(f"constant group [0.5, 0.5, 0.5, 0.5] -> GRPO advantages "
      f"{np.asarray(group_advantages(np.full((1, 4), 0.5), 'grpo')[0])}")

# %% [markdown]
# ## 2. The clipped per-token surrogate and its three normalisations
#
# Every token of answer i gets the answer's advantage A_i.  With rho_it = pi_theta / pi_old,
#
#     l_it = -min( rho_it A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) A_i )
#
# (PPO's clip per token; eps_high > eps_low is DAPO's "clip-higher", Yu et al. 2025, which
# lets unlikely tokens with A > 0 grow further before the clip stops them).  Then the tokens
# are averaged, and the papers disagree on how (n_i = length of answer i, B answers):
#
#     "sequence"  1/B sum_i 1/n_i sum_t l_it      GRPO: every ANSWER weighs the same
#     "token"     sum_{i,t} l_it / sum_i n_i      DAPO: every TOKEN weighs the same
#     "constant"  sum_{i,t} l_it / (B * L_max)    Dr. GRPO: a constant that ignores lengths
#
# Under "sequence" a token of a long answer weighs 1/n_i: a long WRONG answer is penalised less
# per token than a short wrong one, so the loss itself prefers long wrong answers (Liu et al.
# 2025's length bias).  Two answers of lengths 2 and 5, right-padded to T = 6, advantages +1 and
# -1, on-policy (rho = 1): the gradient dL/d log pi_theta(y_it) = -A_i rho_it w_it shows each
# token's weight w_it.

# %%
T = 6
mask = np.array([[1.0, 1, 0, 0, 0, 0],
                 [1.0, 1, 1, 1, 1, 0]])                                     # [B=2, T=6]
old_logps = np.array([[-0.5, -1.0, 0, 0, 0, 0],
                      [-0.7, -0.2, -1.3, -0.4, -0.9, 0]])                    # [2, 6]
new_logps = old_logps + np.array([[0.1, 0.3, 0, 0, 0, 0],
                                  [-0.1, 0.0, 0.2, -0.3, 0.05, 0]])          # [2, 6]
adv = np.array([1.0, -1.0])                                                  # [B]
lengths = mask.sum(-1)
rho = np.exp(new_logps - old_logps)
per_tok = np.maximum(-adv[:, None] * rho, -adv[:, None] * np.clip(rho, 0.8, 1.2)) * mask
hand = {"sequence": np.mean(per_tok.sum(-1) / lengths),
        "token": per_tok.sum() / lengths.sum(),
        "constant": per_tok.sum() / (2 * T)}


@partial(jax.jit, static_argnames="norm")
def package_loss_and_grad(norm):
    """The package's loss at new_logps and its gradient at rho = 1 (one compiled program)."""
    loss = lambda x: grpo.clipped_policy_loss(x, old_logps, adv, mask, norm=norm)[0]
    return loss(new_logps), jax.grad(loss)(old_logps)


print(f"{'norm':<10}{'package':>10}{'by hand':>10}   token weights of answer 0 | answer 1 "
      f"(-dL/dlogpi / (A rho), rho = 1)")
for norm in grpo.NORMALISATIONS:
    loss_pkg, g = package_loss_and_grad(norm)
    w = -np.asarray(g) / adv[:, None]
    print(f"{norm:<10}{float(loss_pkg):>10.4f}{float(hand[norm]):>10.4f}   "
          f"{np.round(w[0, :2], 3)} | {np.round(w[1, :5], 3)}")

# %% [markdown]
# Clip-higher on one token with A > 0: at rho = 1.25 the symmetric clip (0.2, 0.2) has already
# stopped the gradient, DAPO's (0.2, 0.28) has not.

# %%
one = np.ones((1, 1))
grad_one_token = jax.jit(jax.grad(lambda x, lo, hi: grpo.clipped_policy_loss(
    x, np.zeros((1, 1)), np.ones(1), one, clip_eps_low=lo, clip_eps_high=hi)[0]))
for lo, hi in ((0.2, 0.2), (0.2, 0.28)):
    g = grad_one_token(np.log(1.25) * one, lo, hi)
    print(f"clip ({lo}, {hi}): dL/dlogpi at rho = 1.25, A = +1: package {float(g[0, 0]):+.3f}, "
          f"by hand {-1.25 if 1.25 <= 1 + hi else 0.0:+.3f}")

# %% [markdown]
# ## 3. Where the KL goes: k1 in the reward, or k3 in the loss
#
# **In the reward (PPO, RLOO).**  R(y) = r(y) - beta log(pi(y) / pi_ref(y)) is a constant to the
# gradient (k1 summed over the answer, `grpo.kl_penalised_rewards`).  Its expected policy
# gradient is
#
#     E_pi[(R - b) d log pi] = d ( E_pi[r] - beta KL(pi || pi_ref) )     for any baseline b,
#
# the gradient of the objective whose maximiser is pi*_beta = pi_ref exp(r / beta) / Z.
#
# **In the loss (GRPO, Shao et al. 2024 eq. 4).**  k3 = pi_ref/pi - log(pi_ref/pi) - 1 per
# token, differentiated through log pi: d k3 / d log pi = 1 - pi_ref / pi.  Its expectation
# under y ~ pi is
#
#     E_pi[(1 - pi_ref/pi) d log pi] = sum_y (pi - pi_ref) d log pi = -sum_y pi_ref d log pi
#                                    = d KL(pi_ref || pi),
#
# the gradient of the FORWARD KL, not of KL(pi || pi_ref) that k3 estimates in value.  On a
# 3-response bandit, the package's exact expected losses (`exact.grpo.expected_loss`) beside
# the two objectives differentiated directly:

# %%
toy_ref = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))            # log pi_ref   [P=1, N=3]
toy_r = jnp.array([[0.0, 1.0, 0.3]])                       # r(y)         [1, 3]
toy_z = jnp.array([[0.2, -0.4, 0.1]])                      # logits of pi [1, 3]
beta = 0.5


def reverse_objective(z):  # E_pi[r] - beta KL(pi || pi_ref)
    lp = jax.nn.log_softmax(z)
    return jnp.sum(jnp.exp(lp) * (toy_r - beta * (lp - toy_ref)))


def forward_objective(z):  # E_pi[r] - beta KL(pi_ref || pi)
    lp = jax.nn.log_softmax(z)
    return jnp.sum(jnp.exp(lp) * toy_r) - beta * jnp.sum(jnp.exp(toy_ref) * (toy_ref - lp))


expected_gradient = jax.jit(jax.grad(eg.expected_loss), static_argnums=(3, 4))   # one program each
for kl_in, objective, name in (("reward", reverse_objective, "-d(E r - beta KL(pi||ref))"),
                               ("loss", forward_objective, "-d(E r - beta KL(ref||pi))")):
    pkg = expected_gradient(toy_z, toy_ref, toy_r, beta, eg.ExactPGConfig(kl_in=kl_in))
    print(f"KL in the {kl_in:<7} package {np.round(np.asarray(pkg[0]), 5)}   "
          f"{name} {np.round(np.asarray(-jax.jit(jax.grad(objective))(toy_z)[0]), 5)}")

# %% [markdown]
# ## 4. The exact world: what each objective converges to
#
# Lesson 01's exact world (4 prompts, 256 responses each).  The policy is a softmax over the
# responses of each prompt and training follows the EXACT expected gradient of each method's
# loss (an infinite group, on-policy, so the clip never acts): whatever it converges to is the
# objective's own fixed point, with no sampling noise.  `exact.grpo.train_exact_pg`, one jitted
# lax.scan, vmapped over beta.
#
# **GRPO's fixed point.**  With the mean baseline (r - mean r: Dr. GRPO's advantage, and the
# G -> inf limit of RLOO's) and k3 in the loss, d/dz_y of the expected loss is
#
#     -pi(y) (r(y) - c) + beta (pi(y) - pi_ref(y)),    c = E_pi[r],
#
# (d pi(y') / d z_y = pi(y') (1[y = y'] - pi(y)); the baseline term vanishes because
# sum_y pi (r - c) = 0).  Setting it to 0:
#
#     pi(y) = beta pi_ref(y) / (beta - r(y) + c),
#
# with c chosen so that sum_y pi(y) = 1 (c > max_y r - beta keeps every denominator positive;
# then E_pi[r] = c follows from summing the stationarity condition).  `grpo_fixed_point` finds
# c by bisection.  Compare pi*_beta = pi_ref exp(r / beta) / Z: exponential tilting against a
# hyperbolic one, which keeps a floor of beta pi_ref / (beta + c - r) on bad answers (the
# forward KL is mass-covering) but piles more mass on the best ones.
#
# Here the whole response is one action, so k3 is the sequence-level one.  A language model's
# GRPO sums k3 over TOKENS; the same argument then gives the forward KL of each next-token
# distribution, KL(pi_ref(.|x, y_<t) || pi(.|x, y_<t)), averaged over the prefixes pi itself
# writes: again not KL(pi || pi_ref), and its fixed point differs from this sequence-level one.

# %%
world = exact.make_exact_world(exact.ExactWorldConfig(n_prompts=2 if SMOKE else 4,
                                                      length=3 if SMOKE else 4,
                                                      seed=args.seed))
BETAS = jnp.array([0.1, 0.3] if SMOKE else [0.03, 0.1, 0.3, 1.0])
N_STEPS = 300 if SMOKE else 4000


def train_all(kl_in, baseline):
    """Exact training at every beta of BETAS in one compiled call -> (log pi [M, P, N], history)."""
    cfg = eg.ExactPGConfig(kl_in=kl_in, baseline=baseline, n_steps=N_STEPS)
    return jax.jit(jax.vmap(lambda b: eg.train_exact_pg(world.logp_ref, world.reward, b, cfg)))(
        BETAS)


t0 = time.time()
runs = {"k1 in reward (PPO / RLOO)": train_all("reward", "mean"),
        "k3 in loss, r - mean (Dr. GRPO)": train_all("loss", "mean"),
        "k3 in loss, (r - mean)/std (GRPO)": train_all("loss", "mean_std"),
        "k1 in reward, (R - mean)/std": train_all("reward", "mean_std")}
print(f"exact training: {len(runs)} objectives x {len(BETAS)} betas x {N_STEPS} steps "
      f"in {time.time() - t0:.1f} s")
K1, DR, GRPO_STD, K1_STD = runs
print(f"{'objective':<36}{'beta':>6}{'KL to pi*':>13}{'KL to GRPO fp':>15}"
      f"{'KL(pi||ref)':>13}{'E[r]':>8}")
for name, (_, h) in runs.items():
    for i, b in enumerate(np.asarray(BETAS)):
        print(f"{name:<36}{b:>6.2f}"
              f"{h['kl_to_optimum'][i, 0]:>6.2f}->{max(float(h['kl_to_optimum'][i, -1]), 0):.0e}"
              f"{h['kl_to_grpo_fixed_point'][i, 0]:>7.2f}->"
              f"{max(float(h['kl_to_grpo_fixed_point'][i, -1]), 0):.0e}"
              f"{h['kl_to_ref'][i, -1]:>13.3f}{h['expected_reward'][i, -1]:>8.3f}")


@jax.jit
def fixed_point_kls(b):
    """KL(GRPO fixed point || pi*_beta), KL(fixed point || pi_ref), KL(pi*_beta || pi_ref), means
    over prompts (beta traced: one program for every beta)."""
    fp = eg.grpo_fixed_point(world.logp_ref, world.reward, b)
    star = exact.optimal_policy(world.logp_ref, world.reward, b)
    return (exact.kl(fp, star).mean(), exact.kl(fp, world.logp_ref).mean(),
            exact.kl(star, world.logp_ref).mean())


for b in np.asarray(BETAS):
    kl_fp_star, kl_fp_ref, kl_star_ref = (float(x) for x in fixed_point_kls(b))
    print(f"beta = {b:.2f}: KL(GRPO fixed point || pi*_beta) = {kl_fp_star:.3f} nats; "
          f"KL(. || pi_ref): fixed point {kl_fp_ref:.3f}, pi*_beta {kl_star_ref:.3f}")

# %% [markdown]
# The k1 run lands on pi*_beta and the k3 run on its own fixed point, to float32 precision
# except at the smallest beta, where pi*_beta is nearly deterministic and the k1 run is still
# closing in after its 4000 steps (right panel of the figure below).  The two targets are
# nats apart at the betas where the KL term matters.  At the
# same beta GRPO's fixed point spends more KL(pi || pi_ref): the forward KL barely charges for
# mass moved ONTO responses pi_ref rarely writes.  So "beta" does not mean the same thing in a
# GRPO config and in a PPO config.  Is the fixed point at least efficient, i.e. on the
# reward–KL frontier?  pi*_beta maximises E[r] - beta KL(pi || pi_ref), so no policy lies above
# pi*'s curve; the figure puts GRPO's fixed points beside it.

# %%
beta_grid = np.geomspace(0.01, 10.0, 12 if SMOKE else 40)
front = jax.device_get(eg.frontier(world.logp_ref, world.reward, beta_grid))   # numpy from here
star_kl, star_r = (np.asarray(x).mean(-1) for x in jax.jit(exact.optimal_frontier)(   # a fine
    world.logp_ref, world.reward, np.geomspace(1e-3, 30.0, 2000)))                   # pi* curve
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
ax1.plot(star_kl, star_r, "-", color="k", label="pi*_beta (k1 optimum)")
ax1.plot(front["grpo_kl"], front["grpo_reward"], "--", color="C1",
         label="GRPO fixed point (k3 in the loss)")
markers = {K1: ("o", "k"), DR: ("s", "C1"), GRPO_STD: ("^", "C3")}
for name, (marker, color) in markers.items():
    h = runs[name][1]
    ax1.scatter(h["kl_to_ref"][:, -1], h["expected_reward"][:, -1], marker=marker, color=color,
                zorder=3, label=f"trained: {name}")
ax1.set(xlabel="KL(pi || pi_ref)  (nats, mean over prompts)", ylabel="E_pi[r]",
        title="reward vs KL: each method's endpoints at the betas of the table")
ax1.legend(fontsize=7)
ax1.grid(alpha=0.3)
steps = np.arange(1, N_STEPS + 1)
for i, b in enumerate(np.asarray(BETAS)):
    ax2.plot(steps, np.maximum(runs[K1][1]["kl_to_optimum"][i], 1e-8), color=f"C{i}",
             label=f"k1 -> pi*_beta, beta={b:.2f}")
    ax2.plot(steps, np.maximum(runs[DR][1]["kl_to_grpo_fixed_point"][i], 1e-8), "--",
             color=f"C{i}", label=f"Dr. GRPO -> its fixed point, beta={b:.2f}")
ax2.set(xscale="log", yscale="log", xlabel="exact gradient step",
        ylabel="KL(pi || target)  (nats)", title="convergence to each objective's fixed point")
ax2.legend(fontsize=7)
ax2.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(FIGURES / "07_exact_frontier.png", dpi=120)
plt.close(fig)
order = np.argsort(star_kl)                                     # pi*'s curve as E[r](KL)
inside = np.asarray(front["grpo_kl"]) <= star_kl.max()
gap = (np.interp(front["grpo_kl"], star_kl[order], star_r[order]) - front["grpo_reward"])[inside]
print(f"wrote {FIGURES / '07_exact_frontier.png'}; at equal KL(pi || pi_ref) GRPO's fixed points "
      f"get {round(float(np.min(gap)), 4) + 0.0:.4f} .. {float(np.max(gap)):.4f} less E[r] than pi*'s frontier")

# %% [markdown]
# ### Dividing by the std
#
# GRPO divides the centred reward by the group's std s.  In the stationarity condition
# pi (r - c) / s = beta (pi - pi_ref) that is the same as the Dr. GRPO fixed point with an
# EFFECTIVE beta_eff = beta * s, where s = std_pi(r) is measured under the policy itself.  With
# the KL in the loss the std therefore changes what training converges to: wherever the
# policy's reward spread is below 1, the KL term weighs less.  (With the KL in the reward the
# std only rescales the whole gradient by a positive number per prompt: the fixed point stays
# pi*_beta, the last row of the table above.)  Per beta: the reward std at pi_ref and at the
# endpoint, the effective beta, and the KL it spends with and without the std.

# %%
print(f"{'beta':>6}{'std at pi_ref':>15}{'std at end':>12}{'beta_eff':>10}"
      f"{'KL(pi||ref) GRPO':>18}{'Dr. GRPO':>10}{'KL to fp(beta_eff)':>20}")
lp_std, h_std = runs[GRPO_STD]


@jax.jit
def effective_beta(lp, b):
    """beta_eff = beta * mean std_pi(r) at the end point lp [P, N], and KL(lp || fp(beta_eff))."""
    pi = jnp.exp(lp)
    m = jnp.sum(pi * world.reward, -1, keepdims=True)
    s = jnp.sqrt(jnp.sum(pi * (world.reward - m) ** 2, -1, keepdims=True))      # [P, 1]
    fp_eff = eg.grpo_fixed_point(world.logp_ref, world.reward, b * (s + 1e-4))
    return b * s.mean(), exact.kl(lp, fp_eff).mean()


for i, b in enumerate(np.asarray(BETAS)):
    beta_eff, kl_to_fp = (float(x) for x in effective_beta(lp_std[i], b))
    print(f"{b:>6.2f}{h_std['reward_std'][i, 0]:>15.3f}{h_std['reward_std'][i, -1]:>12.3f}"
          f"{beta_eff:>10.4f}{h_std['kl_to_ref'][i, -1]:>18.3f}"
          f"{runs[DR][1]['kl_to_ref'][i, -1]:>10.3f}{max(kl_to_fp, 0):>20.1e}")

# %% [markdown]
# In this world rewards lie in [0, 1] and their std is well below 1, so the std division
# multiplies the KL coefficient by a small number: GRPO ends further from pi_ref than Dr. GRPO
# at every beta.  And beta_eff moves during training.  At small beta the policy sharpens onto
# the best answers, their std falls, the KL term weighs less still and the policy sharpens
# more: a feedback loop.  At large beta the endpoint keeps pi_ref's floor under the bad answers
# beside a peak on the good ones, a spread larger than pi_ref's.  Dr. GRPO's plain r - mean has
# neither effect: its beta is the same number at every step.  The last column checks the
# explanation: each GRPO endpoint is the Dr. GRPO fixed point of its own beta_eff.
#
# ### Finite groups: bias and variance of the gradient
#
# With G answers the gradient estimate is g_hat = (1/G) sum_i A_i d log pi(y_i).  Against the
# exact d E_pi[r] (no KL, at pi_ref, per prompt), from many independent groups:
#
#   * RLOO: the baseline excludes y_i, so E[g_hat] = d E[r]: unbiased;
#   * Dr. GRPO: the mean includes r_i itself; E[(r_i - mean r) d log pi(y_i)] = (G-1)/G d E[r];
#   * GRPO: dividing by the group's own std reweights groups: not a multiple of d E[r].
#
# `scale` = <E g_hat, g> / |g|^2 (1 = the right size), `cos` = the angle of E g_hat to g,
# `bias` = |E g_hat - g| / |g|, `variance` = E|g_hat - E g_hat|^2 / |g|^2, mean over prompts.

# %%
N_DRAWS = 2000 if SMOKE else 20000
GROUPS = (2, 4) if SMOKE else (2, 4, 16)
t0 = time.time()
table = eg.finite_group_table(world.logp_ref, world.reward, GROUPS, jax.random.PRNGKey(args.seed),
                              N_DRAWS)
print(f"{N_DRAWS} groups per (estimator, G), {time.time() - t0:.1f} s")
print(f"{'estimator':<10}{'G':>4}{'scale':>9}{'(G-1)/G':>9}{'cos':>8}{'bias':>8}{'variance':>10}"
      f"{'variance/scale^2':>18}")
for (kind, G), s in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"{kind:<10}{G:>4}{s['scale']:>9.3f}{(G - 1) / G:>9.3f}{s['cos']:>8.4f}"
          f"{s['rel_bias']:>8.3f}{s['rel_variance']:>10.2f}{s['rel_variance'] / s['scale']**2:>18.2f}")

# %% [markdown]
# RLOO's scale is 1 up to sampling noise and Dr. GRPO's is (G-1)/G (tests/test_exact_grpo.py
# pins both exactly, by enumerating every group).  Dr. GRPO's bias is only a step size —
# it points the right way — and vanishes as G grows.  GRPO's scale is about 1/std(r) (rewards
# are divided by the group std), and its direction is slightly off: groups with a small spread
# get amplified.  RLOO is Dr. GRPO times G/(G-1) on every group, so the two have the same
# direction and the same noise per unit of signal (variance / scale^2); that noise falls
# roughly like 1/G.  GRPO's direction is furthest off at G = 2: with two answers every group
# that is not a tie gets advantages exactly +1 and -1, whatever the size of the reward gap.

# %% [markdown]
# ## 5. The capitals world: GRPO, RLOO and expert iteration on the transformer
#
# From pi_ref (lesson 03's SFT model), `grpo_train.train_grpo` runs each recipe on the train
# prompts, G answers per prompt, one jitted call per iteration (sample -> score -> group
# advantages -> update).  Two rewards:
#
#   * "model": lesson 04's reward model r_phi, as PPO used in lesson 05;
#   * "gold":  a verifiable reward (RLVR): 1 if the answer names the prompt's capital and no other
#              capital, else 0 — exactly the gold accuracy, computed from the token ids inside
#              the jit.
#
# GRPO runs as published (std division, k3 in the loss, "sequence" normalisation), RLOO with its
# leave-one-out baseline and the KL as k1 in the reward.  The estimator, the reward and the KL
# placement enter the jitted iteration as data (`grpo_train.Recipe`), so the four runs share
# one compiled program: only the first run's first iteration pays for compilation.  Expert iteration
# (`expert_iteration.expert_iteration`; STaR, Zelikman et al. 2022, without rationales) needs no
# gradient of any reward: sample G answers, keep the ones the verifier accepts, fine-tune on
# them with the SFT loss, repeat.
#
# Every policy is then evaluated the same way as in lesson 05 (`evaluation.evaluate_policy`):
# gold accuracy of fresh temperature-1 samples on the train prompts, on held-out countries and
# on the out-of-distribution prompt template, and the Monte-Carlo KL(pi || pi_ref) per response.

# %%
tok = ensure_tokenizer(SMOKE)
ref_params, model_cfg = ensure_sft_model(SMOKE, args.seed)   # pi_ref (lesson 03), built if missing
rm_params, _ = ensure_reward_model(SMOKE, args.seed)         # r_phi (lesson 04), built if missing
t_capitals = time.time()
base = grpo_train.GRPOConfig.smoke() if SMOKE else grpo_train.GRPOConfig(n_iterations=15)
base = dataclasses.replace(base, seed=args.seed)
RECIPES = {"GRPO, r_phi": {"estimator": "grpo", "kl_in": "loss", "reward": "model"},
           "RLOO, r_phi": {"estimator": "rloo", "kl_in": "reward", "reward": "model"},
           "GRPO, verifier": {"estimator": "grpo", "kl_in": "loss", "reward": "gold"},
           "RLOO, verifier": {"estimator": "rloo", "kl_in": "reward", "reward": "gold"}}
if SMOKE:   # two runs cover both estimators, both rewards and both KL placements
    RECIPES = {k: RECIPES[k] for k in ("GRPO, r_phi", "RLOO, verifier")}
policies, histories = {"SFT (pi_ref)": ref_params}, {}
for name, fields in RECIPES.items():
    t0 = time.time()
    cfg = dataclasses.replace(base, **fields)
    policies[name], histories[name] = grpo_train.train_grpo(   # r_phi given to every recipe:
        ref_params, ref_params, rm_params, model_cfg, tok, cfg, quiet=True)   # one program
    its = histories[name]["time/iteration"]
    print(f"{name:<16} {cfg.n_iterations} iterations of {cfg.prompts_per_iteration} prompts x "
          f"G = {cfg.group_size} in {time.time() - t0:.1f} s (first iteration, with compilation, "
          f"{its[0]:.1f} s; then {np.mean(its[1:]) if len(its) > 1 else 0.0:.2f} s each)")
ei_cfg = dataclasses.replace(expert_iteration.ExpertIterationConfig.smoke() if SMOKE
                             else expert_iteration.ExpertIterationConfig(), seed=args.seed)
t0 = time.time()
policies["expert iteration"], ei_history = expert_iteration.expert_iteration(
    ref_params, model_cfg, tok, ei_cfg, quiet=True)
print(f"expert iteration: {ei_cfg.rounds} rounds of {ei_cfg.samples_per_prompt} samples per "
      f"prompt + {ei_cfg.sft_steps} SFT steps in {time.time() - t0:.1f} s; kept "
      f"{ei_history['kept'].astype(int).tolist()} verified answers per round")

# %%
splits = {name: cw.split_prompts(name) for name in cw.SPLITS}
N_ROWS = 8 if SMOKE else 256        # evaluation samples per split, as in lesson 05
key_eval = jax.random.PRNGKey(args.seed + 11)   # the same sampling randomness for every policy
results = {}
for name, params in policies.items():
    for split, prompts in splits.items():
        m = evaluate_policy(params, ref_params, model_cfg, tok, {split: prompts}, key_eval,
                            max(N_ROWS // len(prompts), 1))[split]
        results.setdefault(name, {})[f"{split} acc"] = m["gold/accuracy"]
        results[name][f"{split} KL"] = m["kl"]
print(format_table(results, ("train acc", "heldout acc", "ood acc", "train KL", "heldout KL")))
sft = results["SFT (pi_ref)"]
for name, m in results.items():
    if name != "SFT (pi_ref)":
        print(f"{name:<18} gold accuracy vs pi_ref: train {m['train acc'] - sft['train acc']:+.3f}, "
              f"held-out {m['heldout acc'] - sft['heldout acc']:+.3f}, "
              f"OOD {m['ood acc'] - sft['ood acc']:+.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for name, h in histories.items():
    its = np.arange(1, len(h["kl"]) + 1)
    axes[0].plot(its, h["gold/accuracy"], label=name)
    axes[1].plot(its, h["kl"], label=name)
axes[0].set(xlabel="iteration", ylabel="gold accuracy of the rollouts",
            title="train prompts, samples of each iteration")
axes[1].set(xlabel="iteration", ylabel="KL(pi || pi_ref)  (nats / response)",
            title="KL of the rollouts")
rounds = np.arange(1, len(ei_history["gold/accuracy"]) + 1)
axes[2].plot(rounds, ei_history["gold/accuracy"], "o-", color="k")
axes[2].set_xticks(rounds)
axes[2].set(xlabel="expert-iteration round", ylabel="gold accuracy of the round's samples",
            title="expert iteration (sample, keep verified, SFT)")
for ax in axes:
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "07_capitals_curves.png", dpi=120)
plt.close(fig)
print(f"wrote {FIGURES / '07_capitals_curves.png'}; section 5 took {time.time() - t_capitals:.0f} s")

# %% [markdown]
# What to read in the table: the verifier's reward IS the gold accuracy on the train prompts, so
# the verifier runs optimise the train column directly, while the r_phi runs optimise lesson
# 04's imperfect stand-in for it.  Held-out countries and the OOD template are never trained on:
# what moves there is what the policy learned beyond the train answers (lesson 09 takes this
# question apart).  Expert iteration has no KL term and no advantage at all: it imitates its
# own verified samples, and its KL column shows how far that moved it.  The lines under the
# table give each policy's change in gold accuracy against pi_ref, split by split.

# %%
print(f"lesson 07 done in {time.time() - t_start:.0f} s")
