"""Shared fixtures: the capitals world's default config and its tokenizer, built once.

Also: every process of a test run (pytest, its xdist workers, the smoke lessons it starts as
subprocesses) shares one persistent XLA compilation cache, <runs root>/jax_cache.  The smoke
lessons compile many identical functions (the same tiny GPT's steps and samplers, lesson after
lesson); reading them back instead of recompiling saves about a fifth of the lessons' time.
The cache is keyed by the computation, the compile options and the jax version, so an entry is
never used for anything but the identical program.

And: the test run compiles with XLA's CPU backend optimisation level 0
(XLA_FLAGS=--xla_backend_optimization_level=0, appended for every process of the run).  A cold
test run is mostly XLA compilation of small programs (with a warm cache the suite takes a
quarter of the time), and LLVM's optimisation passes are most of each compilation: level 0
halves the compile time while the tests' tiny models run barely slower (on the 2-core CPU with
a cold cache: the 4-device worker of test_distributed takes 52 CPU-seconds instead of 105, and
pytest -n 2 6 min 50 s instead of 9 min 14 s).  The graph-level (HLO) passes and every tolerance are
unchanged; float32 results may differ in the last bits from the default level's, so a test that
compares two programs bit for bit (test_schedule.py) compiles both at the same level.  A level
already in XLA_FLAGS wins.  The
lessons and benchmarks (`make lessons`, `benchmarks/`) compile at the default level, where run
time matters.

And: the files run heaviest first.  `make test` hands whole files to two workers (pytest-xdist,
--dist loadfile --no-loadscope-reorder: in collection order), so the run ends when the worker
that got the last heavy file finishes it.  Collected heaviest first (longest-processing-time
first), the smoke book (test_lessons.py, about a quarter of the suite's CPU time, in a subprocess)
starts at once on one worker while the other works through the next heaviest files, and the
light files fill in at the end on whichever worker is free.
"""

import os

import jax
import pytest

from minirlhf.paths import runs_root
from minirlhf.tokenizer import load_or_train_tokenizer
from minirlhf.worlds.capitals import CapitalsConfig, tokenizer_training_texts

JAX_CACHE_SETTINGS = {"jax_compilation_cache_dir": str(runs_root() / "jax_cache"),
                      "jax_persistent_cache_min_compile_time_secs": 0.0,
                      "jax_persistent_cache_min_entry_size_bytes": 0}
TEST_XLA_FLAG = "--xla_backend_optimization_level=0"     # compile fast: see the module docstring
if TEST_XLA_FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):   # read at backend start
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAG).strip()
for _name, _default in JAX_CACHE_SETTINGS.items():   # an environment variable set by the user wins
    _value = os.environ.setdefault(_name.upper(), str(_default))  # seen by the lesson subprocesses
    jax.config.update(_name, type(_default)(_value))               # and by this process


# heaviest first (CPU-seconds of a cold run); files not listed are light and follow in name order
HEAVY_FILES = ("test_lessons.py", "test_ppo_train.py", "test_dpo_train.py", "test_grpo_train.py",
               "test_model.py", "test_distributed.py", "test_sampling.py", "test_tabular.py",
               "test_reward.py", "test_exact_grpo.py", "test_robustness.py", "test_trainable.py",
               "test_ppo_math.py", "test_compare.py", "test_grpo_math.py", "test_precision.py")


def pytest_collection_modifyitems(items):
    """Order the files heaviest first (stable: tests keep their order within a file)."""
    rank = {name: i for i, name in enumerate(HEAVY_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FILES)))


@pytest.fixture(scope="session")
def capitals_cfg() -> CapitalsConfig:
    return CapitalsConfig()


@pytest.fixture(scope="session")
def tok(tmp_path_factory, capitals_cfg):
    """The BPE tokenizer trained on the default capitals world (in a temp dir)."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    return load_or_train_tokenizer(path, tokenizer_training_texts(capitals_cfg))


def written_out_lm_loss(logits, tokens, loss_mask) -> float:
    """Next-token cross-entropy as a float64 loop: -(1/N) sum_{t>0, m_t=1} log softmax(z_{t-1})[x_t]
    (the PPO-ptx / DPO-ptx term, Ouyang et al. 2022 eq. 2, written out for the tests)."""
    import numpy as np
    z, x, m = np.asarray(logits, np.float64), np.asarray(tokens), np.asarray(loss_mask)
    terms = []
    for b in range(x.shape[0]):
        for t in range(1, x.shape[1]):
            if m[b, t]:
                zt = z[b, t - 1]
                terms.append(zt[x[b, t]] - zt.max() - np.log(np.exp(zt - zt.max()).sum()))
    return -float(np.mean(terms))
