"""Where the CPU training step's time goes: XLA's own per-op timings of the compiled gradient.

    .venv/bin/python benchmarks/cpu_profile.py          # the reference config below

Profiles `jax.grad` of the next-token loss (forward + backward, the bulk of a training step) at
the reference config (4 x 128, 4 heads, V = 512, T = 64, B = 32) with `jax.profiler`, reads the
Perfetto trace it writes, and sums the executed XLA ops' durations per kind, matmuls (HLO
`dot_general`, whatever fusion runs them) apart from the rest.  The op times add up to more than
the wall time because XLA's CPU runtime runs independent ops on both cores at once.  Compare the
matmul total with `benchmarks/matmul_floor.py`'s floor (the same matmuls, each timed alone).
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from minirlhf.model import GPTConfig, cross_entropy_loss, forward, init_params

REPEATS = 5


def main():
    cfg = GPTConfig(vocab_size=512, max_len=64, n_layer=4, n_head=4, d_model=128)
    params = init_params(jax.random.PRNGKey(0), cfg)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, cfg.vocab_size, (32, 64)), jnp.int32)
    mask = jnp.ones_like(tokens)

    def loss(p):
        return cross_entropy_loss(forward(p, tokens, mask, cfg).logits, tokens, mask)

    grad = jax.jit(jax.grad(loss))
    jax.block_until_ready(grad(params))                                  # compile
    # which HLO op each fused computation stems from (its metadata's op_name ends in it)
    hlo = grad.lower(params).compile().as_text()
    origin = {m.group(1): m.group(2).split("/")[-1]
              for m in re.finditer(r"%([\w.\-]+) = \S+ fusion\(.*?op_name=\"([^\"]*)\"", hlo)}
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        t = time.perf_counter()
        for _ in range(REPEATS):
            jax.block_until_ready(grad(params))
        wall_ms = 1e3 * (time.perf_counter() - t) / REPEATS
        jax.profiler.stop_trace()
        trace = next(Path(trace_dir).rglob("*.trace.json.gz"))
        with gzip.open(trace) as f:
            events = json.load(f)["traceEvents"]
    per_kind = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name not in origin and not re.match(r"[a-z_]+(\.\d+)?$", name):
            continue                                                       # runtime, python frames
        base = re.sub(r"\.\d+$", "", name)
        if origin.get(name) == "dot_general" or base == "dot":
            kind = "matmul (dot_general)"
        else:   # e.g. "ynn_fusion (reduce_sum)": YNNPACK also runs some reductions
            kind = f"{base} ({origin[name]})" if base == "ynn_fusion" and name in origin else base
        per_kind[kind] += e["dur"] / 1e3 / REPEATS
    print(f"jax {jax.__version__}; grad of the LM loss, reference config; wall {wall_ms:.1f} ms "
          f"per call (traced)")
    print(f"summed op time {sum(per_kind.values()):.1f} ms (ops overlap on 2 cores):")
    for kind, ms in per_kind.most_common(15):
        print(f"  {ms:7.2f} ms  {kind}")
    rest = sum(ms for k, ms in per_kind.items() if not k.startswith("matmul"))
    print(f"matmuls {per_kind['matmul (dot_general)']:.1f} ms, everything else {rest:.1f} ms")


if __name__ == "__main__":
    main()
