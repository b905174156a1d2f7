# %% [markdown]
# # Lesson 10: from toy to cluster
#
# Every step of this course (SFT, the reward model, PPO, DPO) ran on one CPU.  Real runs
# use many accelerators.  The point of this lesson: **the losses do not change**.  JAX's SPMD
# machinery lets us *declare* where arrays live — at the `jax.jit` boundary — and the XLA
# compiler writes the parallel program, including the communication.
#
# Here we have no GPU, so we make one CPU pretend to be 4 devices.  The flag must be set
# before JAX starts, hence this first cell, before any `import jax`.

# %%
import os

N_DEVICES = 4
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={N_DEVICES}")

import importlib.util
import json
import time

import jax
import numpy as np

from minirlhf import distributed, model, paths
from minirlhf.dpo import dpo_loss
from minirlhf.training import FEW_STEPS, init_train_state, make_optimizer, make_train_step

t_start = time.time()
args = paths.lesson_args()
RUNS, FIGURES = paths.runs_dir(args.smoke), paths.figures_dir(args.smoke)
print(f"smoke={args.smoke} seed={args.seed}")
print(f"devices: {jax.devices()}")
print("(no GPU in this session: 4 fake CPU devices, all sharing the same 2 cores)")

# %% [markdown]
# ## 1. One DPO step on one device
#
# The DPO loss (lesson 06, Rafailov et al. 2023 eq. 7) over summed sequence log-probs,
#
# $$L = -\frac{1}{B}\sum_{i=1}^{B} \log\sigma\Big(\beta\big[(\log\pi_\theta(y_w^i) - \log\pi_{ref}(y_w^i))
#       - (\log\pi_\theta(y_l^i) - \log\pi_{ref}(y_l^i))\big]\Big),$$
#
# is a **mean over the batch**.  That one fact is what makes data parallelism exact: the
# gradient of a mean over B rows is the mean of the gradients over D shards of B/D rows.
# The preference pairs here are random token sequences (the mechanics do not care), the
# policy starts at the reference, as in DPO.
#
# Compile time is a cost like run time.  Each step of this lesson's sections 1-3 runs 3 times,
# so it is compiled with `training.FEW_STEPS`, XLA's backend optimisation passes off: on a CPU
# that compiles the step in a bit over half the time and runs it about half as fast, a good
# trade for 3 steps and a bad one for 300 (lesson 02's pretraining keeps the defaults).

# %%
if args.smoke:
    cfg, B, T = model.GPTConfig(vocab_size=64, max_len=16, n_layer=1, n_head=2, d_model=32), 8, 16
else:
    cfg, B, T = model.GPTConfig(vocab_size=512, max_len=48, n_layer=3, n_head=4, d_model=96), 32, 48
N_STEPS, BETA = 3, 0.1


