"""Evaluation batches are padded to a row bucket so every split shares one compiled sampler:
the bucket rule against its definition, and padding that never changes the real rows."""

import jax
import numpy as np

from minirlhf.evaluation import MAX_NEW_TOKENS, PROMPT_LEN, pad_rows, row_bucket, sample_answers
from minirlhf.model import GPTConfig, init_params
from minirlhf.sampling import generate
from minirlhf.tokenizer import encode_prompts
from minirlhf.worlds import capitals as cw


def test_row_bucket_is_the_smallest_allowed_size_that_fits():
    """Allowed sizes: 8, 16, ..., 256 (powers of two), then 512, 768, ... (multiples of 256)."""
    allowed = [2 ** k for k in range(3, 9)] + [256 * m for m in range(2, 9)]
    for n in range(1, 2049):
        assert row_bucket(n) == min(a for a in allowed if a >= n), n


def test_pad_rows_keeps_the_rows_and_repeats_the_last():
    x = np.arange(12).reshape(3, 4)
    y = np.asarray(pad_rows(x, 8))
    np.testing.assert_array_equal(y[:3], x)
    np.testing.assert_array_equal(y[3:], np.tile(x[-1], (5, 1)))


def test_padding_rows_never_changes_the_real_rows(tok):
    """Greedy decoding is deterministic per row, so sampling 3 prompts inside a bucket of 8 rows
    must give exactly what the sampler gives for those 3 rows alone."""
    cfg = GPTConfig(vocab_size=tok.get_vocab_size(), max_len=PROMPT_LEN + MAX_NEW_TOKENS,
                    n_layer=1, n_head=2, d_model=16)
    params = init_params(jax.random.PRNGKey(0), cfg)
    prompts = cw.split_prompts("train")[:2] + cw.split_prompts("ood")[:1]
    s = sample_answers(params, cfg, tok, prompts, jax.random.PRNGKey(1), n=1, temperature=0.0)
    enc = encode_prompts(tok, prompts, max_len=PROMPT_LEN)
    alone = generate(params, enc.tokens, enc.attention_mask, jax.random.PRNGKey(1), cfg=cfg,
                     max_new_tokens=MAX_NEW_TOKENS, temperature=0.0)
    assert len(s.texts) == 3
    for name in ("tokens", "attention_mask", "response_mask"):
        np.testing.assert_array_equal(getattr(s.generation, name), getattr(alone, name), err_msg=name)
    np.testing.assert_allclose(s.generation.logprobs, alone.logprobs, atol=1e-5)
