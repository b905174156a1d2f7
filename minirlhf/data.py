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
Writing is atomic (a temp file renamed over the target), so a crash never leaves a
half-written file; reading validates every line and names the file, the line, the
field, and what was expected.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

REQUIRED_FIELDS = ("prompt", "chosen", "rejected")
BOOL_FIELDS = ("chosen_ended", "rejected_ended")
NUMBER_FIELDS = ("p_chosen", "chosen_gold_reward", "rejected_gold_reward")


def validate_record(record, where: str) -> dict:
    """The record as a dict if it is a JSON object with string prompt/chosen/rejected;
    ValueError naming `where` (e.g. "prefs.jsonl line 3"), the field, expected vs got."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in REQUIRED_FIELDS:
        if field not in record:
            raise ValueError(f"{where}: missing field {field!r} (expected fields "
                             f"{list(REQUIRED_FIELDS)}, got {sorted(record)})")
        if not isinstance(record[field], str):
            raise ValueError(f"{where}: field {field!r}: expected str, got "
                             f"{type(record[field]).__name__} ({record[field]!r})")
    for field in BOOL_FIELDS:
        if field in record and not isinstance(record[field], bool):
            raise ValueError(f"{where}: field {field!r}: expected true or false, got "
                             f"{record[field]!r}")
    for field in NUMBER_FIELDS:
        value = record.get(field)
        if field in record and (isinstance(value, bool) or not isinstance(value, (int, float))
                                or not math.isfinite(value)):
            raise ValueError(f"{where}: field {field!r}: expected a finite number, got {value!r}")
    if "group" in record and (isinstance(record["group"], bool) or not isinstance(record["group"], (int, str))):
        raise ValueError(f"{where}: field 'group': expected an integer or a string, got {record['group']!r}")
    if "p_chosen" in record and not 0.0 <= record["p_chosen"] <= 1.0:
        raise ValueError(f"{where}: field 'p_chosen': expected a probability in [0, 1], got "
                         f"{record['p_chosen']!r}")
    return dict(record)


def write_preferences(path, records: Iterable[Mapping]) -> Path:
    """Write records as JSONL atomically (temp file in the same directory + os.replace).
    Every record is validated first; nothing is written if one is bad."""
    path = Path(path)
    lines = [json.dumps(validate_record(r, f"{path} record {i}"), ensure_ascii=False)
             for i, r in enumerate(records)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_preferences(path) -> list[dict]:
    """Read and validate a preference JSONL file (line numbers in errors start at 1); a file
    with no records is an error too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); expected JSON Lines") from None
    lines = text.split("\n")          # not splitlines(): JSON strings may hold U+2028 etc.
    if lines[-1] == "":
        lines.pop()                      # the newline that ends the last line
    records = []
    for lineno, line in enumerate(lines, start=1):
        where = f"{path} line {lineno}"
        if not line.strip():
            raise ValueError(f"{where}: empty line (expected a JSON object)")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        records.append(validate_record(record, where))
    if not records:
        raise ValueError(f"{path}: no records (an empty file; expected one JSON object per line)")
    return records