def sequences(rng) -> dict:
    """Right-padded `<bos> prompt response <eos>` rows: tokens, attention_mask, response_mask [B, T]."""
    tokens = rng.integers(3, cfg.vocab_size, (B, T)).astype(np.int32)
    lengths = rng.integers(T // 2, T + 1, B)
    attn = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    tokens[:, 0], tokens[np.arange(B), lengths - 1] = 1, 2
    return {"tokens": tokens * attn, "attention_mask": attn,
            "response_mask": (attn * (np.arange(T)[None] >= T // 4)).astype(np.int32)}


@jax.jit
def seq_logps(params, s):                                                        # [B]
    return model.sequence_logprobs(params, s["tokens"], s["attention_mask"], s["response_mask"], cfg)


def dpo_batch_loss(params, batch):
    """The single-device DPO loss: policy log-probs from the model, reference ones precomputed."""
    return dpo_loss(seq_logps(params, batch["chosen"]), seq_logps(params, batch["rejected"]),
                    batch["reference_chosen_logps"], batch["reference_rejected_logps"], beta=BETA)


policy = model.init_params(jax.random.PRNGKey(args.seed), cfg)
reference = policy                                           # DPO starts at pi_ref
rng = np.random.default_rng(args.seed)
batches = []
for _ in range(N_STEPS):
    chosen, rejected = sequences(rng), sequences(rng)
    batches.append({"chosen": chosen, "rejected": rejected,
                    "reference_chosen_logps": np.asarray(seq_logps(reference, chosen)),
                    "reference_rejected_logps": np.asarray(seq_logps(reference, rejected))})

optimizer = make_optimizer(1e-3, total_steps=10, warmup_steps=1)
step_1dev = make_train_step(dpo_batch_loss, optimizer,       # what lesson 06 uses
                            compiler_options=FEW_STEPS)    # 3 steps: compile fast
state_1dev = init_train_state(policy, optimizer)
for batch in batches:
    state_1dev, metrics_1dev = step_1dev(state_1dev, batch)
print(f"1 device : loss after {N_STEPS} steps {float(metrics_1dev['loss']):.6f}")

# %% [markdown]
# ## 2. The same step on a mesh of 4 devices
#
# A `Mesh` names the devices' axes; a `NamedSharding(mesh, PartitionSpec(...))` says how an
# array is laid out over them.  Exactly three declarations change:
#
# | array | sharding | meaning |
# |---|---|---|
# | params, AdamW state | `P()` | a full copy on every device (replicated) |
# | batch leaves `[B, ...]` | `P("data")` | rows split: device d holds rows d·B/4 … (d+1)·B/4 |
# | metrics | `P()` | the loss is the same number everywhere |
#
# `distributed.shard_train_step` is literally
# `jax.jit(make_train_step(loss_fn, opt), in_shardings=(P(), P("data")), out_shardings=(P(), P()))`.
# The loss function, the optimizer and the step body are the objects from section 1.

# %%
mesh = distributed.make_mesh(N_DEVICES)                                   # 1-D mesh, axis "data"
step_mesh = distributed.shard_train_step(dpo_batch_loss, optimizer, mesh,   # the shardings: here
                                          compiler_options=FEW_STEPS)
state_mesh = distributed.replicate(init_train_state(policy, optimizer), mesh)
for batch in batches:
    sharded = distributed.shard_batch(batch, mesh)                        # rows split over "data"
    state_mesh, metrics_mesh = step_mesh(state_mesh, sharded)

tokens = sharded["chosen"]["tokens"]
print(f"mesh {dict(mesh.shape)}; chosen tokens {tokens.shape} sharding {tokens.sharding.spec}")
for shard in tokens.addressable_shards:
    print(f"  {shard.device}: rows {shard.index[0].start}:{shard.index[0].stop}  shape {shard.data.shape}")
w_in = state_mesh.params["blocks"]["w_in"]
print(f"params: w_in {w_in.shape} fully replicated: {w_in.sharding.is_fully_replicated}")

diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
           zip(jax.tree_util.tree_leaves(state_mesh.params), jax.tree_util.tree_leaves(state_1dev.params)))
moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
            zip(jax.tree_util.tree_leaves(state_1dev.params), jax.tree_util.tree_leaves(policy)))
print(f"{N_DEVICES} devices: loss after {N_STEPS} steps {float(metrics_mesh['loss']):.6f}")
print(f"max |params_mesh - params_1dev| = {diff:.2e}   (params moved by up to {moved:.2e})")

# %% [markdown]
# The difference is float32 round-off: the mesh sums the batch as 4 partial sums plus one
# reduction, a different order of the same additions.  (AdamW's first steps are close to
# lr·sign(g), so round-off on gradients that are nearly 0 can show up at ~1e-7…1e-5.)
#
# Where did the gradient communication go?  The compiler put it there.  The partitioned
# program (HLO) of the mesh step contains `all-reduce` operations: the per-device gradients
# of the replicated weights are summed across the 4 devices before AdamW sees them (XLA's
# all-reduce combiner merges the per-weight reductions into one or a few tuple all-reduces).

# %%
hlo = step_mesh.lower(state_mesh, sharded).compile().as_text()
print(f"all-reduce ops in the compiled 4-device step: {hlo.count(' all-reduce(')}")

# %% [markdown]
# ## 3. Splitting the weights too (tensor parallelism)
#
# When a model no longer fits on one device, the weights are split as well.  Megatron-LM
# (Shoeybi et al. 2019) splits the MLP's hidden units: $W_{in}$ by columns, $W_{out}$ by rows,
# so $\mathrm{MLP}(x) = \sum_m \mathrm{gelu}(x W_{in}^{(m)}) W_{out}^{(m)}$ — one sum across the
# "model" axis.  Again only declarations change: a 2×2 mesh ("data" × "model") and a
# `PartitionSpec` per weight name (`distributed.MLP_TENSOR_PARALLEL`); Adam's moments get the
# same layout as their weights.

# %%
mesh_2d = distributed.make_mesh(N_DEVICES, n_model=2)
state0 = init_train_state(policy, optimizer)
shardings = distributed.state_shardings(state0, mesh_2d, distributed.MLP_TENSOR_PARALLEL)
step_tp = distributed.shard_train_step(dpo_batch_loss, optimizer, mesh_2d, shardings,
                                       compiler_options=FEW_STEPS)
state_tp = jax.device_put(state0, shardings)
for batch in batches:
    state_tp, _ = step_tp(state_tp, distributed.shard_batch(batch, mesh_2d))
w_in = state_tp.params["blocks"]["w_in"]
diff_tp = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
              zip(jax.tree_util.tree_leaves(state_tp.params), jax.tree_util.tree_leaves(state_1dev.params)))
print(f"mesh {dict(mesh_2d.shape)}: w_in {w_in.shape} -> per-device shard {w_in.addressable_shards[0].data.shape}")
print(f"max |params_tp - params_1dev| = {diff_tp:.2e}")

# %% [markdown]
# ## 4. What a step costs, and how it grows
#
# Per token, a training step does about $6N$ FLOPs for the weight matmuls (forward $2N$,
# backward $4N$: each weight is used once forward and twice backward), with
# $N = 12 L d^2 + V d$ (per block: $4d^2$ for $W_{qkv}, W_o$ and $8d^2$ for the MLP; plus the tied
# unembedding).  Attention adds $QK^\top$ and $AV$: $2 \cdot 2 L T d$ forward per token,
# so $12 L T d$ per token or $12 L T^2 d$ per sequence for the step:
#
# $$\text{FLOPs}_{\text{step}} \approx 6 N \cdot B T + 12 L T^2 d \cdot B.$$
#
# So time should be linear in B and L, ~quadratic in d, and linear in T until the $T^2$
# term takes over.  `benchmarks/cost_curves.py` measures this for T, B, d and L (median step
# time, and the peak memory that XLA plans at compile time); here we read its saved results if
# present, else sweep T alone, the term this section's equation is about.  (In this lesson's
# process every point is compiled anew, about 2 s each: the persistent cache's keys include
# the devices, and here there are four.)

# %%
spec = importlib.util.spec_from_file_location("cost_curves", paths.REPO_ROOT / "benchmarks" / "cost_curves.py")
cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cost)

