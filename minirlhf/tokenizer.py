"""A small BPE tokenizer (HF `tokenizers`) and batch encoding with the package's masks.

Tokenizer: byte-pair encoding (Sennrich et al. 2016) trained on the capitals world's
text.  Pre-tokenization replaces every space by "▁" and splits before it (Metaspace,
as in SentencePiece; Kudo & Richardson 2018) and isolates punctuation, so "Paris" is
the same word in "Paris." and "Paris,".  The decoder turns "▁" back into a space and,
with prepend_scheme="never", neither adds nor strips one: decode(encode(s)) == s for
every string over the alphabet (printable ASCII), spaces and punctuation included.

Special tokens have fixed ids shared by the whole package:

    <pad> = 0    <bos> = 1    <eos> = 2        (pad != eos: a padded position is never
                                                confused with a real end of sequence)

Layouts (the README's "Conventions used everywhere"):

    training batch   <bos> prompt response <eos> <pad>...     RIGHT-padded   encode_batch
    prompt batch     <pad>... <bos> prompt                     LEFT-padded    encode_prompts

The prompt and the response are encoded separately and concatenated, so the
response mask is exact (no BPE merge crosses the boundary); the capitals world's
responses start with a space, where the pre-tokenizer splits anyway, so this equals
encoding the joined text.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from minirlhf.paths import atomic_write

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")  # ids 0, 1, 2 in this order
DEFAULT_VOCAB_SIZE = 512
TOKENIZER_FILENAME = "tokenizer.json"
ALPHABET = frozenset(string.printable) - frozenset("\r\x0b\x0c")  # printable ASCII + \t \n
_SPACE = "▁"  # U+2581, the Metaspace replacement of " "


class EncodedBatch(NamedTuple):
    tokens: np.ndarray          # [B, T] int32  <bos> prompt response <eos>, right-padded with <pad>
    attention_mask: np.ndarray  # [B, T] int32  1 on real tokens (bos, prompt, response, eos)
    response_mask: np.ndarray   # [B, T] int32  1 on response tokens incl. the final eos


class EncodedPrompts(NamedTuple):
    tokens: np.ndarray          # [B, T] int32  <bos> prompt, LEFT-padded with <pad>
    attention_mask: np.ndarray  # [B, T] int32  1 on bos and prompt tokens


class DecodedResponses(NamedTuple):
    texts: list[str]            # [B] the response text up to (excluding) the first eos
    ended: np.ndarray           # [B] bool, whether the response contains an eos


# ----------------------------------------------------------------------------- training

def _empty_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="never"),
        pre_tokenizers.Punctuation("isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="never")
    return tok


def train_tokenizer(texts: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Train BPE on `texts`: start from the special tokens and the alphabet (so any printable
    ASCII string is encodable), then add the most frequent adjacent pair as a new token
    until `vocab_size` tokens exist (fewer if the texts run out of pairs).  Deterministic."""
    if vocab_size < len(SPECIAL_TOKENS) + len(ALPHABET):
        raise ValueError(f"train_tokenizer: vocab_size={vocab_size} is smaller than the "
                         f"{len(SPECIAL_TOKENS)} special tokens + {len(ALPHABET)} alphabet symbols")
    for i, text in enumerate(texts):
        _check_text(text, f"text {i}")
    tok = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=sorted(_SPACE if c == " " else c for c in ALPHABET))
    tok.train_from_iterator(list(texts), trainer)
    _check_special_ids(tok, "train_tokenizer")
    return tok


