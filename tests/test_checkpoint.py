"""Checkpoints: exact round trip of params + config + meta, atomic replacement (a crash
before or during the final rename leaves the old checkpoint loadable), and a clear
ValueError naming the file for every kind of bad file."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from minirlhf import checkpoint, model, paths
from minirlhf.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from minirlhf.model import GPTConfig

CFG = GPTConfig(vocab_size=40, max_len=16, n_layer=2, n_head=2, d_model=32, attention="fused")


def make_tree(seed: int) -> dict:
    """A policy backbone plus a scalar head (0-d bias) and an int leaf: every leaf kind we store."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda key: model.init_params(key, CFG), jax.random.PRNGKey(0))
    backbone = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)
    head = {"w": jnp.asarray(rng.standard_normal(CFG.d_model), jnp.float32), "b": jnp.float32(seed)}
    return {"backbone": backbone, "head": head, "step": jnp.asarray(seed, jnp.int32)}


def assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_round_trip_params_config_meta(tmp_path):
    params = make_tree(0)
    meta = {"step": 120, "lesson": "02_sft", "losses": [2.5, 1.25], "nested": {"beta": 0.1}}
    path = save_checkpoint(tmp_path / "a" / "b" / "ckpt.msgpack", params, CFG, meta)
    loaded, cfg, meta2 = load_checkpoint(path)
    assert cfg == CFG and meta2 == meta
    assert_trees_equal(loaded, params)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.msgpack"]   # no .tmp left
    _, _, empty = load_checkpoint(save_checkpoint(tmp_path / "c.msgpack", params, CFG))
    assert empty == {}


def test_leftover_tmp_file_does_not_break_loading_or_saving(tmp_path):
    path = tmp_path / "ckpt.msgpack"
    tmp = tmp_path / "ckpt.msgpack.tmp"
    tmp.write_bytes(b"half a checkpoint from a killed run")             # before the first save
    save_checkpoint(path, make_tree(1), CFG, {"v": 1})
    tmp.write_bytes(b"\x85\xa6format")                                   # a later save was killed
    loaded, _, meta = load_checkpoint(path)
    assert meta == {"v": 1}
    assert_trees_equal(loaded, make_tree(1))


def test_final_file_appears_only_complete(tmp_path, monkeypatch):
    """At the moment of the rename the final name does not exist yet (first save) and the temp
    file is already a complete, loadable checkpoint."""
    path = tmp_path / "ckpt.msgpack"
    seen = []
    real_replace = os.replace

    def checking_replace(src, dst):
        assert not path.exists()
        seen.append(load_checkpoint(src)[2])
        real_replace(src, dst)

    monkeypatch.setattr(paths.os, "replace", checking_replace)
    save_checkpoint(path, make_tree(2), CFG, {"v": 2})
    assert seen == [{"v": 2}] and load_checkpoint(path)[2] == {"v": 2}


def test_crash_before_rename_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(3), CFG, {"v": "old"})

    def crash(src, dst):
        raise OSError("killed before rename")

    monkeypatch.setattr(paths.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        save_checkpoint(path, make_tree(4), CFG, {"v": "new"})
    loaded, cfg, meta = load_checkpoint(path)
    assert meta == {"v": "old"} and cfg == CFG
    assert_trees_equal(loaded, make_tree(3))


@pytest.mark.parametrize("corrupt", ["empty", "garbage", "truncated", "bad_byte"])
def test_garbage_or_truncated_file_raises_value_error_naming_path(tmp_path, corrupt):
    good = save_checkpoint(tmp_path / "good.msgpack", make_tree(5), CFG).read_bytes()
    data = {"empty": b"", "garbage": b"this is not msgpack at all", "truncated": good[: len(good) // 2],
            "bad_byte": b"\xc1" + good[1:]}[corrupt]
    path = tmp_path / "bad.msgpack"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_checkpoint(path)


def _rewrite(path, **changes):
    doc = serialization.msgpack_restore(path.read_bytes())
    doc.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del doc[k]
    path.write_bytes(serialization.msgpack_serialize(doc))


def test_wrong_format_field_raises_value_error(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(6), CFG)
    _rewrite(path, format="minirlhf-checkpoint-v0")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*'format'.*{FORMAT}.*v0"):
        load_checkpoint(path)
    path.write_bytes(serialization.msgpack_serialize([1, 2, 3]))        # valid msgpack, not a dict
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*'format'"):
        load_checkpoint(path)
    _rewrite(save_checkpoint(path, make_tree(6), CFG), format=None)    # no format field at all
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*'format'"):
        load_checkpoint(path)


def test_unknown_config_field_raises_value_error(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(7), CFG)
    doc = serialization.msgpack_restore(path.read_bytes())
    _rewrite(path, config={**doc["config"], "n_experts": 8})
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*n_experts"):
        load_checkpoint(path)


@pytest.mark.parametrize("field", ["config", "params", "meta"])
def test_missing_field_raises_value_error_naming_it(tmp_path, field):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(8), CFG)
    _rewrite(path, **{field: None})
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*{field}"):
        load_checkpoint(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.msgpack"):
        load_checkpoint(tmp_path / "nope.msgpack")


@pytest.mark.parametrize("field", checkpoint.SHAPE_FIELDS)
def test_config_without_a_shape_field_raises_instead_of_defaulting(tmp_path, field):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(9), CFG)
    doc = serialization.msgpack_restore(path.read_bytes())
    _rewrite(path, config={k: v for k, v in doc["config"].items() if k != field})
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*lacks.*{field}"):
        load_checkpoint(path)


def test_config_without_a_non_shape_field_loads_with_its_default(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(10), CFG)
    doc = serialization.msgpack_restore(path.read_bytes())
    _rewrite(path, config={k: v for k, v in doc["config"].items() if k != "attention"})
    assert load_checkpoint(path)[1].attention == GPTConfig.attention   # an older checkpoint


@pytest.mark.parametrize("change, name", [({"d_model": 16}, "blocks"), ({"max_len": 8}, "wpe"),
                                          ({"n_layer": 3}, "blocks")])
def test_weights_that_do_not_fit_the_config_raise_naming_the_parameter(tmp_path, change, name):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(11), CFG)
    doc = serialization.msgpack_restore(path.read_bytes())
    _rewrite(path, config={**doc["config"], **change})
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: parameter .*{name}.* has shape"):
        load_checkpoint(path)


