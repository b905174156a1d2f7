"""How a training step's time and memory grow with T, B, d and L (around the lesson config).

    python benchmarks/cost_curves.py            # full sweeps, ~1-3 min on an idle 2-core CPU
    python benchmarks/cost_curves.py --smoke    # tiny sweeps, seconds (used by lesson 10's tests)

What is measured, per point: one jitted LM training step (`pretrain.lm_loss` + AdamW with lesson
02's schedule, through `pretrain.lm_train_step`, explicit attention, fp32), compiled once via
`.lower().compile()`.  At the base point this is lesson 02's pretraining step itself, so run
after `make lessons` it is read back from the persistent compilation cache, not compiled again
(not inside lesson 10: the cache's keys include the devices, and that lesson has four).
  * time: median wall time of `n_timed` steps after one warm-up step (blocked on the result).
    Medians, because the machine is shared and a single step can be stalled by a neighbour.
    Also the median process CPU time (all threads): on a crowded machine it is steadier than
    wall time, since waiting for a core does not count; it measures work, not latency.
  * memory: the compiled executable's `memory_analysis()`: argument + output + temp bytes
    (minus aliased bytes).  XLA plans the buffers at compile time, so on CPU this is exact
    and deterministic, unlike sampling the process RSS.
  * FLOPs (model, not measured): 6 N per token for the matmuls (forward 2N, backward 4N; Kaplan
    et al. 2020 sec. 2.1) with N = 12 L d^2 + V d matmul weights (blocks + tied unembedding),
    plus attention's scores and weighted sum, 12 L T d per token (forward 2 * 2 L T d, x3).

Fits, printed: the log-log slope of time and memory against each swept quantity (1 = linear,
2 = quadratic), and time(T) = a T + b T^2 by least squares, whose b T^2 / time is the measured
attention-like (T^2) share of the step, compared with the FLOP model's share.
Results go to runs/cost_curves.json, the figure to figures/10_cost_curves.png.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from minirlhf import paths
from minirlhf.model import GPTConfig, init_params
from minirlhf.pretrain import SEQ_LEN, PretrainConfig, lm_train_step
from minirlhf.training import init_train_state

COURSE = PretrainConfig()   # the lessons' GPT, batch and AdamW schedule (lesson 02)
BASE = {"L": COURSE.model.n_layer, "d": COURSE.model.d_model, "H": COURSE.model.n_head,
        "V": COURSE.model.vocab_size, "T": SEQ_LEN, "B": COURSE.batch_size}
SWEEPS = {"T": [25, 50, 100, 200], "B": [8, 16, 32, 64], "d": [48, 96, 192], "L": [1, 3, 6]}
SMOKE_BASE = {"L": 1, "d": 32, "H": 2, "V": 64, "T": 16, "B": 8}
SMOKE_SWEEPS = {"T": [8, 16, 32], "B": [4, 8, 16], "d": [16, 32, 64], "L": [1, 2]}
UNITS = {"T": "tokens per sequence", "B": "sequences per batch", "d": "d_model", "L": "layers"}


def flops_per_step(L: int, d: int, V: int, T: int, B: int, **_) -> dict:
    """Model FLOPs of one training step: 6 N B T (matmuls) + 12 L T^2 d B (attention)."""
    n_matmul = 12 * L * d * d + V * d
    return {"dense": 6 * n_matmul * B * T, "attention": 12 * L * T * T * d * B}


def measure(point: dict, n_timed: int, seed: int = 0) -> dict:
    """Compile, warm up, and time one LM training step at `point` (keys L, d, H, V, T, B)."""
    cfg = GPTConfig(vocab_size=point["V"], max_len=max(point["T"], COURSE.model.max_len),
                    n_layer=point["L"], n_head=point["H"], d_model=point["d"])
    optimizer, step = lm_train_step(cfg, COURSE.steps, COURSE.lr, COURSE.weight_decay)
    state = init_train_state(init_params(jax.random.PRNGKey(seed), cfg), optimizer)
    rng = np.random.default_rng(seed)
    shape = (point["B"], point["T"])
    batch = {"tokens": rng.integers(3, cfg.vocab_size, shape).astype(np.int32),
             "attention_mask": np.ones(shape, np.int32), "loss_mask": np.ones(shape, np.int32)}
    compiled = step.lower(state, batch).compile()
    mem = compiled.memory_analysis()
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)
    jax.block_until_ready(compiled(state, batch))                          # warm-up
    times, cpu_times = [], []
    for _ in range(n_timed):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(state, batch))
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    flops = flops_per_step(**point)
    return {**point, "time_s": float(np.median(times)), "times_s": times,
            "cpu_s": float(np.median(cpu_times)), "peak_bytes": int(peak),
            "temp_bytes": int(mem.temp_size_in_bytes), "flops": sum(flops.values()),
            "attention_flops": flops["attention"]}


def run_sweeps(base: dict, sweeps: dict, n_timed: int, quiet: bool = False) -> dict:
    """{name: [result per value]}, one quantity varied at a time around `base` (base measured once)."""
    cache, out = {}, {}
    for name, values in sweeps.items():
        out[name] = []
        for v in values:
            point = {**base, name: v}
            key = tuple(sorted(point.items()))
            if key not in cache:
                cache[key] = measure(point, n_timed)
                if not quiet:
                    r = cache[key]
                    print(f"  {name}={v:<4} time {1e3 * r['time_s']:8.1f} ms   cpu {1e3 * r['cpu_s']:8.1f} ms"
                          f"   peak {r['peak_bytes'] / 2**20:7.1f} MiB"
                          f"   {r['flops'] / r['time_s'] / 1e9:6.1f} GFLOP/s", flush=True)
            out[name].append(cache[key])
    return out


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x: y ~ x^slope."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def fit_linear_plus_quadratic(T, t) -> tuple[float, float]:
    """time(T) = a T + b T^2 by least squares with a, b >= 0 (no intercept: no tokens, no work).

    With only two unknowns the non-negative fit is: the unconstrained fit if both are >= 0,
    else the better of the two one-term fits (pure linear or pure quadratic)."""
    T, t = np.asarray(T, float), np.asarray(t, float)
    (a, b), *_ = np.linalg.lstsq(np.stack([T, T ** 2], 1), t, rcond=None)
    if a >= 0 and b >= 0:
        return float(a), float(b)
    a1, b2 = (T @ t) / (T @ T), (T ** 2 @ t) / (T ** 2 @ T ** 2)
    lin_err, quad_err = np.sum((t - a1 * T) ** 2), np.sum((t - b2 * T ** 2) ** 2)
    return (float(a1), 0.0) if lin_err <= quad_err else (0.0, float(b2))


def summarize(results: dict, base: dict) -> dict:
    """Slopes per swept quantity, and the T^2 share of the step at base T and 4 x base T."""
    summary = {"slopes": {}}
    for name, rows in results.items():
        x = [r[name] for r in rows]
        summary["slopes"][name] = {"time": loglog_slope(x, [r["time_s"] for r in rows]),
                                   "cpu": loglog_slope(x, [r["cpu_s"] for r in rows]),
                                   "memory": loglog_slope(x, [r["peak_bytes"] for r in rows]),
                                   "flops": loglog_slope(x, [r["flops"] for r in rows])}
    Ts = [r["T"] for r in results["T"]]
    a, b = fit_linear_plus_quadratic(Ts, [r["time_s"] for r in results["T"]])
    a_cpu, b_cpu = fit_linear_plus_quadratic(Ts, [r["cpu_s"] for r in results["T"]])
    summary["fit_T"] = {"a": a, "b": b, "a_cpu": a_cpu, "b_cpu": b_cpu, "share": {}}
    for T in (base["T"], 4 * base["T"]):
        fl = flops_per_step(**{**base, "T": T})
        summary["fit_T"]["share"][str(T)] = {
            "measured": b * T * T / (a * T + b * T * T),
            "measured_cpu": b_cpu * T * T / (a_cpu * T + b_cpu * T * T),
            "flop_model": fl["attention"] / (fl["dense"] + fl["attention"])}
    return summary


def print_report(results: dict, summary: dict) -> None:
    print(f"\n{'sweep':>5} {'value':>6} {'time ms':>9} {'cpu ms':>9} {'peak MiB':>9} {'GFLOP':>7} {'GFLOP/s':>8}")
    for name, rows in results.items():
        for r in rows:
            print(f"{name:>5} {r[name]:>6} {1e3 * r['time_s']:9.1f} {1e3 * r['cpu_s']:9.1f} "
                  f"{r['peak_bytes'] / 2**20:9.1f} "
                  f"{r['flops'] / 1e9:7.2f} {r['flops'] / r['time_s'] / 1e9:8.1f}")
    print("\nlog-log slopes (time ~ x^s; 1 = linear, 2 = quadratic):")
    for name, s in summary["slopes"].items():
        print(f"  {name}: wall time {s['time']:.2f}   cpu time {s['cpu']:.2f}   memory {s['memory']:.2f}"
              f"   model FLOPs {s['flops']:.2f}")
    fit = summary["fit_T"]
    print(f"\ntime(T) = a T + b T^2 (a, b >= 0):  wall a = {fit['a']:.3g} s, b = {fit['b']:.3g} s;"
          f"  cpu a = {fit['a_cpu']:.3g} s, b = {fit['b_cpu']:.3g} s")
    for T, sh in fit["share"].items():
        print(f"  T^2 share at T={T}: measured {sh['measured']:.1%} (wall), {sh['measured_cpu']:.1%} (cpu)"
              f"   FLOP model {sh['flop_model']:.1%}")
    print("(wall times: medians on a shared CPU, inflated by waiting for a core when the machine is\n"
          " crowded; CPU times count only this process's work and are steadier; memory is exact)")


def plot(results: dict, summary: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(4 * len(results) + 1, 6.5), squeeze=False)
    for j, (name, rows) in enumerate(results.items()):
        x = np.array([r[name] for r in rows])
        s = summary["slopes"][name]
        axes[0, j].loglog(x, [1e3 * r["time_s"] for r in rows], "o-", label=f"wall, slope {s['time']:.2f}")
        axes[0, j].loglog(x, [1e3 * r["cpu_s"] for r in rows], "x--", label=f"CPU, slope {s['cpu']:.2f}")
        axes[1, j].loglog(x, [r["peak_bytes"] / 2**20 for r in rows], "s-", color="C1",
                          label=f"slope {s['memory']:.2f}")
        axes[0, j].set_ylabel("step time (ms, median of steps)")
        axes[1, j].set_ylabel("peak memory (MiB, XLA plan)")
        for ax in axes[:, j]:
            ax.set_xlabel(f"{name} ({UNITS[name]})")
            ax.set_xticks(x, [str(v) for v in x])
            ax.minorticks_off()
            ax.legend()
            ax.grid(alpha=0.3, which="both")
    fig.suptitle("Cost of one LM training step (CPU, fp32), one quantity varied around the lesson config")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sweeps (seconds)")
    parser.add_argument("--n-timed", type=int, default=5, help="timed steps per point (median)")
    args = parser.parse_args(argv)
    base, sweeps = (SMOKE_BASE, SMOKE_SWEEPS) if args.smoke else (BASE, SWEEPS)
    t0 = time.perf_counter()
    print(f"base {base}; devices {jax.devices()}")
    results = run_sweeps(base, sweeps, args.n_timed)
    summary = summarize(results, base)
    print_report(results, summary)
    out = {"base": base, "results": results, "summary": summary, "device": str(jax.devices()[0])}
    json_path = paths.runs_dir(args.smoke) / "cost_curves.json"
    json_path.write_text(json.dumps(out, indent=1))
    fig_path = paths.figures_dir(args.smoke) / "10_cost_curves.png"
    plot(results, summary, fig_path)
    print(f"wrote {json_path} and {fig_path} in {time.perf_counter() - t0:.0f} s")
    return out


if __name__ == "__main__":
    main()