def load_or_train_tokenizer(path, texts: Sequence[str],
                            vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Load `path` (a tokenizer.json) if it exists, else train on `texts` and save it there
    atomically (temp file + os.replace).  Training is deterministic, so a deleted file is
    rebuilt byte for byte.  A stale file (other texts) is NOT detected: delete it to retrain."""
    path = Path(path)
    if path.exists():
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 (the tokenizers library raises a bare Exception)
            raise ValueError(f"tokenizer {path}: not a readable tokenizer.json ({e}); delete it "
                             "to retrain") from None
        _check_special_ids(tok, str(path))
        return tok
    tok = train_tokenizer(texts, vocab_size)
    atomic_write(path, tok.to_str(pretty=True).encode("utf-8"))
    return tok


def _check_special_ids(tok: Tokenizer, where: str) -> None:
    for want, name in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(name)
        if got != want:
            raise ValueError(f"{where}: special token {name} has id {got}, expected {want}")


def _check_text(text, what: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected str, got {type(text).__name__}")
    bad = sorted(set(text) - ALPHABET)
    if bad:
        at = min(text.index(c) for c in bad)
        excerpt = text[max(at - 30, 0):at + 30]
        raise ValueError(f"{what}: characters {bad[:10]!r} are outside the tokenizer's alphabet "
                         f"(printable ASCII); the first at character {at} of {len(text)}: "
                         f"...{excerpt!r}...")


# ----------------------------------------------------------------------------- encoding

def encode_text(tok: Tokenizer, text: str, what: str = "text") -> list[int]:
    """Token ids of `text` without special tokens (ValueError on characters outside ALPHABET)."""
    _check_text(text, what)
    return tok.encode(text, add_special_tokens=False).ids


def encode_batch(tok: Tokenizer, prompts: Sequence[str], responses: Sequence[str] | None = None, *,
                 max_len: int) -> EncodedBatch:
    """Training batch [B, max_len], right-padded: `<bos> prompt response <eos>` per row.

    With responses=None the rows are `<bos> prompt` (no eos) and response_mask is all 0.
    Every row is padded to max_len (fixed shapes: one jit compilation).
    """
    if responses is not None and len(responses) != len(prompts):
        raise ValueError(f"encode_batch: {len(prompts)} prompts but {len(responses)} responses")
    B = len(prompts)
    tokens = np.full((B, max_len), PAD_ID, np.int32)                  # [B, T]
    attention_mask = np.zeros((B, max_len), np.int32)                 # [B, T]
    response_mask = np.zeros((B, max_len), np.int32)                  # [B, T]
    for i, prompt in enumerate(prompts):
        prompt_ids = [BOS_ID] + encode_text(tok, prompt, f"encode_batch: prompt {i}")
        response_ids = []
        if responses is not None:
            response_ids = encode_text(tok, responses[i], f"encode_batch: response {i}") + [EOS_ID]
        n, P = len(prompt_ids) + len(response_ids), len(prompt_ids)
        if n > max_len:
            raise ValueError(f"encode_batch: item {i} has {n} tokens (bos + {P - 1} prompt + "
                             f"{len(response_ids)} response incl. eos) > max_len={max_len}: "
                             f"{prompt!r}")
        tokens[i, :n] = prompt_ids + response_ids
        attention_mask[i, :n] = 1
        response_mask[i, P:n] = 1
    return EncodedBatch(tokens, attention_mask, response_mask)


def encode_prompts(tok: Tokenizer, prompts: Sequence[str], *, max_len: int) -> EncodedPrompts:
    """Generation batch [B, max_len], LEFT-padded: `<pad>... <bos> prompt` per row, so every
    row's first generated token lands in the same column (see sampling.generate)."""
    B = len(prompts)
    tokens = np.full((B, max_len), PAD_ID, np.int32)                  # [B, T]
    attention_mask = np.zeros((B, max_len), np.int32)                 # [B, T]
    for i, prompt in enumerate(prompts):
        ids = [BOS_ID] + encode_text(tok, prompt, f"encode_prompts: prompt {i}")
        if len(ids) > max_len:
            raise ValueError(f"encode_prompts: item {i} has {len(ids)} tokens (bos + prompt) "
                             f"> max_len={max_len}: {prompt!r}")
        tokens[i, max_len - len(ids):] = ids
        attention_mask[i, max_len - len(ids):] = 1
    return EncodedPrompts(tokens, attention_mask)


def decode_responses(tok: Tokenizer, tokens, response_mask) -> DecodedResponses:
    """The response text of each row: the tokens under response_mask, cut at the first eos.

    tokens, response_mask: [B, T] (numpy or jax).  `ended[b]` says whether row b produced
    an eos inside its response (False: it was truncated by the length limit), which the
    gold reward needs.
    """
    tokens, response_mask = np.asarray(tokens), np.asarray(response_mask)
    if tokens.shape != response_mask.shape or tokens.ndim != 2:
        raise ValueError(f"decode_responses: tokens {tokens.shape} and response_mask "
                         f"{response_mask.shape} must be the same [B, T] shape")
    texts, ended = [], np.zeros(tokens.shape[0], bool)
    for b in range(tokens.shape[0]):
        ids = tokens[b][response_mask[b] == 1].tolist()
        if EOS_ID in ids:
            ids, ended[b] = ids[:ids.index(EOS_ID)], True
        texts.append(tok.decode(ids, skip_special_tokens=True))
    return DecodedResponses(texts, ended)


def id_to_token(tok: Tokenizer, ids) -> list[str]:
    """The vocabulary strings of `ids` (for printing; "▁" marks a space)."""
    return [tok.id_to_token(int(i)) for i in ids]


def unique_rows(tokens) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a token array [N, T] -> (first index of each distinct row [U], inverse [N])
    with tokens[first][inverse] == tokens.  Scoring only the distinct rows and indexing back
    gives the same numbers for a fraction of the work when many rows repeat (the responses of
    K-wise comparisons each take part in up to K - 1 of them)."""
    _, first, inverse = np.unique(np.asarray(tokens), axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)
