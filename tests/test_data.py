"""Preference JSONL: round trip, atomic writes, and one test per validation error."""

import json

import pytest

from minirlhf.data import read_preferences, validate_record, write_preferences

REC = {"prompt": "What's the capital of France?", "chosen": " The capital of France is Paris.",
       "rejected": " The capital of France is Berlin.", "p_chosen": 0.98}


def test_round_trip_keeps_extra_fields(tmp_path):
    recs = [REC, {**REC, "chosen": " Paris.", "note": "ok"}]
    path = write_preferences(tmp_path / "sub" / "prefs.jsonl", recs)
    assert read_preferences(path) == recs
    assert [p.name for p in path.parent.iterdir()] == ["prefs.jsonl"]  # no temp file left


def test_a_bad_record_writes_nothing(tmp_path):
    path = tmp_path / "prefs.jsonl"
    write_preferences(path, [REC])
    with pytest.raises(ValueError, match=r"record 1: field 'chosen': expected str, got int"):
        write_preferences(path, [REC, {**REC, "chosen": 3}])
    assert read_preferences(path) == [REC]                    # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["prefs.jsonl"]


def _write_lines(tmp_path, lines):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_bad_json_names_file_and_line(tmp_path):
    path = _write_lines(tmp_path, [json.dumps(REC), '{"prompt": "x",'])
    with pytest.raises(ValueError, match=r"prefs\.jsonl line 2: invalid JSON"):
        read_preferences(path)


def test_missing_field_names_the_field(tmp_path):
    rec = {k: v for k, v in REC.items() if k != "rejected"}
    path = _write_lines(tmp_path, [json.dumps(REC), json.dumps(REC), json.dumps(rec)])
    with pytest.raises(ValueError, match=r"line 3: missing field 'rejected'"):
        read_preferences(path)


def test_wrong_type_names_field_expected_and_got(tmp_path):
    path = _write_lines(tmp_path, [json.dumps({**REC, "prompt": None})])
    with pytest.raises(ValueError, match=r"line 1: field 'prompt': expected str, got NoneType"):
        read_preferences(path)


def test_non_object_line_and_empty_line(tmp_path):
    path = _write_lines(tmp_path, [json.dumps(["a", "b", "c"])])
    with pytest.raises(ValueError, match=r"line 1: expected a JSON object, got list"):
        read_preferences(path)
    path = _write_lines(tmp_path, [json.dumps(REC), ""])
    with pytest.raises(ValueError, match=r"line 2: empty line"):
        read_preferences(path)


@pytest.mark.parametrize("field, value, expected", [
    ("chosen_ended", "false", "expected true or false, got 'false'"),   # bool("false") is True
    ("rejected_ended", 1, "expected true or false, got 1"),
    ("p_chosen", 1.7, r"expected a probability in \[0, 1\], got 1.7"),
    ("p_chosen", None, "expected a finite number, got None"),
    ("chosen_gold_reward", "high", "expected a finite number, got 'high'"),
    ("rejected_gold_reward", True, "expected a finite number, got True"),
    ("group", 1.5, "expected an integer or a string, got 1.5"),
    ("group", False, "expected an integer or a string, got False"),
])
def test_optional_fields_the_package_reads_are_checked(tmp_path, field, value, expected):
    path = _write_lines(tmp_path, [json.dumps(REC), json.dumps({**REC, field: value})])
    with pytest.raises(ValueError, match=rf"line 2: field '{field}': {expected}"):
        read_preferences(path)


def test_valid_optional_fields_and_unknown_fields_pass():
    rec = {**REC, "chosen_ended": False, "p_chosen": 0.25, "chosen_gold_reward": -1, "group": 3, "note": [1]}
    assert validate_record(rec, "x") == rec


def test_empty_and_non_utf8_files_name_the_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no records"):
        read_preferences(path)
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({**REC, "prompt": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl: not UTF-8 text"):
        read_preferences(path)
