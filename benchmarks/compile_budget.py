"""How much of each lesson is XLA compilation: compilations, compile seconds, run seconds.

    python benchmarks/compile_budget.py                  # every lesson, full mode, in order
    python benchmarks/compile_budget.py --smoke          # the --smoke runs (what the tests run)
    python benchmarks/compile_budget.py --lessons 02 03  # a subset (still in file order)
    python benchmarks/compile_budget.py --cache DIR      # with a persistent compilation cache
    python benchmarks/compile_budget.py --top 10         # and each lesson's costliest programs
    python benchmarks/compile_budget.py --logs DIR       # keep what each lesson printed

Each lesson runs in its own process, as `make lessons` runs it; this script is that process's
entry point too (`--child`): it registers a `jax.monitoring` time-span listener and then runs
the lesson with `runpy`.  jax reports three spans per compiled program:

    /jax/core/compile/jaxpr_trace_duration          Python tracing to a jaxpr
    /jax/core/compile/jaxpr_to_mlir_module_duration lowering to StableHLO
    /jax/core/compile/backend_compile_duration      XLA compilation (or a persistent-cache read)

Compile seconds are the length of the UNION of these spans (a jit traced inside another jit's
trace would otherwise count twice); compilations are the backend_compile spans (one per
executable built or read from the cache); run seconds = the lesson's wall time in its process
minus compile seconds; wall seconds also count interpreter start and imports; CPU seconds are
the process's user + system time (on a shared machine, the measure least moved by the others).
A lesson that fails is reported and left out of the totals; the next lessons still run.

The table is printed and written to <runs root>/compile_budget.json, keyed by mode ("full",
"smoke", "full+cache", "smoke+cache"), so one mode's run does not overwrite another's.  Without
--cache the persistent cache is switched off (a fresh clone's cold run), whatever the
environment says.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPAN_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
               "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
               "/jax/core/compile/backend_compile_duration": "backend"}


def union_length(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end] intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def child(stats_path: str, lesson: str, lesson_args: list[str]) -> None:
    """Run one lesson in this process with a listener on jax's compile spans; write the stats."""
    import jax

    spans: dict[str, list[tuple[float, float]]] = {name: [] for name in SPAN_EVENTS.values()}
    per_program: dict[str, list[float]] = {}   # backend compilations: name -> [count, seconds]

    def on_span(event, start, end, fun_name="?", **_):
        if event in SPAN_EVENTS:
            spans[SPAN_EVENTS[event]].append((start, end))
        if SPAN_EVENTS.get(event) == "backend":
            entry = per_program.setdefault(str(fun_name), [0, 0.0])
            entry[0] += 1
            entry[1] += end - start

    jax.monitoring.register_event_time_span_listener(on_span)
    start = time.time()
    sys.argv = [lesson, *lesson_args]
    sys.path[0] = str(Path(lesson).resolve().parent)   # as `python lessons/NN_x.py` would see it
    try:
        runpy.run_path(lesson, run_name="__main__")
    finally:
        seconds = time.time() - start
        compile_s = union_length([s for v in spans.values() for s in v])
        Path(stats_path).write_text(json.dumps({
            "compilations": len(spans["backend"]), "compile_s": compile_s,
            "run_s": seconds - compile_s, "lesson_s": seconds,
            **{f"{name}_s": sum(e - s for s, e in v) for name, v in spans.items()},
            "programs": dict(sorted(per_program.items(), key=lambda kv: -kv[1][1]))}))


def run_lesson(path: Path, smoke: bool, cache: str | None, logs: Path | None = None) -> dict | None:
    """One lesson in a fresh interpreter: its stats plus the process's wall and CPU seconds
    (CPU seconds tell how much work it was when other processes share the cores); None if the
    lesson failed (its error is printed)."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    else:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--child", f.name, str(path), *(["--smoke"] * smoke)]
        start, cpu0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True)
        wall, cpu1 = time.time() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        if logs is not None:   # what the lesson printed, as `make lessons` would show it
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"{path.stem}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            print(f"{path.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
            return None
        cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        return {**json.loads(Path(f.name).read_text()), "wall_s": wall, "cpu_s": cpu}


def print_row(name: str, row: dict) -> None:
    """One line of the table: compilations, compile, run, wall and CPU seconds."""
    print(f"{name:<22}{row['compilations']:>13}{row['compile_s']:>11.1f}{row['run_s']:>9.1f}"
          f"{row['wall_s']:>9.1f}{row['cpu_s']:>9.1f}", flush=True)


def main() -> None:
    """Run the lessons (or be one lesson's --child process) and print and save the table."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3], sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="run the lessons with --smoke")
    ap.add_argument("--lessons", nargs="*", default=None, help="lesson numbers, e.g. 02 03")
    ap.add_argument("--cache", default=None, help="persistent compilation cache directory")
    ap.add_argument("--logs", type=Path, default=None,
                    help="write each lesson's printed output to DIR/<lesson>.log")
    ap.add_argument("--top", type=int, default=0,
                    help="also list each lesson's N programs with the most backend-compile seconds")
    args = ap.parse_args()

    lessons = sorted((REPO / "lessons").glob("[0-9][0-9]_*.py"))
    if args.lessons:
        lessons = [p for p in lessons if p.name[:2] in args.lessons]
    mode = ("smoke" if args.smoke else "full") + ("+cache" if args.cache else "")
    print(f"{'lesson':<22}{'compilations':>13}{'compile s':>11}{'run s':>9}{'wall s':>9}"
          f"{'cpu s':>9}")
    table = {}
    for path in lessons:
        row = run_lesson(path, args.smoke, args.cache, args.logs)
        if row is not None:
            table[path.stem] = row
            print_row(path.stem, row)
            for name, (count, secs) in list(row["programs"].items())[:args.top]:
                print(f"    {name[:40]:<40} {count:>4} x  backend {secs:6.1f} s")
    if table:
        numbers = [k for k, v in next(iter(table.values())).items() if not isinstance(v, dict)]
        table["total"] = {k: sum(r[k] for r in table.values()) for k in numbers}
        print_row("total", table["total"])

    sys.path.insert(0, str(REPO))
    from minirlhf.paths import runs_root
    out = runs_root() / "compile_budget.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(out.read_text()) if out.exists() else {}
    saved[mode] = {"cache": args.cache, "lessons": table}
    out.write_text(json.dumps(saved, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