def test_bad_meta_and_bad_config_values_raise_naming_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(12), CFG)
    _rewrite(path, meta="{not json")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: field 'meta'"):
        load_checkpoint(path)
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(12), CFG)
    doc = serialization.msgpack_restore(path.read_bytes())
    _rewrite(path, config={**doc["config"], "n_head": 3})      # 32 % 3 != 0
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: invalid config"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- concurrent writers


def test_concurrent_saves_to_one_path_all_succeed(tmp_path):
    """Writers in threads saving one path: each uses its own temp file, so no rename finds its
    temp file gone; the final file is one writer's whole checkpoint and no temp file is left."""
    import threading

    path, errors = tmp_path / "shared.ckpt", []
    trees = [make_tree(20 + i) for i in range(4)]

    def writer(i):
        try:
            for _ in range(10):
                save_checkpoint(path, trees[i], CFG, {"writer": i})
        except Exception as e:   # noqa: BLE001 (collected and asserted below)
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    loaded, _, meta = load_checkpoint(path)
    assert_trees_equal(loaded, trees[meta["writer"]])
    assert [p.name for p in tmp_path.iterdir()] == ["shared.ckpt"]


def test_two_processes_writing_one_path_both_succeed(tmp_path):
    """`paths.atomic_write` from two separate Python processes, 200 writes each."""
    import subprocess
    import sys

    target = tmp_path / "atomic.ckpt"
    code = ("import sys; from minirlhf.paths import atomic_write\n"
            "for i in range(200): atomic_write(sys.argv[1], sys.argv[2].encode() * 1000)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), tag],
                              stderr=subprocess.PIPE) for tag in ("a", "b")]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    assert results == [(0, ""), (0, "")]
    assert target.read_bytes() in (b"a" * 1000, b"b" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["atomic.ckpt"]


def test_save_fsyncs_the_file_and_then_its_directory(tmp_path, monkeypatch):
    import stat

    kinds = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(paths.os, "fsync", recording_fsync)
    save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(13), CFG)
    assert kinds == ["file", "dir"]


# ----------------------------------------------------------------------------- weights checked at load


def _rewrite_leaf(path, keys, value):
    doc = serialization.msgpack_restore(path.read_bytes())
    node = doc["params"]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    path.write_bytes(serialization.msgpack_serialize(doc))


@pytest.mark.parametrize("keys, value, message", [
    (("head", "w"), np.full(CFG.d_model, np.nan, np.float32), r"\['head'\]\['w'\] has 32 non-finite"),
    (("head", "b"), np.float32(np.inf), r"\['head'\]\['b'\] has 1 non-finite"),
    (("backbone", "ln_f", "g"), np.array([1.0] * 31 + [np.nan], np.float32),
     r"\['backbone'\]\['ln_f'\]\['g'\] has 1 non-finite"),
    (("backbone", "wte"), np.zeros((CFG.vocab_size, CFG.d_model), np.float16),
     r"\['wte'\] has dtype float16, expected float32"),
    (("head", "w"), "not an array", r"\['head'\]\['w'\] is str, expected a numeric array"),
])
def test_non_finite_or_wrongly_typed_weights_raise_naming_file_and_leaf(tmp_path, keys, value, message):
    path = save_checkpoint(tmp_path / "ckpt.msgpack", make_tree(14), CFG)
    _rewrite_leaf(path, keys, value)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: parameter .*{message}"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- ensure_checkpoint


def test_ensure_checkpoint_builds_loads_and_rebuilds_on_another_recipe(tmp_path):
    path, builds = tmp_path / "stage.ckpt", []

    def build(seed):
        def run():
            builds.append(seed)
            return make_tree(seed), CFG, {"stage": "test"}
        return run

    recipe0, recipe1 = paths.recipe("test", seed=0), paths.recipe("test", seed=1)
    params, _, meta = checkpoint.ensure_checkpoint(path, recipe0, build(0), "test")
    assert builds == [0] and meta["made_by"] == recipe0
    assert_trees_equal(params, make_tree(0))
    checkpoint.ensure_checkpoint(path, recipe0, build(0), "test")          # same recipe: loaded
    assert builds == [0]
    params, _, meta = checkpoint.ensure_checkpoint(path, recipe1, build(1), "test")
    assert builds == [0, 1] and meta["made_by"] == recipe1                 # another recipe: rebuilt
    assert_trees_equal(params, make_tree(1))
    save_checkpoint(path, make_tree(2), CFG, {"stage": "test"})             # no recipe recorded
    checkpoint.ensure_checkpoint(path, recipe1, build(1), "test")
    assert builds == [0, 1, 1]
