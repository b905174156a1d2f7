"""Stage 08: the same training steps over a mesh of devices, with JAX's own SPMD machinery.

Nothing in the losses changes.  Data parallelism (Krizhevsky 2014; Goyal et al. 2017) splits
the batch over D devices; since every loss here is a mean over the batch,

    grad L(theta; B) = (1/D) sum_{d=1}^{D} grad L(theta; B_d)        (|B_d| = |B| / D, equal shards)

and each device only has to see its own rows B_d plus an all-reduce of the gradients.  We do not
write that all-reduce.  We *declare* where each array lives at the `jax.jit` boundary:

    params, optimizer state   replicated      NamedSharding(mesh, P())        every device a copy
    batch                     split on rows   NamedSharding(mesh, P("data"))  device d holds B_d

and XLA's SPMD partitioner (GSPMD, Xu et al. 2021; Shardy in current JAX) propagates those
shardings through the step, inserts the all-reduce where the per-row gradients meet the
replicated parameters, and runs one program per device.  The step function is the very
function `training.make_train_step` builds for one device.

Optionally the parameters can be split too (`MLP_TENSOR_PARALLEL`): the MLP's hidden axis F
over a "model" mesh axis, Megatron-style (Shoeybi et al. 2019, sec. 3): W_in column-split,
W_out row-split, so each device holds F / M hidden units and the partial outputs are summed.

Axis types: we build meshes with `AxisType.Auto` (the compiler propagates shardings inside the
step) rather than `jax.make_mesh`'s default `Explicit` (shardings become part of every array's
type and must be spelled out op by op) — the declare-at-the-boundary style this lesson teaches.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from minirlhf.training import make_train_step

DATA = "data"    # mesh axis the batch rows are split over
MODEL = "model"  # mesh axis parameter shards are split over (tensor parallelism)

# Megatron MLP split (Shoeybi et al. 2019, eq. 3): Y = gelu(X [W_in^1 .. W_in^M]) split by
# columns, Z = sum_m Y^m W_out^m split by rows.  Keys are parameter names (leaf dict keys),
# specs are over the stacked [L, ...] leaves of model.init_params.
MLP_TENSOR_PARALLEL = {
    "w_in": P(None, None, MODEL),   # [L, D, F]  columns (hidden units) split
    "b_in": P(None, MODEL),         # [L, F]
    "w_out": P(None, MODEL, None),  # [L, F, D]  rows (hidden units) split
}


def make_mesh(n_devices: int | None = None, axis: str = DATA, n_model: int = 1) -> Mesh:
    """A mesh over the first `n_devices` devices (all by default).

    n_model = 1: a 1-D mesh (axis,) of size n_devices (pure data parallelism).
    n_model > 1: a 2-D mesh (axis, "model") of shape (n_devices / n_model, n_model).
    Both axes are `AxisType.Auto` (shardings declared at jit boundaries, propagated inside).
    """
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"distributed.make_mesh: n_devices={n_devices} but {len(devices)} "
                         f"device(s) are visible (set XLA_FLAGS=--xla_force_host_platform_device_count"
                         f"=N before importing jax for N fake CPU devices)")
    if n % n_model:
        raise ValueError(f"distributed.make_mesh: n_devices={n} is not divisible by n_model={n_model}")
    if n_model == 1:
        return Mesh(np.array(devices[:n]), (axis,), axis_types=(AxisType.Auto,))
    grid = np.array(devices[:n]).reshape(n // n_model, n_model)         # [data, model]
    return Mesh(grid, (axis, MODEL), axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh, axis: str = DATA) -> NamedSharding:
    """Rows (leading axis) split over `axis`, every other axis whole: P(axis)."""
    return NamedSharding(mesh, P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh: P()."""
    return NamedSharding(mesh, P())


def shard_batch(batch, mesh: Mesh, axis: str = DATA):
    """Place every leaf [B, ...] of `batch` with its rows split over `axis`: device d gets
    rows [d B/D, (d+1) B/D).  B must be divisible by the axis size D."""
    n = mesh.shape[axis]
    for path, x in jax.tree_util.tree_leaves_with_path(batch):
        if np.ndim(x) == 0 or np.shape(x)[0] % n:
            raise ValueError(f"distributed.shard_batch: leaf {jax.tree_util.keystr(path)} has shape "
                             f"{np.shape(x)}; expected a leading batch axis divisible by "
                             f"mesh axis {axis!r} of size {n}")
    return jax.device_put(batch, batch_sharding(mesh, axis))


def replicate(tree, mesh: Mesh):
    """Put a full copy of every leaf of `tree` on every device of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


def state_shardings(state, mesh: Mesh, rules: dict | None = None):
    """A NamedSharding per leaf of `state` (params, optimizer state, anything): the leaf's name
    (its last dict key) looked up in `rules` {name: PartitionSpec}; replicated otherwise.

    Optax's moment estimates (Adam's mu, nu) are dicts shaped like the params, so the same
    name-based rule shards a weight and its optimizer moments the same way.
    """
    rules = rules or {}

    def spec(path, leaf):
        name = path[-1].key if path and isinstance(path[-1], jax.tree_util.DictKey) else None
        if name not in rules:
            return replicated(mesh)
        if len(rules[name]) != np.ndim(leaf):
            raise ValueError(f"distributed.state_shardings: rule for {name!r} is {rules[name]} "
                             f"(rank {len(rules[name])}) but leaf {jax.tree_util.keystr(path)} "
                             f"has shape {np.shape(leaf)}")
        return NamedSharding(mesh, rules[name])

    return jax.tree_util.tree_map_with_path(spec, state)


def shard_step(step_fn: Callable, mesh: Mesh, state_sharding=None, axis: str = DATA,
               compiler_options: dict | None = None):
    """jit `step_fn(state, batch) -> (state, metrics)` with its shardings declared:

        in:  state  -> state_sharding (default: replicated),  batch -> P(axis)
        out: state  -> state_sharding,                         metrics -> replicated

    The compiler partitions everything in between (and inserts the gradient all-reduce).
    `state_sharding` is one NamedSharding for the whole state or a pytree of them
    (see `state_shardings`).  compiler_options: XLA options for this program (see
    `training.FEW_STEPS`).
    """
    state_sharding = replicated(mesh) if state_sharding is None else state_sharding
    return jax.jit(step_fn,
                   in_shardings=(state_sharding, batch_sharding(mesh, axis)),
                   out_shardings=(state_sharding, replicated(mesh)),
                   compiler_options=compiler_options)


def shard_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, mesh: Mesh,
                     state_sharding=None, axis: str = DATA, compiler_options: dict | None = None):
    """The data-parallel version of `training.make_train_step(loss_fn, optimizer)`.

    loss_fn(params, batch) -> (loss, metrics) is the single-device loss, unchanged (LM/SFT,
    Bradley-Terry reward, DPO, PPO...); its batch mean makes the sharded gradient equal the
    single-device one (module docstring).  Returns jitted (state, batch) -> (state, metrics);
    arguments are moved to the declared shardings if they are not there already.
    """
    return shard_step(make_train_step(loss_fn, optimizer), mesh, state_sharding, axis,
                      compiler_options)
