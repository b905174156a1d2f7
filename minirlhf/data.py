"""Preference data as JSON Lines: one comparison per line.

    {"prompt": "What's the capital of France?",
     "chosen": " The capital of France is Paris.",
     "rejected": " The capital of France is Berlin.", ...extra fields...}

"prompt", "chosen" and "rejected" are required strings.  The optional fields the package
reads are checked when present: "chosen_ended"/"rejected_ended" (bool: did the response end
with <eos>?), "p_chosen" (the rater's probability, a number in [0, 1]) and
"chosen_gold_reward"/"rejected_gold_reward" (finite numbers) and "group" (an integer or a
string: comparisons with the same group compare responses to one prompt and are trained on
together, InstructGPT's K-wise comparisons).  Any other field is carried along untouched.

The conversational format of TRL (the most used alignment library) is read too, in its
single-turn form: "prompt" a list holding one {"role": "user", "content": ...} message and
"chosen"/"rejected" lists holding one {"role": "assistant", "content": ...} message each.  It
becomes the plain record above (the contents verbatim, leading spaces included), and
`write_preferences(..., format="conversational")` writes it back.

Rules a file must follow, each an error naming the file, the line and the field:
* UTF-8 text (a byte-order mark at the start is accepted), one JSON object per line; blank
  lines only at the end of the file;
* a comparison compares two different responses: chosen == rejected (same text, same eos flag)
  is an error, since its label teaches nothing (its loss gradient is zero in expectation).
An empty response ("") is a legitimate answer (a policy can stop at once): it is accepted and
counted by `describe_preferences`.

Reading streams the file line by line and keeps each file's parsed records, keyed by (path,
modification time, size): the stages that need one file several times parse it once.  Writing
is atomic (`paths.atomic_write`), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from minirlhf.paths import atomic_write

REQUIRED_FIELDS = ("prompt", "chosen", "rejected")
BOOL_FIELDS = ("chosen_ended", "rejected_ended")
NUMBER_FIELDS = ("p_chosen", "chosen_gold_reward", "rejected_gold_reward")
FORMATS = ("plain", "conversational")
ROLES = {"prompt": "user", "chosen": "assistant", "rejected": "assistant"}
_BOM = b"\xef\xbb\xbf"


def _excerpt(value, limit: int = 80) -> str:
    """repr of `value`, cut to about `limit` characters (an error must not print a whole file)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _from_messages(record: Mapping, where: str) -> dict:
    """A single-turn conversational record -> the plain record (other fields untouched)."""
    out = dict(record)
    for field, role in ROLES.items():
        messages = record[field]
        if not isinstance(messages, list):
            continue
        if (len(messages) != 1 or not isinstance(messages[0], Mapping)
                or messages[0].get("role") != role or not isinstance(messages[0].get("content"), str)):
            raise ValueError(f"{where}: field {field!r}: expected a string, or one "
                             f'{{"role": "{role}", "content": <str>}} message (single-turn '
                             f"conversational format), got {_excerpt(messages)}")
        out[field] = messages[0]["content"]
    return out


def _to_messages(record: Mapping) -> dict:
    """The plain record -> the single-turn conversational one."""
    return {**record, **{f: [{"role": role, "content": record[f]}] for f, role in ROLES.items()}}


