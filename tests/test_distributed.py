"""Data-parallel steps equal single-device steps, checked on 4 fake CPU devices.

XLA reads XLA_FLAGS=--xla_force_host_platform_device_count=4 once, when jax first starts a
backend, so the checks run in a subprocess: this file executed as a script (`python
tests/test_distributed.py`) sets the flag before importing jax, runs every case and prints a
JSON report, which the tests below read.  The pytest process itself never imports jax here
and no other test file sees the flag.  The worker compiles at the test run's XLA optimisation
level (see conftest.py) and needs ~25 CPU-seconds (11 small XLA compilations); its generous
timeout is for a crowded shared machine.

For each stage (SFT/LM, Bradley-Terry reward model, DPO, PPO clipped policy loss) the SAME loss
function is trained for N_STEPS steps from the same state on the same batches:
  * single device: `training.make_train_step(loss_fn, opt)`;
  * 4-way data parallel: `distributed.shard_train_step(loss_fn, opt, mesh)`;
and after every step the losses and all updated parameters must agree within rtol=1e-5,
atol=1e-6 (fp32; the only difference is the order of the batch sum: per-shard partial sums
+ all-reduce).  With SGD (params - lr * grad, lr = 0.5) equal parameters mean equal gradients.
The parameters must also have moved by far more than atol, so the comparison cannot pass
vacuously.  A 2x2 (data x model) mesh with the MLP weights split Megatron-style over "model"
is held to the same tolerance.

AdamW (the optimizer the stages use, `make_optimizer`) is checked with atol = 1e-4 = lr / 100:
its first steps move each weight by ~ lr * g / (|g| + eps) ~ lr * sign(g), so a weight whose
gradient is ~1e-8 (tiny, but not 0) turns a 1e-8 summation-order difference into an O(lr)
difference of the update.  That is a property of Adam, not of the sharding: the gradients
themselves agree to ~3e-8 absolute, as the SGD cases show.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

N_DEVICES = 4
N_STEPS = 2          # optimizer steps compared, each on a fresh batch
SGD_LR = 0.5         # SGD: params_new = params - lr * grad, so equal params <=> equal gradients
RTOL, ATOL = 1e-5, 1e-6
ADAM_LR, ADAM_ATOL = 1e-2, 1e-4   # AdamW: see the module docstring for the looser atol
CASES = ["sft", "reward", "dpo", "ppo", "sft_mlp_tensor_parallel", "sft_adamw"]


# ============================================================================ worker (subprocess)

def _worker() -> dict:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={N_DEVICES}")
    import jax
    import numpy as np
    import optax

    from minirlhf import distributed, model
    from minirlhf.bradley_terry import bradley_terry_loss
    from minirlhf.dpo import dpo_loss
    from minirlhf.ppo import policy_loss
    from minirlhf.pretrain import lm_loss
    from minirlhf.training import init_train_state, make_optimizer, make_train_step

    cfg = model.GPTConfig(vocab_size=32, max_len=8, n_layer=2, n_head=2, d_model=16)
    B, T = 8, 8

    def seqs(seed):
        """Right-padded rows <bos> prompt response <eos> pad...: tokens, attention/response masks."""
        rng = np.random.default_rng(seed)
        tokens = rng.integers(3, cfg.vocab_size, (B, T)).astype(np.int32)
        lengths = rng.integers(T // 2, T + 1, B)
        attn = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
        resp = attn * (np.arange(T)[None] >= 2)
        tokens[:, 0] = 1
        tokens[np.arange(B), lengths - 1] = 2
        return {"tokens": tokens * attn, "attention_mask": attn, "response_mask": resp.astype(np.int32)}

    @jax.jit
    def seq_logps(params, s):                                                          # [B]
        return model.sequence_logprobs(params, s["tokens"], s["attention_mask"], s["response_mask"], cfg)

    def sft_loss(params, batch):
        return lm_loss(params, {**batch, "loss_mask": batch["response_mask"]}, cfg)

    def reward_loss(params, batch):
        def reward(s):
            hidden = model.forward(params["gpt"], s["tokens"], s["attention_mask"], cfg).hidden
            return model.reward_from_hidden(params["head"], hidden, s["attention_mask"])   # [B]
        return bradley_terry_loss(reward(batch["chosen"]), reward(batch["rejected"]))

    def dpo(params, batch):
        return dpo_loss(seq_logps(params, batch["chosen"]), seq_logps(params, batch["rejected"]),
                        batch["reference_chosen_logps"], batch["reference_rejected_logps"], beta=0.1)

    def ppo(params, batch):
        logits = model.forward(params, batch["tokens"], batch["attention_mask"], cfg).logits
        new_logps = model.token_logprobs(logits, batch["tokens"])                     # [B, T]
        return policy_loss(new_logps, batch["old_logps"], batch["advantages"],
                           batch["response_mask"], clip_eps=0.2)

    gpt = model.init_params(jax.random.PRNGKey(0), cfg)
    ref_params = model.init_params(jax.random.PRNGKey(1), cfg)   # the "old" / reference policy

    @jax.jit
    def token_logps(params, s):                                                        # [B, T]
        logits = model.forward(params, s["tokens"], s["attention_mask"], cfg).logits
        return model.token_logprobs(logits, s["tokens"])

    def setup(case, seed):
        """(loss_fn, params, batch) for one stage; the batch is numpy (host) arrays."""
        if case.startswith("sft"):
            return sft_loss, gpt, seqs(seed)
        if case == "reward":
            params = {"gpt": gpt, "head": model.init_scalar_head(jax.random.PRNGKey(2), cfg)}
            return reward_loss, params, {"chosen": seqs(seed), "rejected": seqs(seed + 100)}
        if case == "dpo":
            c, r = seqs(seed), seqs(seed + 100)
            return dpo, gpt, {"chosen": c, "rejected": r,
                              "reference_chosen_logps": np.asarray(seq_logps(ref_params, c)),
                              "reference_rejected_logps": np.asarray(seq_logps(ref_params, r))}
        s = seqs(seed)
        adv = np.random.default_rng(seed + 7).normal(size=(B, T)).astype(np.float32)
        return ppo, gpt, {**s, "old_logps": np.asarray(token_logps(ref_params, s)), "advantages": adv}

    def max_violation(a, b, rtol, atol):
        """max over elements of |a - b| / (atol + rtol |b|): <= 1 iff np.allclose(a, b, rtol, atol)."""
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)) / (atol + rtol * np.abs(np.asarray(y)))))
                   for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    def max_abs(a, b):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                   for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    def trajectory(step_fn, state, batches):
        """[(loss, params)] after each step."""
        out = []
        for batch in batches:
            state, metrics = step_fn(state, batch)
            out.append((metrics["loss"], state.params))
        return out, state

    report = {"n_devices": jax.device_count()}
    single_cache = {}
    for case in CASES:
        stage = case.split("_")[0]                                   # sft, reward, dpo, ppo
        loss_fn, params, _ = setup(stage, 0)
        optimizer = (make_optimizer(ADAM_LR, total_steps=10, warmup_steps=1) if case == "sft_adamw"
                     else optax.sgd(SGD_LR))
        state0 = init_train_state(params, optimizer)
        host_batches = [setup(stage, seed)[2] for seed in range(N_STEPS)]
        key = (stage, case == "sft_adamw")
        if key not in single_cache:                                  # the 1-device reference
            single_cache[key] = trajectory(make_train_step(loss_fn, optimizer), state0, host_batches)[0]
        ref = single_cache[key]
        if case == "sft_mlp_tensor_parallel":
            mesh = distributed.make_mesh(N_DEVICES, n_model=2)                  # data=2 x model=2
            sharding = distributed.state_shardings(state0, mesh, distributed.MLP_TENSOR_PARALLEL)
        else:
            mesh = distributed.make_mesh(N_DEVICES)                              # data=4
            sharding = distributed.replicated(mesh)
        sharded = distributed.shard_train_step(loss_fn, optimizer, mesh, sharding)
        batches = [distributed.shard_batch(b, mesh) for b in host_batches]
        got, state = trajectory(sharded, jax.device_put(state0, sharding), batches)
        rtol, atol = (RTOL, ADAM_ATOL) if case == "sft_adamw" else (RTOL, ATOL)
        out = {"loss_violation": max(max_violation(g[0], r[0], rtol, atol) for g, r in zip(got, ref)),
               "param_violation": max(max_violation(g[1], r[1], rtol, atol) for g, r in zip(got, ref)),
               "loss_max_abs_diff": max(max_abs(g[0], r[0]) for g, r in zip(got, ref)),
               "param_max_abs_diff": max(max_abs(g[1], r[1]) for g, r in zip(got, ref)),
               "param_moved": max_abs(ref[-1][1], state0.params)}
        leaf = jax.tree_util.tree_leaves(batches[-1])[0]
        out["batch_spec"] = str(leaf.sharding.spec)
        out["batch_shard_shapes"] = sorted({tuple(s.data.shape) for s in leaf.addressable_shards})
        out["batch_n_shards"] = len(leaf.addressable_shards)
        out["batch_rows"] = int(leaf.shape[0])
        blocks = state.params["gpt"]["blocks"] if stage == "reward" else state.params["blocks"]
        out["w_in_shape"] = list(blocks["w_in"].shape)
        out["w_in_shard_shapes"] = sorted({tuple(s.data.shape) for s in blocks["w_in"].addressable_shards})
        out["w_in_replicated"] = bool(blocks["w_in"].sharding.is_fully_replicated)
        if case == "sft":   # one extra compile: look for the gradient all-reduce in the partitioned HLO
            out["hlo_has_all_reduce"] = "all-reduce" in sharded.lower(state, batches[0]).compile().as_text()
        report[case] = out
    return report


# ============================================================================ tests (pytest)

@pytest.fixture(scope="module")
def report():
    # the worker sets the device count itself; of the run's XLA_FLAGS only the optimisation level
    # (conftest.py's TEST_XLA_FLAG: half the worker's compile time) is passed on
    level = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if f.startswith("--xla_backend_optimization_level=")]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | (
        {"XLA_FLAGS": " ".join(level)} if level else {})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], env=env, check=False,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"worker failed\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_worker_sees_fake_devices(report):
    assert report["n_devices"] == N_DEVICES


@pytest.mark.parametrize("case", CASES)
def test_sharded_step_equals_single_device_step(report, case):
    r = report[case]
    assert r["loss_violation"] <= 1.0, r            # |loss_4dev - loss_1dev| <= atol + rtol |loss_1dev|
    assert r["param_violation"] <= 1.0, r           # every updated parameter, every step
    assert r["param_moved"] > 100 * ATOL, r         # the steps really changed the parameters


@pytest.mark.parametrize("case", CASES)
def test_batch_really_is_sharded(report, case):
    r = report[case]
    n_data = N_DEVICES // 2 if case == "sft_mlp_tensor_parallel" else N_DEVICES
    assert r["batch_spec"] == "P('data',)", r
    assert r["batch_n_shards"] == N_DEVICES, r      # one block per device (repeated over "model")
    assert r["batch_shard_shapes"] == [[r["batch_rows"] // n_data, 8]], r   # rows split, T whole


def test_compiler_inserted_the_gradient_all_reduce(report):
    assert report["sft"]["hlo_has_all_reduce"]


def test_params_replicated_or_tensor_parallel(report):
    for case in CASES:
        if case != "sft_mlp_tensor_parallel":
            assert report[case]["w_in_replicated"], case
            assert report[case]["w_in_shard_shapes"] == [report[case]["w_in_shape"]], case
    tp = report["sft_mlp_tensor_parallel"]
    L, D, F = tp["w_in_shape"]
    assert not tp["w_in_replicated"]
    assert tp["w_in_shard_shapes"] == [[L, D, F // 2]], tp   # hidden units split over model=2


if __name__ == "__main__":
    print(json.dumps(_worker()))
