"""What lowering jax's Threefry hash as its rounds written out (`minirlhf/threefry.py`) does to
programs that draw random numbers: compile seconds and the bits drawn, against jax's own CPU
lowering (the rounds as a 5-step while loop).

    python benchmarks/bench_threefry.py

Each lowering runs in a process of its own (jax caches lowerings per process; the persistent
compilation cache is off).  Programs: the exact world's construction (`exact.world._build_world`,
lesson 08's config), the GPT's initial weights (`model.init_params`, GPTConfig(), under one jit),
and the KV-cache sampler (`sampling.generate`, B = 64, 16 + 48 tokens).  For each: compile seconds
(`.lower().compile()`, best of three fresh programs), and a SHA-256 of every output array, which
must be equal under both lowerings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

PROGRAMS = ("exact world", "init_params", "generate")   # each compiled as one jit


def child(lowering: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import minirlhf  # noqa: F401  (registers the written-out lowering)
    from minirlhf.exact import world as exact
    from minirlhf.model import GPTConfig, init_params
    from minirlhf.sampling import generate

    if lowering == "jax":   # jax's own CPU rule, registered again over minirlhf's (a private name)
        from jax._src.random import threefry2x32 as jax_threefry
        from jax.extend.random import threefry2x32_p
        from jax.interpreters import mlir
        mlir.register_lowering(threefry2x32_p, jax_threefry._threefry2x32_cpu_lowering_rule,
                               platform="cpu")
    cfg = GPTConfig()
    params = init_params(jax.random.PRNGKey(0), cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (64, 16), 3, cfg.vocab_size)
    world_cfg = exact.ExactWorldConfig(n_prompts=4, length=3)
    calls = {   # name -> (function, args): each compiled anew per repeat (a new jit object)
        "exact world": (lambda: exact._build_world.__wrapped__(world_cfg), ()),
        "init_params": (lambda k: init_params(k, cfg), (jax.random.PRNGKey(2),)),
        "generate": (lambda p, t, k: generate.__wrapped__(p, t, jnp.ones_like(t), k, cfg=cfg,
                                                          max_new_tokens=48),
                     (params, tokens, jax.random.PRNGKey(3))),
    }
    out = {}
    for name, (fn, args) in calls.items():
        seconds = []
        for _ in range(3):
            lowered = jax.jit(lambda *a, fn=fn: fn(*a)).lower(*args)
            t0 = time.perf_counter()
            compiled = lowered.compile()
            seconds.append(time.perf_counter() - t0)
        digest = hashlib.sha256()
        for leaf in jax.tree_util.tree_leaves(compiled(*args)):
            digest.update(np.asarray(leaf).tobytes())
        out[name] = {"compile_s": min(seconds), "sha256": digest.hexdigest()[:16],
                     "while_loops": lowered.as_text().count("stablehlo.while")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", choices=("jax", "minirlhf"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    results = {}
    for lowering in ("jax", "minirlhf"):
        run = subprocess.run([sys.executable, __file__, "--child", lowering], capture_output=True,
                             text=True, check=True,
                             env={**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"})
        results[lowering] = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"{'program':<14}{'jax CPU loop':>14}{'written out':>13}{'while loops':>13}  same bits")
    for name in PROGRAMS:
        a, b = results["jax"][name], results["minirlhf"][name]
        print(f"{name:<14}{a['compile_s']:>12.2f} s{b['compile_s']:>11.2f} s"
              f"{a['while_loops']:>7} -> {b['while_loops']:<4}  {a['sha256'] == b['sha256']}")


if __name__ == "__main__":
    main()