def validate_record(record, where: str) -> dict:
    """The record as a plain dict if it is a JSON object with string (or single-turn
    conversational) prompt/chosen/rejected and valid optional fields; else a ValueError naming
    `where` (e.g. "prefs.jsonl line 3"), the field, expected vs got."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in REQUIRED_FIELDS:
        if field not in record:
            raise ValueError(f"{where}: missing field {field!r} (expected fields "
                             f"{list(REQUIRED_FIELDS)}, got {sorted(record)})")
    record = _from_messages(record, where)
    for field in REQUIRED_FIELDS:
        if not isinstance(record[field], str):
            raise ValueError(f"{where}: field {field!r}: expected str, got "
                             f"{type(record[field]).__name__} ({_excerpt(record[field])})")
    for field in BOOL_FIELDS:
        if field in record and not isinstance(record[field], bool):
            raise ValueError(f"{where}: field {field!r}: expected true or false, got "
                             f"{_excerpt(record[field])}")
    for field in NUMBER_FIELDS:
        value = record.get(field)
        if field in record and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not math.isfinite(value)):
            raise ValueError(f"{where}: field {field!r}: expected a finite number, got "
                             f"{_excerpt(value)}")
    if "group" in record and (isinstance(record["group"], bool)
                              or not isinstance(record["group"], (int, str))):
        raise ValueError(f"{where}: field 'group': expected an integer or a string, got "
                         f"{_excerpt(record['group'])}")
    if "p_chosen" in record and not 0.0 <= record["p_chosen"] <= 1.0:
        raise ValueError(f"{where}: field 'p_chosen': expected a probability in [0, 1], got "
                         f"{record['p_chosen']!r}")
    if (record["chosen"], record.get("chosen_ended", True)) == (record["rejected"],
                                                                 record.get("rejected_ended", True)):
        raise ValueError(f"{where}: field 'rejected': the same response as 'chosen' "
                         f"({_excerpt(record['chosen'])}): a comparison needs two different "
                         "responses (its label teaches nothing)")
    return dict(record)


def write_preferences(path, records: Iterable[Mapping], format: str = "plain") -> Path:
    """Write records as JSONL atomically, one JSON object per line, in the plain format or the
    single-turn conversational one (module docstring).  Every record is validated first;
    nothing is written if one is bad."""
    if format not in FORMATS:
        raise ValueError(f"write_preferences: format expected one of {FORMATS}, got {format!r}")
    path = Path(path)
    convert = _to_messages if format == "conversational" else dict
    lines = [json.dumps(convert(validate_record(r, f"{path} record {i}")), ensure_ascii=False)
             for i, r in enumerate(records)]
    return atomic_write(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def iter_preferences(path):
    """Yield (line number, validated plain record) of a preference JSONL file, streaming it
    line by line (module docstring for the rules; line numbers start at 1)."""
    path = Path(path)
    blank = None                      # the first blank line of a run of blank lines
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):   # splits on b"\n" only: JSON strings may
            where = f"{path} line {lineno}"           # hold U+2028 and other line breaks
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 text (byte {e.start} of the line: {e.reason}, "
                                 f"{raw[e.start:e.start + 4]!r}); expected JSON Lines") from None
            if not line.strip():
                blank = blank or lineno
                continue
            if blank is not None:
                raise ValueError(f"{path} line {blank}: empty line (expected a JSON object; blank "
                                 "lines are accepted only at the end of the file)")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                raise ValueError(f"{where}: invalid JSON (nested too deeply for the parser)") from None
            except ValueError as e:   # e.g. an integer of more than 4300 digits
                raise ValueError(f"{where}: invalid JSON ({_excerpt(str(e), 120)})") from None
            yield lineno, validate_record(record, where)


_CACHE: dict = {}   # resolved path -> ((inode, mtime_ns, size), records)


def read_preferences(path) -> list[dict]:
    """All records of a preference JSONL file (see `iter_preferences`); a file with no records
    is an error too.  Parsed once per version of the file (keyed by path, inode, mtime, size); the
    list returned is new, its dicts are shared: do not modify them."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"preference file {path} does not exist") from None
    key, version = path.resolve(), (st.st_ino, st.st_mtime_ns, st.st_size)
    if key in _CACHE and _CACHE[key][0] == version:
        return list(_CACHE[key][1])
    records = [record for _, record in iter_preferences(path)]
    if not records:
        raise ValueError(f"{path}: no records (an empty file; expected one JSON object per line)")
    _CACHE[key] = (version, records)
    return list(records)


def describe_preferences(records) -> str:
    """One line for a load summary: the number of comparisons and of empty responses in them."""
    n_empty = {w: sum(r[w] == "" for r in records) for w in ("chosen", "rejected")}
    return (f"{len(records)} comparisons; {n_empty['chosen']} with an empty chosen response, "
            f"{n_empty['rejected']} with an empty rejected response")
