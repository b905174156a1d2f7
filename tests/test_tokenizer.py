"""BPE tokenizer: special ids, exact round trip, masks, padding sides, determinism."""

import os
import subprocess
import sys

import numpy as np
import pytest

from minirlhf import tokenizer as T
from minirlhf.worlds import capitals as cw

PROMPT = "What's the capital of France?"
GOOD = " The capital of France is Paris."


def test_special_token_ids_and_vocab_size(tok):
    assert [tok.token_to_id(s) for s in ("<pad>", "<bos>", "<eos>")] == [0, 1, 2]
    assert T.PAD_ID != T.EOS_ID
    assert tok.get_vocab_size() == T.DEFAULT_VOCAB_SIZE == 512


@pytest.mark.parametrize("text", [
    GOOD, PROMPT, "  two  spaces, then\ttab\nnewline ", "x", "", " .", "?!?", "a... b",
    "Which city is the capital of Nepal? Kathmandu!", "{}[]()<>~`@#$%^&*_+=|\\/\"'",
])
def test_round_trip_is_exact(tok, text):
    assert tok.decode(T.encode_text(tok, text)) == text


def test_round_trip_on_the_whole_corpus(tok, capitals_cfg):
    texts = cw.tokenizer_training_texts(capitals_cfg)
    assert all(tok.decode(T.encode_text(tok, t)) == t for t in texts)


def test_text_outside_the_alphabet_is_rejected(tok):
    with pytest.raises(ValueError, match="outside the tokenizer's alphabet"):
        T.encode_text(tok, "Zürich")


def test_separate_encoding_equals_joint_encoding(tok):
    """A response starting with a space never merges with the prompt: the response mask
    computed from separate encodings is what the model sees in the joined text."""
    for country in cw.COUNTRIES:
        prompt, answer = cw.make_prompt(country), cw.canonical_answer(country)
        joint = T.encode_text(tok, prompt + answer)
        assert joint == T.encode_text(tok, prompt) + T.encode_text(tok, answer)


def test_encode_batch_layout_and_masks(tok):
    prompts = [PROMPT, "What's the capital of Czechia?"]
    responses = [GOOD, " The capital of Czechia is Prague. Our team won the game on Monday."]
    b = T.encode_batch(tok, prompts, responses, max_len=48)
    assert b.tokens.shape == b.attention_mask.shape == b.response_mask.shape == (2, 48)
    assert b.tokens.dtype == np.int32
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n_prompt, n_resp = len(T.encode_text(tok, p)), len(T.encode_text(tok, r))
        n = 1 + n_prompt + n_resp + 1
        assert b.tokens[i, 0] == T.BOS_ID and b.tokens[i, n - 1] == T.EOS_ID
        assert (b.tokens[i, n:] == T.PAD_ID).all()                      # right-padded
        assert b.attention_mask[i].tolist() == [1] * n + [0] * (48 - n)
        expected = [0] * (1 + n_prompt) + [1] * (n_resp + 1) + [0] * (48 - n)
        assert b.response_mask[i].tolist() == expected
        masked = b.tokens[i][b.response_mask[i] == 1].tolist()         # response + eos exactly
        assert masked[-1] == T.EOS_ID and tok.decode(masked[:-1]) == r
        assert tok.decode(b.tokens[i][1:1 + n_prompt].tolist()) == p


def test_encode_batch_without_responses_has_no_eos(tok):
    b = T.encode_batch(tok, [PROMPT], max_len=20)
    n = 1 + len(T.encode_text(tok, PROMPT))
    assert b.attention_mask.sum() == n and b.response_mask.sum() == 0
    assert T.EOS_ID not in b.tokens[0].tolist()


def test_encode_prompts_is_left_padded(tok):
    prompts = [PROMPT, "What's the capital of Argentina?"]
    t, m = T.encode_prompts(tok, prompts, max_len=20)
    for i, p in enumerate(prompts):
        ids = [T.BOS_ID] + T.encode_text(tok, p)
        assert t[i, -len(ids):].tolist() == ids and (t[i, :-len(ids)] == T.PAD_ID).all()
        assert m[i].tolist() == [0] * (20 - len(ids)) + [1] * len(ids)


def test_too_long_sequences_name_item_length_and_limit(tok):
    with pytest.raises(ValueError, match=r"item 1 has \d+ tokens .*> max_len=12"):
        T.encode_batch(tok, [PROMPT[:5], PROMPT], [" a", GOOD], max_len=12)
    with pytest.raises(ValueError, match=r"item 0 has \d+ tokens .*> max_len=5"):
        T.encode_prompts(tok, [PROMPT], max_len=5)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        T.encode_batch(tok, [PROMPT, PROMPT], [GOOD], max_len=40)


def test_decode_responses_cuts_at_eos_and_reports_truncation(tok):
    # a generated batch: left-padded prompts, then responses; row 1 never produced eos
    t, m = T.encode_prompts(tok, [PROMPT, PROMPT], max_len=16)
    good, cut = T.encode_text(tok, GOOD), T.encode_text(tok, GOOD)[:4]
    width = len(good) + 3
    resp = np.zeros((2, width), np.int32)
    resp_mask = np.zeros((2, width), np.int32)
    resp[0, :len(good) + 1] = good + [T.EOS_ID]
    resp_mask[0, :len(good) + 1] = 1
    resp[1, :4], resp_mask[1, :4] = cut, 1
    tokens = np.concatenate([t, resp], 1)
    mask = np.concatenate([np.zeros_like(m), resp_mask], 1)
    out = T.decode_responses(tok, tokens, mask)
    assert out.texts == [GOOD, tok.decode(cut)] and out.ended.tolist() == [True, False]
    assert GOOD.startswith(out.texts[1])
    with pytest.raises(ValueError, match="same"):
        T.decode_responses(tok, tokens, mask[:, 1:])


_BUILD = """
import sys
from minirlhf.tokenizer import load_or_train_tokenizer
from minirlhf.worlds.capitals import CapitalsConfig, tokenizer_training_texts
load_or_train_tokenizer(sys.argv[1], tokenizer_training_texts(CapitalsConfig(seed=3)))
"""


def test_tokenizer_json_is_byte_identical_across_builds(tmp_path):
    """Two fresh processes (fresh hash seeds, 1 vs default trainer threads) save the same bytes."""
    paths = [tmp_path / f"run{i}" / "tokenizer.json" for i in range(2)]
    for p, threads in zip(paths, [{"RAYON_NUM_THREADS": "1"}, {}]):
        env = {**os.environ, **threads}
        subprocess.run([sys.executable, "-c", _BUILD, str(p)], check=True, env=env)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    # in-process training gives the same bytes; loading does not retrain (empty texts
    # would give a 100-token vocabulary: specials + alphabet)
    texts = cw.tokenizer_training_texts(cw.CapitalsConfig(seed=3))
    assert T.train_tokenizer(texts).to_str(pretty=True) == paths[0].read_text()
    assert T.load_or_train_tokenizer(paths[0], []).get_vocab_size() == 512
    assert T.train_tokenizer([]).get_vocab_size() == 3 + len(T.ALPHABET)


def test_small_vocab_is_rejected():
    with pytest.raises(ValueError, match="smaller than"):
        T.train_tokenizer(["abc"], vocab_size=50)


def test_unique_rows_indexes_back_to_every_row():
    from minirlhf.tokenizer import unique_rows
    rows = np.array([[1, 5, 0], [1, 6, 2], [1, 5, 0], [1, 6, 2], [3, 3, 3]])
    first, inverse = unique_rows(rows)
    assert len(first) == 3
    np.testing.assert_array_equal(rows[first][inverse], rows)
