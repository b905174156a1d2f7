"""Safe, atomic checkpoints: msgpack (no pickle, loading never executes code) with the config beside
the weights.

File layout (one msgpack document):
    {"format": "minirlhf-checkpoint-v1", "config": {...GPTConfig fields...},
     "params": <pytree of arrays>, "meta": {...json-able extras...}}

Writes go through `paths.atomic_write` (a unique temp file in the same directory, fsync,
`os.replace`, fsync of the directory), so a killed run leaves either the old checkpoint or the new
one, never half a file, and two processes saving one path both succeed.  Loading checks every
weight: a numeric array, finite, and for a GPT the dtype and shape `init_params` gives.
`ensure_checkpoint` is the "load it if it was made by this recipe, else build it" that every
stage's `ensure_*` uses (see paths.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from minirlhf.model import GPTConfig, init_params
from minirlhf.paths import atomic_write, build_lock, same_recipe

FORMAT = "minirlhf-checkpoint-v1"


def save_checkpoint(path, params, cfg: GPTConfig, meta: dict | None = None) -> Path:
    """Write params (any pytree of arrays, e.g. {"backbone": ..., "head": ...}) + config atomically."""
    doc = {
        "format": FORMAT,
        "config": dataclasses.asdict(cfg),
        "params": jax.tree_util.tree_map(np.asarray, params),
        "meta": json.dumps(meta or {}),
    }
    return atomic_write(path, serialization.msgpack_serialize(doc))


def ensure_checkpoint(path, made_by: dict, build: Callable, what: str):
    """(params, cfg, meta) of the checkpoint at `path` if its meta["made_by"] equals `made_by`
    (a `paths.recipe`); otherwise `build()` -> (params, cfg, meta) is run, saved there with
    made_by added to its meta, and loaded back.  Under `paths.build_lock`, so two processes
    asking for the same missing artifact build it once.  `what` names the stage in messages."""
    path = Path(path)
    with build_lock(path):
        if path.exists():
            params, cfg, meta = load_checkpoint(path)
            if same_recipe(meta, made_by):
                return params, cfg, meta
            print(f"[{what}] {path} was made by another recipe ({meta.get('made_by')}): rebuilding it")
        else:
            print(f"[{what}] {path} missing: building it")
        params, cfg, meta = build()
        save_checkpoint(path, params, cfg, {**meta, "made_by": made_by})
        return load_checkpoint(path)


def load_checkpoint(path):
    """Read a checkpoint -> (params, GPTConfig, meta).  Raises ValueError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        doc = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several types for truncated/garbage input
        raise ValueError(f"checkpoint {path}: not a readable msgpack file ({type(e).__name__}: {e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"checkpoint {path}: field 'format' expected {FORMAT!r}, got {got!r}")
    missing = {"config", "params", "meta"} - set(doc)
    if missing:
        raise ValueError(f"checkpoint {path}: missing field(s) {sorted(missing)}")
    if not isinstance(doc["config"], dict):
        raise ValueError(f"checkpoint {path}: field 'config' expected a dict of GPTConfig fields, "
                         f"got {type(doc['config']).__name__}")
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = set(doc["config"]) - fields
    if unknown:
        raise ValueError(f"checkpoint {path}: unknown GPTConfig fields {sorted(unknown)}")
    missing = [f for f in SHAPE_FIELDS if f not in doc["config"]]
    if missing:   # a default here would silently pair the weights with another architecture
        raise ValueError(f"checkpoint {path}: config lacks the GPTConfig field(s) {missing}")
    try:
        cfg = GPTConfig(**doc["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: invalid config {doc['config']} ({e})") from None
    try:
        meta = json.loads(doc["meta"])
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {path}: field 'meta' is not a JSON string ({e})") from None
    _check_leaves(path, doc["params"])
    params = jax.device_put(doc["params"])            # a transfer per leaf, no device program
    _check_gpt_shapes(path, params, cfg)
    return params, cfg, meta


def _check_leaves(path, tree) -> None:
    """Every leaf a numeric numpy array (bool, integer or float) and every float finite: a NaN or
    inf weight would otherwise train at loss = nan and fail far from its cause."""
    for key, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = jax.tree_util.keystr(key)
        if not isinstance(leaf, (np.ndarray, np.generic)) or leaf.dtype.kind not in "biuf":
            kind = leaf.dtype if isinstance(leaf, (np.ndarray, np.generic)) else type(leaf).__name__
            raise ValueError(f"checkpoint {path}: parameter {name} is {kind}, expected a numeric array")
        if leaf.dtype.kind == "f" and not np.all(np.isfinite(leaf)):
            n_bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
            raise ValueError(f"checkpoint {path}: parameter {name} has {n_bad} non-finite value(s) "
                             f"(NaN or inf) of {np.size(leaf)}")


# The GPTConfig fields that decide parameter shapes: a checkpoint must state them.  The others
# (attention path, compute dtype, layer unrolling) only change how the same weights are used,
# so checkpoints written before such a field existed still load, with its default.
SHAPE_FIELDS = ("vocab_size", "max_len", "n_layer", "n_head", "d_model")


def _check_gpt_shapes(path, params, cfg: GPTConfig) -> None:
    """Every GPT in `params` (the tree itself, or subtrees such as a reward model's "backbone":
    any dict holding "wte") must have exactly the arrays and shapes `init_params(cfg)` creates.
    A mismatch would otherwise fail deep inside `forward`, or not fail at all (JAX clamps
    out-of-range embedding lookups)."""
    if not isinstance(params, dict):
        return
    if "wte" not in params:
        for value in params.values():
            _check_gpt_shapes(path, value, cfg)
        return
    expected = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), cfg))
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    want_dtype = {jax.tree_util.keystr(k): v.dtype
                  for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
    if want.keys() != got.keys():
        raise ValueError(f"checkpoint {path}: GPT parameters {sorted(got.keys() ^ want.keys())} "
                         f"are missing or unexpected for its config")
    for name, value in got.items():
        if value.shape != want[name]:
            raise ValueError(f"checkpoint {path}: parameter {name} has shape {value.shape}, but the "
                             f"checkpoint's config {cfg} expects {want[name]}")
        if value.dtype != want_dtype[name]:
            raise ValueError(f"checkpoint {path}: parameter {name} has dtype {value.dtype}, "
                             f"expected {want_dtype[name]}")
