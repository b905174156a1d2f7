"""Safe, atomic checkpoints: msgpack (no pickle, loading never executes code) with the config beside
the weights.

File layout (one msgpack document):
    {"format": "minirlhf-checkpoint-v1", "config": {...GPTConfig fields...},
     "params": <pytree of arrays>, "meta": {...json-able extras...}}

Writes go to `<path>.tmp` then `os.replace` onto the final name, so a killed run
leaves either the old checkpoint or the new one, never half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from minirlhf.model import GPTConfig, init_params

FORMAT = "minirlhf-checkpoint-v1"


def save_checkpoint(path, params, cfg: GPTConfig, meta: dict | None = None) -> Path:
    """Write params (any pytree of arrays, e.g. {"backbone": ..., "head": ...}) + config atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "config": dataclasses.asdict(cfg),
        "params": jax.tree_util.tree_map(np.asarray, params),
        "meta": json.dumps(meta or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(serialization.msgpack_serialize(doc))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


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
    params = jax.tree_util.tree_map(jax.numpy.asarray, doc["params"])
    _check_gpt_shapes(path, params, cfg)
    return params, cfg, meta


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
    got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(params)}
    if want.keys() != got.keys():
        raise ValueError(f"checkpoint {path}: GPT parameters {sorted(got.keys() ^ want.keys())} "
                         f"are missing or unexpected for its config")
    for name, shape in got.items():
        if shape != want[name]:
            raise ValueError(f"checkpoint {path}: parameter {name} has shape {shape}, but the "
                             f"checkpoint's config {cfg} expects {want[name]}")
