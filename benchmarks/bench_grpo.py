"""Seconds per GRPO iteration on the transformer, and where they go.

    python benchmarks/bench_grpo.py [--repeats 7]

Shape: 16 prompts x 4 answers x 48 new tokens, 16 prompt tokens, the default GPTConfig (4 layers,
d_model 128, V = 512), reward model of the same size, KL coefficient 0.05 (k3 in the loss), one
Adam update per batch, float32, random weights (the sampler always runs all 48 steps, so the time
does not depend on the weights).  Each piece is one jitted call, timed after a first call that
compiles it (reported separately); every call ends with block_until_ready; the median of
`repeats` calls is reported:

  generation  sampling.generate alone (64 rows, KV cache)
  scoring     the rollout's other forward passes: pi_ref log-probs and the reward model
  verifier    the in-jit verifiable reward (text assembly + whole-word search of 48 capitals)
  update      value_and_grad of grpo_train.iteration_loss + one Adam step
  iteration   grpo_train.grpo_iteration with the reward model: all of the above in one program
  iter/gold   the same with the verifiable reward (reward="gold": no reward-model forward pass)
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import optax
from benchmarks_common import timed

from minirlhf import grpo_train as gt
from minirlhf.model import GPTConfig, init_params, init_scalar_head
from minirlhf.pretrain import ensure_tokenizer
from minirlhf.reward import reward_forward
from minirlhf.sampling import generate

N_PROMPTS, GROUP, NEW_TOKENS, PROMPT_TOKENS = 16, 4, 48, 16


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model_cfg = GPTConfig()
    cfg = gt.GRPOConfig(beta=0.05, group_size=GROUP, prompts_per_iteration=N_PROMPTS,
                        prompt_len=PROMPT_TOKENS, max_new_tokens=NEW_TOKENS)
    k_pi, k_rm, k_head, k_prompt, k_gen, k_it = jax.random.split(jax.random.PRNGKey(0), 6)
    ref = init_params(k_pi, model_cfg)
    rm = {"backbone": init_params(k_rm, model_cfg), "head": init_scalar_head(k_head, model_cfg)}
    tokens = jax.random.randint(k_prompt, (N_PROMPTS, PROMPT_TOKENS), 3, model_cfg.vocab_size)
    tokens = tokens.at[:, 0].set(1)                                       # <bos> prompt
    table = gt.PromptTable(tokens, jnp.ones_like(tokens), jnp.arange(N_PROMPTS) % 48)
    verifier = gt.make_verifier(ensure_tokenizer(False), model_cfg.vocab_size)
    state = gt.init_grpo_state(ref, cfg)
    beta = jnp.float32(cfg.beta)
    rows = jnp.repeat(jnp.arange(N_PROMPTS), GROUP)
    print(f"device: {jax.devices()[0].device_kind} ({jax.device_count()} device, "
          f"{jax.devices()[0].platform}); model L={model_cfg.n_layer} D={model_cfg.d_model} "
          f"V={model_cfg.vocab_size}; {N_PROMPTS} prompts x {GROUP} answers x {NEW_TOKENS} new "
          f"tokens, {PROMPT_TOKENS} prompt tokens; beta={cfg.beta} (kl_in={cfg.kl_in}); "
          f"{cfg.n_epochs} Adam update per batch; {model_cfg.compute_dtype}")

    pieces = {}
    gen_fn = partial(generate, cfg=model_cfg, max_new_tokens=NEW_TOKENS)
    pieces["generation"] = timed(lambda: gen_fn(state.params, tokens[rows], jnp.ones_like(
        tokens)[rows], k_gen), args.repeats)
    gen = pieces["generation"][2]

    @jax.jit
    def scoring(ref_params, rm_params, toks, attn):
        ref_logps = gt.policy_logps(ref_params, toks, attn, cfg, model_cfg)
        return ref_logps, reward_forward(rm_params, toks, attn, model_cfg)

    pieces["scoring"] = timed(lambda: scoring(ref, rm, gen.tokens, gen.attention_mask),
                              args.repeats)
    verify = jax.jit(gt.verifiable_reward)
    pieces["verifier"] = timed(lambda: verify(verifier, gen.tokens, gen.response_mask,
                                              table.answer[rows]), args.repeats)
    batch = {"tokens": gen.tokens, "attention_mask": gen.attention_mask,
             "response_mask": gen.response_mask.astype(jnp.float32), "old_logps": gen.logprobs,
             "ref_logps": pieces["scoring"][2][0],
             "advantages": jax.random.normal(k_it, (N_PROMPTS * GROUP,))}
    opt = gt.grpo_optimizer(cfg.lr, cfg.max_grad_norm, cfg.trainable)

    @jax.jit
    def update(st, batch):
        grads = jax.grad(lambda p: gt.iteration_loss(p, batch, beta, cfg, model_cfg)[0])(st.params)
        updates, opt_state = opt.update(grads, st.opt_state, st.params)
        return gt.GRPOState(optax.apply_updates(st.params, updates), opt_state, st.step + 1)

    pieces["update"] = timed(lambda: update(state, batch), args.repeats)
    run = partial(gt.grpo_iteration, cfg=gt.compiled_part(cfg), model_cfg=model_cfg)
    pieces["iteration"] = timed(lambda: run(state, ref, rm, table, verifier, gt.recipe_of(cfg),
                                            k_it), args.repeats)
    gold_cfg = dataclasses.replace(cfg, reward="gold")   # no rm_params: no reward-model pass
    pieces["iter/gold"] = timed(lambda: run(state, ref, None, table, verifier,
                                            gt.recipe_of(gold_cfg), k_it), args.repeats)

    it = pieces["iteration"][1]
    print(f"\n{'piece':<12}{'compile+1st (s)':>16}{'per call (s)':>14}{'share of iteration':>20}")
    for name, (first, per_call, _) in pieces.items():
        print(f"{name:<12}{first:>16.2f}{per_call:>14.3f}{per_call / it:>20.0%}")
    for name, what in (("iteration", "reward model"), ("iter/gold", "verifiable reward")):
        first, per_call, _ = pieces[name]
        print(f"GRPO iteration ({what}): compile {first - per_call:.1f} s (first call "
              f"{first:.1f} s), then {per_call:.3f} s per iteration (median of {args.repeats})")


if __name__ == "__main__":
    main()
