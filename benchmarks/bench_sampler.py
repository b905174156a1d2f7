"""Tokens per second of the KV-cache sampler (`minirlhf.sampling.generate`).

    python benchmarks/bench_sampler.py                 # B = 32 and 64, 48 new tokens
    python benchmarks/bench_sampler.py --batch 32 --repeats 10

The shape every lesson samples at: the default 4x128 GPT (GPTConfig()), a 16-token prompt,
48 new tokens, float32, temperature 1.  A row that samples <eos> keeps running (static shapes),
so every call computes B * 48 decode steps, whatever is sampled.  Two ways to sample B rows:

    generate   one call: one program decodes all B rows (about one core busy: a decode step
               is a chain of ops too small to split across cores)
    in_chunks  `evaluation.in_chunks(generate, rows=B / cores)`: the rows split into one chunk
               per core, the chunks' programs called from concurrent threads (as every
               evaluation samples, there in 64-row chunks)

Compile time (first call minus the fastest call) is printed separately from the steady rate:
tokens/s = B * 48 / (fastest of `--repeats` calls after the first: on a CPU shared with other
processes the fastest call is the one least slowed by them).  Each line also gives the
process's CPU seconds per call (median over the repeats, all threads): the work done, which
other processes on the cores slow down far less than the wall-clock time.  The reference shape for
PyTorch is a GPT2LMHeadModel of the same size with `generate(do_sample=True,
max_new_tokens=48, min_new_tokens=48)`; `--torch` times it instead (run this script with an
interpreter that has torch and transformers, e.g. a separate venv: the package never needs
them, and this mode imports neither jax nor minirlhf).
"""

from __future__ import annotations

import argparse
import statistics
import time

PROMPT, NEW = 16, 48
SHAPE = {"vocab_size": 512, "max_len": 64, "n_layer": 4, "n_head": 4, "d_model": 128}  # GPTConfig()


def bench_jax(batch: int, repeats: int, mode: str) -> dict:
    import jax
    import jax.numpy as jnp

    from minirlhf.evaluation import in_chunks, worker_count
    from minirlhf.model import GPTConfig, init_params
    from minirlhf.sampling import Generation, generate

    cfg = GPTConfig()
    assert all(getattr(cfg, k) == v for k, v in SHAPE.items()), "update SHAPE to GPTConfig()"
    params = init_params(jax.random.PRNGKey(0), cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (batch, PROMPT), 3, cfg.vocab_size)
    mask = jnp.ones_like(tokens)
    sample = lambda t, m, key: generate(params, t, m, key, cfg=cfg, max_new_tokens=NEW)
    rows = -(-batch // worker_count())

    def call(i):
        if mode == "generate":
            return jax.block_until_ready(sample(tokens, mask, jax.random.PRNGKey(i)))
        return Generation(*in_chunks(sample, [tokens, mask], jax.random.PRNGKey(i), rows=rows))

    start = time.perf_counter()
    call(0)
    first_s = time.perf_counter() - start
    times, cpu = [], []
    for i in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        gen = call(i + 1)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    steady = min(times)
    return {"batch": batch, "compile_s": first_s - steady, "steady_s": steady,
            "cpu_s": statistics.median(cpu), "tokens_per_s": batch * NEW / steady,
            "response_tokens": int(gen.response_mask.sum()),
            "split": "1 program" if mode == "generate" else f"{-(-batch // rows)} x {rows} rows"}


def bench_torch(batch: int, repeats: int, threads: int | None) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=SHAPE["vocab_size"], n_positions=SHAPE["max_len"],
                                       n_embd=SHAPE["d_model"], n_layer=SHAPE["n_layer"],
                                       n_head=SHAPE["n_head"], bos_token_id=1, eos_token_id=2,
                                       pad_token_id=0)).eval()
    tokens = torch.randint(3, SHAPE["vocab_size"], (batch, PROMPT))
    mask = torch.ones_like(tokens)

    def call():
        with torch.no_grad():
            return model.generate(tokens, attention_mask=mask, do_sample=True, max_new_tokens=NEW,
                                  min_new_tokens=NEW)

    call()
    times, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    steady = min(times)
    return {"batch": batch, "steady_s": steady, "cpu_s": statistics.median(cpu),
            "tokens_per_s": batch * NEW / steady, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="*", default=[32, 64])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--torch", action="store_true", help="time transformers' generate instead")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's own choice); with other processes on "
                         "the cores, 1 thread avoids its workers spinning on each other")
    args = ap.parse_args()
    for batch in args.batch:
        if args.torch:
            r = bench_torch(batch, args.repeats, args.threads)
            print(f"torch generate  B={batch:<3} {r['tokens_per_s']:8.0f} tokens/s  "
                  f"({r['steady_s'] * 1e3:.1f} ms/call, {r['cpu_s'] * 1e3:.1f} CPU ms/call, "
                  f"{r['threads']} threads)", flush=True)
        else:
            for mode in ("generate", "in_chunks"):
                r = bench_jax(batch, args.repeats, mode)
                print(f"minirlhf {mode:<9} B={batch:<3} {r['tokens_per_s']:8.0f} tokens/s  "
                      f"({r['split']}: {r['steady_s'] * 1e3:.1f} ms/call, "
                      f"{r['cpu_s'] * 1e3:.1f} CPU ms/call; compile {r['compile_s']:.2f} s; "
                      f"{r['response_tokens']} response tokens)", flush=True)


if __name__ == "__main__":
    main()
