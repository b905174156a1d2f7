"""Generic training machinery shared by every stage: optimizer, jitted step, batches, progress,
and which of a GPT's weights an alignment stage may change (TRAINABLE).

A stage supplies `loss_fn(params, batch) -> (loss, metrics)`; `make_train_step` turns it into
one jitted function doing forward, backward and the optimizer update.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

TRAINABLE = ("all", "final_norm")
"""Which of a GPT's weights an alignment stage may change (`gpt_labels`):

    "all"          full fine-tuning: every weight
    "final_norm"   only the final LayerNorm ln_f (its gain g and bias b: 2 x d_model numbers)

A parameter-efficient regime in the spirit of BitFit (Ben Zaken et al. 2022, which trains only
the biases): ln_f is shared by every prompt, so whatever alignment learns there must hold for
every prompt at once.  Lessons 05 and 06 measure what that does on countries alignment never saw."""


def gpt_labels(params: dict, trainable: str) -> dict:
    """The tree of `params` (a GPT) with each leaf replaced by "train" or "frozen" (see TRAINABLE)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable: expected one of {TRAINABLE}, got {trainable!r}")

    def label(path, _):   # path[0] is the top-level key: "wte", "wpe", "blocks" or "ln_f"
        return "train" if trainable == "all" or path[0].key == "ln_f" else "frozen"

    return jax.tree_util.tree_map_with_path(label, params)


def stop_frozen(params, labels):
    """params with jax.lax.stop_gradient on every "frozen" leaf of `labels`: their gradient is
    exactly 0, and the backward pass need not go below the lowest trainable weight (with
    "final_norm": ln_f).  The loss value is unchanged."""
    return jax.tree_util.tree_map(lambda p, label: p if label == "train" else jax.lax.stop_gradient(p),
                                  params, labels)


def freeze_updates(optimizer: optax.GradientTransformation, labels) -> optax.GradientTransformation:
    """`optimizer` on the "train" leaves, a zero update on the "frozen" ones (so that no optimizer
    term, e.g. weight decay, can move them).  labels: a tree like `gpt_labels`'s, or a function
    params -> such a tree."""
    return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)


class TrainState(NamedTuple):
    params: dict          # the pytree being trained
    opt_state: tuple      # optax state
    step: jax.Array       # scalar int32


def warmup_cosine(count, peak_lr, warmup_steps, decay_steps, end_fraction: float = 0.1):
    """Linear warmup from 0 to peak_lr over w = warmup_steps, then cosine decay to
    end_fraction * peak_lr at D = decay_steps (Loshchilov & Hutter 2017's cosine, no restarts),
    constant after; a = end_fraction:

        lr(t) = peak_lr t / w                                                        t < w
        lr(t) = peak_lr ((1 - a) (1 + cos(pi min(t - w, D - w) / (D - w))) / 2 + a)     t >= w

    Every argument may be traced: the schedule's numbers are inputs of a compiled step, not
    constants baked into it (`make_optimizer`).  The float32 numbers are those of
    optax.warmup_cosine_decay_schedule compiled with constant arguments, because the operations
    are the ones XLA makes of optax's when its arguments are constants: x * (1 / n) for x / n,
    and pi t / n regrouped as t * (pi * (1 / n)) (tests/test_schedule.py checks them bit for
    bit), so moving the numbers into the optimizer state changes no training run."""
    w = jnp.asarray(warmup_steps, jnp.float32)
    span = jnp.asarray(decay_steps - warmup_steps, jnp.float32)                  # D - w >= 1
    warm = (0.0 - peak_lr) * (1 - jnp.clip(count, 0, warmup_steps) * (1.0 / w)) + peak_lr
    t = jnp.minimum(count - warmup_steps, decay_steps - warmup_steps)
    cosine = 0.5 * (1 + jnp.cos(t * (jnp.pi * (1.0 / span))))
    decayed = peak_lr * ((1 - end_fraction) * cosine + end_fraction)
    return jnp.where(count < warmup_steps, warm, decayed)


@optax.inject_hyperparams
def _adamw_warmup_cosine(peak_lr, warmup_steps, decay_steps, weight_decay, max_grad_norm):
    schedule = partial(warmup_cosine, peak_lr=peak_lr, warmup_steps=warmup_steps,
                       decay_steps=decay_steps)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                       optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=weight_decay))