saved = paths.runs_dir(False) / "cost_curves.json"
if not args.smoke and saved.exists():
    data = json.loads(saved.read_text())
    base, results = data["base"], data["results"]
    print(f"read {saved} (measured on {data['device']})")
else:
    base = cost.SMOKE_BASE if args.smoke else cost.BASE
    sweep = {"T": [8, 16]} if args.smoke else {"T": [25, 50, 100]}
    print(f"no saved benchmark{' (smoke)' if args.smoke else ''}: small sweep around {base}")
    results = cost.run_sweeps(base, sweep, n_timed=3)
summary = cost.summarize(results, base)
cost.print_report(results, summary)
cost.plot(results, summary, FIGURES / "10_cost_curves.png")
print(f"figure -> {FIGURES / '10_cost_curves.png'}")

# %% [markdown]
# ## 5. What changes on a real GPU
#
# Nothing in the losses, and nothing in `distributed.py`: `make_mesh()` picks up the GPUs,
# `shard_batch` / `shard_train_step` place the same arrays.  What a student changes:
#
# * **Attention kernel.** `GPTConfig(attention="fused")` calls `jax.nn.dot_product_attention`.
#   On a GPU, cuDNN's fused flash-attention kernel (`implementation="cudnn"`, bf16 inputs)
#   never materialises the $[B, H, T, T]$ score matrix: memory becomes linear in T and the
#   $T^2$ term runs at matmul speed.  (JAX's default `implementation=None` currently means the
#   XLA path, so the kernel must be asked for.)
# * **bf16.** `GPTConfig(compute_dtype="bfloat16")`: matmuls on tensor cores (an H100 peaks
#   near 989 TFLOP/s dense bf16 vs ~67 TFLOP/s fp32), activations half the bytes; params,
#   gradients and AdamW state stay fp32 (tests/test_precision.py checks log-probs stay within
#   0.05 nats and losses within 2%).
# * **Bigger batches.** A GPU needs far more parallel work per kernel launch than a CPU
#   before the FLOPs, not the launch overhead, set the time; the B-slope of the cost curve
#   (time ~ B^s, `benchmarks/cost_curves.py`) tells how close to that regime a device is
#   (s = 1: fully busy).  Data
#   parallelism multiplies the global batch by the number of devices.
# * **Donation.** `jax.jit(..., donate_argnums=0)` lets XLA update the state in place,
#   so the old and new parameters + optimizer state need not both be held during the step.
# * **Measure MFU** (model FLOP utilisation, Chowdhery et al. 2022, "PaLM", appendix B):
#
# $$\text{MFU} = \frac{(6N + 12 L T d)\cdot \text{tokens/s}}{\text{peak FLOP/s of the hardware}}.$$
#
#   It counts only the FLOPs the model needs (not recomputation), so it compares
#   implementations honestly.  Large well-tuned runs reach 40–60%; a model as small as ours
#   would reach well under 1% on an H100: the lesson config needs ~5 GFLOP per step, 5 µs
#   of H100 peak, far less than the time to launch its kernels.

# %%
fl = cost.flops_per_step(L=cfg.n_layer, d=cfg.d_model, V=cfg.vocab_size, T=T, B=2 * B)
print(f"this lesson's DPO step ({2 * B} sequences x {T} tokens): "
      f"{(fl['dense'] + fl['attention']) / 1e9:.2f} GFLOP forward+backward, "
      f"attention share {fl['attention'] / (fl['dense'] + fl['attention']):.1%}")
print(f"at 40% MFU on an H100 (989 TFLOP/s bf16 dense): "
      f"{(fl['dense'] + fl['attention']) / (0.4 * 989e12) * 1e6:.1f} us per step")
print(f"lesson 10 done in {time.time() - t_start:.0f} s")
