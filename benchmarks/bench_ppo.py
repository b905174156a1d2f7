"""Seconds per PPO iteration on the transformer, and where they go.

    python benchmarks/bench_ppo.py [--smoke] [--repeats 5]

Times, each after one warm-up call (compilation excluded, reported separately), every call
ending with block_until_ready:
  generation  sampling.generate alone (B prompts, N new tokens, KV cache)
  scoring     the forward passes of the rollout: policy log-probs + values, pi_ref log-probs,
              the reward model (one jit)
  update      ppo.ppo_update: n_epochs x n_minibatches forward/backward/Adam steps (one jit)
  fused       ppo_train.ppo_iteration: all of the above + shaping + GAE + KL controller (one jit)
  loop        one iteration of ppo_train.train_ppo's Python loop: the fused call, fetching the
              metrics, decoding the rollout and scoring it with the gold reward (outside jit)
  host        the loop's work outside compiled code, timed alone on a finished iteration's output:
              fetching the metrics, decoding the rollout, the gold reward
Python overhead = host / (fused + host): the share of an iteration spent outside compiled code.
(Timed directly rather than as loop - fused: on this machine two medians of ~1 s calls drift by
more than the ~0.07 s difference, and the difference came out negative in some runs.)
The model is the lesson's GPT (random weights: the sampler always runs N steps, so the time does
not depend on the weights).
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from benchmarks_common import timed

from minirlhf import ppo, ppo_train
from minirlhf.model import forward, init_params, init_scalar_head, token_logprobs
from minirlhf.pretrain import PretrainConfig, corpus_arrays, ensure_tokenizer, with_ptx_rows
from minirlhf.sampling import generate
from minirlhf.tokenizer import encode_prompts
from minirlhf.worlds.capitals import parse_country, split_prompts


@partial(jax.jit, static_argnames=("cfg", "model_cfg"))
def score_rollout(params, ref_params, rm_params, tokens, attn, *, cfg, model_cfg):
    """The rollout's forward passes (what `make_rollout` does besides sampling)."""
    logps, values, _ = ppo_train.policy_and_values(params, tokens, attn, cfg, model_cfg)
    ref_logps = token_logprobs(forward(ref_params, tokens, attn, model_cfg).logits, tokens)
    scores = ppo_train.reward_model_score(rm_params, tokens, attn, None, model_cfg)
    return logps, values, ref_logps, scores


@partial(jax.jit, static_argnames=("cfg", "model_cfg"))
def update_only(train_state, batch, key, *, cfg, model_cfg):
    return ppo.ppo_update(train_state, batch, key, partial(ppo_train.ppo_loss, cfg=cfg, model_cfg=model_cfg),
                          cfg.update)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model and batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--value-model", default="shared", choices=ppo_train.VALUE_MODELS)
    args = parser.parse_args()
    smoke = args.smoke
    model_cfg = (PretrainConfig.smoke() if smoke else PretrainConfig()).model
    cfg = ppo_train.PPOConfig.smoke() if smoke else ppo_train.PPOConfig()
    # with the PPO-ptx term: each minibatch also runs the pretraining loss (the costlier iteration)
    cfg = ppo_train.PPOConfig(**{**cfg.__dict__, "value_model": args.value_model, "ptx_coef": 1.0})
    tok = ensure_tokenizer(smoke)
    prompts = split_prompts("train")
    enc = encode_prompts(tok, prompts, max_len=cfg.prompt_len)
    k_pi, k_rm, k_head, k_state, k_gen, k_it = jax.random.split(jax.random.PRNGKey(0), 6)
    ref = init_params(k_pi, model_cfg)
    rm = {"backbone": init_params(k_rm, model_cfg), "head": init_scalar_head(k_head, model_cfg)}
    state = ppo_train.init_ppo_state(ref, rm, model_cfg, cfg, k_state)
    idx = ppo_train.draw_prompts(k_gen, len(prompts), cfg.batch_size)
    pt, pm = jnp.asarray(enc.tokens)[idx], jnp.asarray(enc.attention_mask)[idx]
    params = state.train_state.params
    print(f"device: {jax.devices()[0].device_kind}; model L={model_cfg.n_layer} D={model_cfg.d_model}; "
          f"B={cfg.batch_size} prompts x N={cfg.max_new_tokens} new tokens; "
          f"update {cfg.update.n_epochs} epochs x {cfg.update.n_minibatches} minibatches; "
          f"value model: {cfg.value_model}")

    rows = {}
    rows["generation"] = timed(lambda: generate(params["policy"], pt, pm, k_gen, cfg=model_cfg,
                                                max_new_tokens=cfg.max_new_tokens), args.repeats)
    gen = rows["generation"][2]
    rows["scoring"] = timed(lambda: score_rollout(params, ref, rm, gen.tokens, gen.attention_mask,
                                                  cfg=cfg, model_cfg=model_cfg), args.repeats)
    batch, _ = jax.jit(partial(ppo_train.make_rollout, cfg=cfg, model_cfg=model_cfg))(
        params, ref, rm, pt, pm, state.kl_ctl.beta, k_gen)
    ptx = corpus_arrays(tok) if cfg.ptx_coef > 0 else None   # PPO-ptx rows, as train_ppo draws them
    if ptx is not None:
        batch = with_ptx_rows(batch, ptx, np.arange(cfg.batch_size))
    rows["update"] = timed(lambda: update_only(state.train_state, batch, k_it, cfg=cfg, model_cfg=model_cfg),
                           args.repeats)
    fused = lambda: ppo_train.ppo_iteration(state, ref, rm, enc.tokens, enc.attention_mask, k_it, ptx,
                                       cfg=cfg, model_cfg=model_cfg)
    rows["fused"] = timed(fused, args.repeats)
    countries = [parse_country(p) for p in prompts]

    def loop_iteration():
        _, out = fused()
        jax.device_get(out.metrics)
        return ppo_train.rollout_gold(tok, countries, out)

    rows["loop"] = timed(loop_iteration, args.repeats)
    _, out = fused()
    # a fresh device copy per call: a jax Array caches its host value after the first fetch
    outs = [jax.block_until_ready(jax.tree_util.tree_map(jnp.copy, out)) for _ in range(args.repeats + 1)]

    def host_part():
        o = outs.pop()
        return jax.device_get(o.metrics), ppo_train.rollout_gold(tok, countries, o)

    rows["host"] = timed(host_part, args.repeats)

    print(f"\n{'piece':<12}{'compile+1st (s)':>16}{'per call (s)':>14}{'share of fused':>16}")
    for name, (first, per_call, _) in rows.items():
        print(f"{name:<12}{first:>16.2f}{per_call:>14.3f}{per_call / rows['fused'][1]:>16.0%}")
    parts = sum(rows[k][1] for k in ("generation", "scoring", "update"))
    host, fused_s = rows["host"][1], rows["fused"][1]
    overhead = host / (fused_s + host)
    print(f"\ngeneration + scoring + update = {parts:.3f} s vs fused {rows['fused'][1]:.3f} s "
          f"(shaping, GAE, controller and fusion account for the difference)")
    print(f"Python overhead outside compiled code (metrics fetch, decode, gold reward): "
          f"{host:.3f} s = {overhead:.1%} of an iteration (fused + host)")
    print(f"=> {rows['loop'][1]:.2f} s per PPO iteration; {cfg.n_iterations} iterations ~ "
          f"{cfg.n_iterations * rows['loop'][1]:.0f} s + compile {rows['fused'][0] - rows['fused'][1]:.0f} s")


if __name__ == "__main__":
    main()