def make_optimizer(lr: float, total_steps: int, warmup_steps: int = 20, weight_decay: float = 0.0,
                   max_grad_norm: float = 1.0, traced: bool = False) -> optax.GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019) with linear warmup, cosine decay to 10% (`warmup_cosine`)
    and global-norm clipping.

    traced=True holds the hyperparameters in the optimizer state (`optax.inject_hyperparams`), so
    they are inputs of the compiled train step: runs that differ only in learning rate, length or
    weight decay run one compiled program (lesson 02's pretraining and lesson 03's SFT,
    `pretrain.lm_train_step`).  The schedule's numbers are the same either way, but XLA may fuse
    the rest of a step differently around inputs than around constants, and a different fusion
    rounds differently in the last bits; the LM step is checked to train bit for bit the same
    (tests/test_schedule.py), the other stages keep their constants."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 1))
    if traced:
        return _adamw_warmup_cosine(peak_lr=float(lr), warmup_steps=warmup_steps,
                                    decay_steps=max(total_steps, 2),
                                    weight_decay=float(weight_decay),
                                    max_grad_norm=float(max_grad_norm))
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup_steps,
                                                  decay_steps=max(total_steps, 2), end_value=0.1 * lr)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                       optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=weight_decay))


def init_train_state(params, optimizer) -> TrainState:
    """TrainState at step 0: `params`, the optimizer's fresh state (built by one compiled program,
    not one small program per zero-filled leaf)."""
    return TrainState(params, jax.jit(optimizer.init)(params), jnp.zeros((), jnp.int32))


FEW_STEPS = {"xla_backend_optimization_level": 0}
"""XLA options for a program that runs only a few times: the backend's (LLVM's) optimisation
passes off.  On a CPU the step then compiles faster and runs slower, which pays only for a
handful of steps (lesson 10's demonstration steps; `benchmarks/compile_budget.py` shows both)."""


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, donate: bool = False,
                    compiler_options: dict | None = None):
    """state, batch -> state, metrics: forward + backward + update, all under one jit.

    donate=True lets XLA update the parameters and optimizer state in place (the state passed in
    is deleted); off by default because the lessons keep the initial parameters around.
    compiler_options: XLA options for this program only, e.g. `FEW_STEPS` for a step that runs a
    handful of times, where compile time outweighs run time.
    """

    @partial(jax.jit, donate_argnums=(0,) if donate else (), compiler_options=compiler_options)
    def train_step(state: TrainState, batch):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **metrics}
        return TrainState(params, opt_state, state.step + 1), metrics

    return train_step


def check_finite(stage: str, step: int, loss: float) -> None:
    """Stop a training loop at its first non-finite loss, naming the stage and the step (a NaN
    would otherwise train on silently and fail far from its cause).  Called where the loop
    already has the loss on the host, so it adds no device synchronisation."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"[{stage}] step {step}: the loss is {loss}; training stopped (check "
                                 "the inputs' checkpoints and data, or lower the learning rate)")


def batches(rng: np.random.Generator, arrays: dict, batch_size: int, steps: int):
    """Yield `steps` minibatches (dicts of numpy arrays) from shuffled epochs over `arrays`.

    The data is small and already encoded, so a batch is one fancy-index: the pipeline never
    holds the jitted step back.
    """
    n = len(next(iter(arrays.values())))
    if n < batch_size:
        raise ValueError(f"batches: dataset has {n} rows, fewer than batch_size={batch_size}")
    order, pos = rng.permutation(n), 0
    for _ in range(steps):
        if pos + batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        yield {k: v[idx] for k, v in arrays.items()}


class Progress:
    """Prints `step, metrics, steps/s` about `n_prints` times over a run (never floods)."""

    def __init__(self, name: str, total: int, n_prints: int = 8, quiet: bool = False):
        self.name, self.total, self.quiet = name, total, quiet
        self.every = max(total // n_prints, 1)
        self.t0 = self.t_last = time.perf_counter()
        self.last_step = 0

    def __call__(self, step: int, metrics: dict):
        if self.quiet or not (step % self.every == 0 or step == self.total):
            return
        now = time.perf_counter()
        rate = (step - self.last_step) / max(now - self.t_last, 1e-9)
        self.t_last, self.last_step = now, step
        shown = "  ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
        print(f"[{self.name}] step {step:>5}/{self.total}  {shown}  ({rate:.1f} steps/s)", flush=True)

    def elapsed(self) -> float:
        """Seconds since this Progress was created."""
        return time.perf_counter() - self.t0
