"""Evaluation samples in fixed-size chunks of rows so every split shares one compiled sampler:
padding that keeps the rows, chunking that never changes the real rows, and chunks run on
concurrent threads that give the same bits as one after the other."""

import threading
import time

import jax
import numpy as np

from minirlhf.evaluation import (
    CHUNK_ROWS,
    MAX_NEW_TOKENS,
    PROMPT_LEN,
    evaluate_policy,
    in_chunks,
    map_concurrently,
    pad_rows,
    sample_answers,
)
from minirlhf.model import GPTConfig, init_params
from minirlhf.sampling import Generation, generate
from minirlhf.tokenizer import encode_prompts
from minirlhf.worlds import capitals as cw


def test_pad_rows_keeps_the_rows_and_repeats_the_last():
    x = np.arange(12).reshape(3, 4)
    y = np.asarray(pad_rows(x, 8))
    np.testing.assert_array_equal(y[:3], x)
    np.testing.assert_array_equal(y[3:], np.tile(x[-1], (5, 1)))


def test_chunking_never_changes_the_real_rows(tok):
    """Greedy decoding is deterministic per row, so 3 prompts x n rows sampled in padded chunks
    of CHUNK_ROWS must give exactly what the sampler gives for those rows in one batch (n is
    chosen so the rows span two chunks, the second one padded)."""
    cfg = GPTConfig(vocab_size=tok.get_vocab_size(), max_len=PROMPT_LEN + MAX_NEW_TOKENS,
                    n_layer=1, n_head=2, d_model=16)
    params = init_params(jax.random.PRNGKey(0), cfg)
    prompts = cw.split_prompts("train")[:2] + cw.split_prompts("ood")[:1]
    n = CHUNK_ROWS // 3 + 1                                           # 3n rows: two chunks
    s = sample_answers(params, cfg, tok, prompts, jax.random.PRNGKey(1), n=n, temperature=0.0)
    enc = encode_prompts(tok, [p for p in prompts for _ in range(n)], max_len=PROMPT_LEN)
    alone = generate(params, enc.tokens, enc.attention_mask, jax.random.PRNGKey(1), cfg=cfg,
                     max_new_tokens=MAX_NEW_TOKENS, temperature=0.0)
    assert len(s.texts) == 3 * n > CHUNK_ROWS
    for name in ("tokens", "attention_mask", "response_mask"):
        np.testing.assert_array_equal(getattr(s.generation, name), getattr(alone, name),
                                      err_msg=name)
    np.testing.assert_allclose(s.generation.logprobs, alone.logprobs, atol=1e-5)


def test_evaluate_policy_computes_the_kl_only_for_the_splits_asked(tok):
    """kl_splits drops the KL of the other splits and changes nothing else: the same samples
    (each split's key is split from `key` before any KL), the same gold metrics, the same KL."""
    cfg = GPTConfig(vocab_size=tok.get_vocab_size(), max_len=PROMPT_LEN + MAX_NEW_TOKENS,
                    n_layer=1, n_head=2, d_model=16)
    params, ref = init_params(jax.random.PRNGKey(0), cfg), init_params(jax.random.PRNGKey(1), cfg)
    splits = {"train": cw.split_prompts("train")[:2], "ood": cw.split_prompts("ood")[:1]}
    every = evaluate_policy(params, ref, cfg, tok, splits, jax.random.PRNGKey(2), n=2)
    some = evaluate_policy(params, ref, cfg, tok, splits, jax.random.PRNGKey(2), n=2,
                           kl_splits=("train",))
    assert set(every["ood"]) - set(some["ood"]) == {"kl"}
    assert some["train"] == every["train"] and every["train"]["kl"] != 0.0
    assert some["ood"] == {k: v for k, v in every["ood"].items() if k != "kl"}


def test_map_concurrently_returns_the_calls_in_order_whatever_finishes_first():
    """The earlier calls sleep longer, so on more than one thread they finish last."""
    def slow_square(i, x):
        time.sleep(0.02 * (6 - i))
        return np.asarray(x) ** 2
    out = map_concurrently(slow_square, range(7), [np.full(3, i) for i in range(7)])
    assert [o.tolist() for o in out] == [[i * i] * 3 for i in range(7)]
    assert map_concurrently(slow_square, [], []) == []


def test_map_concurrently_inside_a_worker_runs_its_calls_in_that_worker():
    """A call that itself maps (scoring inside a sampled chunk, say) runs its inner calls where it
    is: more inner calls than workers, and no worker waits on the pool it occupies."""
    inner = lambda i: np.asarray([sum(o.item() for o in map_concurrently(np.square, range(i + 9)))])
    out = []
    runner = threading.Thread(target=lambda: out.extend(map_concurrently(inner, range(4))),
                              daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "map_concurrently deadlocked on a nested call"
    assert [o.item() for o in out] == [sum(j * j for j in range(i + 9)) for i in range(4)]


def test_concurrent_chunks_are_the_bits_of_one_chunk_after_the_other(tok):
    """Temperature-1 sampling in chunks on concurrent threads = the same chunks sampled one
    after the other with the same keys fold_in(key, i): every token and log-prob bit."""
    cfg = GPTConfig(vocab_size=tok.get_vocab_size(), max_len=PROMPT_LEN + MAX_NEW_TOKENS,
                    n_layer=1, n_head=2, d_model=16)
    params = init_params(jax.random.PRNGKey(0), cfg)
    prompts = cw.split_prompts("train")[:3]
    enc = encode_prompts(tok, [p for p in prompts for _ in range(4)], max_len=PROMPT_LEN)
    key, rows = jax.random.PRNGKey(3), 4                                # 12 rows: 3 chunks
    sample = lambda t, m, k: generate(params, t, m, k, cfg=cfg, max_new_tokens=MAX_NEW_TOKENS)
    together = Generation(*in_chunks(sample, [enc.tokens, enc.attention_mask], key, rows=rows))
    alone = [sample(enc.tokens[i:i + rows], enc.attention_mask[i:i + rows],
                    jax.random.fold_in(key, i // rows)) for i in range(0, 12, rows)]
    for name in Generation._fields:
        np.testing.assert_array_equal(getattr(together, name),
                                      np.concatenate([getattr(a, name) for a in alone]),
                                      err_msg=name)
