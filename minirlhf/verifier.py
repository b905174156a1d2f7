"""The verifiable reward of the capitals world, computed inside a jit from token ids (RLVR;
Lambert et al. 2024, Tulu 3; DeepSeek-AI 2025, R1):

    r(x, y) = 1  if y names x's capital and no other capital,  else 0

which is worlds.capitals.is_correct, the course's gold accuracy, on the decoded text.  Each
token's decoded characters come from a table (`Verifier`), the response's text is assembled by a
scatter (`response_chars`), and every capital is searched for as a whole word
(`capitals_named_mask`, the regex `\\b...\\b` of capitals_named).  It reads the same text
`tokenizer.decode_responses` produces, so it agrees with gold_correct on every response, however
the model split a word into tokens (tests/test_grpo_train.py).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import Tokenizer

from minirlhf.tokenizer import BOS_ID, EOS_ID, PAD_ID
from minirlhf.worlds.capitals import CAPITAL

CAPITALS = tuple(CAPITAL.values())   # the verifier's capital k is CAPITALS[k]


class Verifier(NamedTuple):
    """Tables for reading a response's text inside the jit (`make_verifier`)."""
    token_chars: jax.Array       # [V, C] int32 character codes of each token's decoded text
    token_lengths: jax.Array     # [V] int32 its length (0 for <pad>, <bos>, <eos>, unknown ids)
    capital_chars: jax.Array     # [K, M] int32 the K capitals (CAPITALS), 0-padded
    capital_lengths: jax.Array   # [K] int32


def make_verifier(tok: Tokenizer, vocab_size: int) -> Verifier:
    """The character table of every token id < vocab_size: what `tok.decode` writes for it
    (Metaspace "▁" -> " "; special tokens skipped), and the capitals' characters."""
    texts = []
    for i in range(vocab_size):
        piece = tok.id_to_token(i)
        special = i in (PAD_ID, BOS_ID, EOS_ID) or piece is None
        texts.append("" if special else piece.replace("\u2581", " "))
    width = max(len(t) for t in texts)
    chars = np.zeros((vocab_size, width), np.int32)
    for i, t in enumerate(texts):
        chars[i, :len(t)] = [ord(c) for c in t]
    return Verifier(jnp.asarray(chars), jnp.asarray([len(t) for t in texts], dtype=jnp.int32),
                    *capital_tables())


def capital_tables() -> tuple[jax.Array, jax.Array]:
    """(capital_chars [K, M], capital_lengths [K]) of CAPITALS, the Verifier's last two fields."""
    caps = np.zeros((len(CAPITALS), max(map(len, CAPITALS))), np.int32)
    for k, c in enumerate(CAPITALS):
        caps[k, :len(c)] = [ord(ch) for ch in c]
    return jnp.asarray(caps), jnp.asarray([len(c) for c in CAPITALS], dtype=jnp.int32)


def response_chars(verifier: Verifier, tokens, response_mask):
    """The decoded response text of every row as character codes, 0 after its end:
    `decode_responses`' text (the response tokens before the first <eos>).
    tokens, response_mask [B, T] -> [B, T * C] int32."""
    B, T = tokens.shape
    C = verifier.token_chars.shape[1]
    in_resp = response_mask > 0
    before_eos = jnp.cumsum(in_resp & (tokens == EOS_ID), axis=1) == 0              # [B, T]
    ids = jnp.where(in_resp & before_eos, tokens, PAD_ID)                            # [B, T]
    lengths = verifier.token_lengths[ids]                                            # [B, T]
    start = jnp.cumsum(lengths, axis=1) - lengths                                    # [B, T]
    j = jnp.arange(C)
    pos = jnp.where(j < lengths[..., None], start[..., None] + j, T * C)            # [B, T, C]
    rows = jnp.broadcast_to(jnp.arange(B)[:, None, None], pos.shape)
    return jnp.zeros((B, T * C), jnp.int32).at[rows, pos].set(
        verifier.token_chars[ids], mode="drop")                                      # [B, T*C]


def _is_word_char(c):
    """Python's \\w on ASCII: letters, digits, underscore."""
    return (((c >= 48) & (c <= 57)) | ((c >= 65) & (c <= 90)) | ((c >= 97) & (c <= 122))
            | (c == 95))


def capitals_named_mask(verifier: Verifier, chars):
    """named[b, k]: text b names CAPITALS[k] as a whole word (capitals_named's regex
    \\b(cap)\\b): the characters match at some position i, and neither text[i-1] nor
    text[i + len] is a word character.  chars [B, L] -> [B, K] bool."""
    B, L = chars.shape
    K, M = verifier.capital_chars.shape
    padded = jnp.pad(chars, ((0, 0), (1, M + 1)))              # [B, L+M+2]: text at 1..L
    window = lambda j: padded[:, 1 + j:1 + j + L]              # [B, L] text[i + j]
    match = ~_is_word_char(padded[:, :L])[:, :, None]          # [B, L, 1] left boundary
    right_ok = jnp.zeros((B, L, K), bool)
    for j in range(M + 1):
        if j < M:
            need = j < verifier.capital_lengths                                  # [K]
            hit = window(j)[:, :, None] == verifier.capital_chars[:, j]         # [B, L, K]
            match = match & (hit | ~need)
        right_ok = right_ok | ((verifier.capital_lengths == j)
                               & ~_is_word_char(window(j))[:, :, None])         # [B, L, K]
    return jnp.any(match & right_ok, axis=1)                                     # [B, K]


def verifiable_reward(verifier: Verifier, tokens, response_mask, answer):
    """1 if the response names capital `answer` and no other capital, else 0
    (worlds.capitals.is_correct on the decoded text).  tokens, response_mask [B, T],
    answer [B] -> [B] float32."""
    named = capitals_named_mask(verifier, response_chars(verifier, tokens, response_mask))
    right = jnp.take_along_axis(named, answer[:, None], axis=1)[:, 0]                # [B]
    return (right & (jnp.sum(named, axis=1) == 1)).astype(jnp.float32)
