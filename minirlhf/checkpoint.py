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

from minirlhf.model import GPTConfig

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
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = set(doc["config"]) - fields
    if unknown:
        raise ValueError(f"checkpoint {path}: unknown GPTConfig fields {sorted(unknown)}")
    cfg = GPTConfig(**doc["config"])
    params = jax.tree_util.tree_map(jax.numpy.asarray, doc["params"])
    return params, cfg, json.loads(doc["meta"])
