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
    path = _write_lines(tmp_path, [json.dumps(REC), "", json.dumps(REC)])
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
    with pytest.raises(ValueError, match=r"latin1\.jsonl line 1: not UTF-8 text"):
        read_preferences(path)


# ----------------------------------------------------------------------------- what other tools write


def test_json_the_parser_cannot_take_names_file_and_line(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000                       # RecursionError inside json
    huge = '{"prompt": "x", "chosen": "a", "rejected": "b", "n": ' + "9" * 5000 + "}"   # > 4300 digits
    for bad in (deep, huge):
        path = _write_lines(tmp_path, [json.dumps(REC), bad])
        with pytest.raises(ValueError, match=r"prefs\.jsonl line 2: invalid JSON") as info:
            read_preferences(path)
        assert len(str(info.value)) < 300                      # an excerpt, not the line


def test_bom_trailing_blank_lines_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(REC).encode() + b"\r\n"
                     + json.dumps({**REC, "chosen": " Paris."}).encode() + b"\r\n\r\n  \n\n")
    assert read_preferences(path) == [REC, {**REC, "chosen": " Paris."}]


def test_non_utf8_byte_names_its_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_bytes((json.dumps(REC) + "\n").encode() * 2
                     + json.dumps({**REC, "prompt": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match=r"prefs\.jsonl line 3: not UTF-8 text \(byte 15 of the line"):
        read_preferences(path)


def test_identical_responses_are_an_error_naming_the_line(tmp_path):
    path = _write_lines(tmp_path, [json.dumps(REC), json.dumps({**REC, "rejected": REC["chosen"]})])
    with pytest.raises(ValueError, match=r"line 2: field 'rejected': the same response as 'chosen'"):
        read_preferences(path)
    # the same text, one cut by the length limit and one finished: two different responses
    rec = {**REC, "rejected": REC["chosen"], "rejected_ended": False}
    assert read_preferences(_write_lines(tmp_path, [json.dumps(rec)])) == [rec]


def test_empty_responses_are_accepted_and_counted(tmp_path):
    from minirlhf.data import describe_preferences

    recs = [REC, {**REC, "chosen": ""}, {**REC, "rejected": ""}, {**REC, "rejected": ""}]
    path = write_preferences(tmp_path / "prefs.jsonl", recs)
    assert describe_preferences(read_preferences(path)) == (
        "4 comparisons; 1 with an empty chosen response, 2 with an empty rejected response")


def test_long_bad_values_are_shown_as_an_excerpt(tmp_path):
    path = _write_lines(tmp_path, [json.dumps({**REC, "chosen": ["x" * 100_000]})])
    with pytest.raises(ValueError, match=r"line 1: field 'chosen'") as info:
        read_preferences(path)
    assert len(str(info.value)) < 400


# ----------------------------------------------------------------------------- the conversational format

CONV = {"prompt": [{"role": "user", "content": REC["prompt"]}],
        "chosen": [{"role": "assistant", "content": REC["chosen"]}],
        "rejected": [{"role": "assistant", "content": REC["rejected"]}], "p_chosen": 0.98}


def test_conversational_single_turn_is_read_as_the_plain_record(tmp_path):
    path = _write_lines(tmp_path, [json.dumps(CONV), json.dumps(REC)])
    assert read_preferences(path) == [REC, REC]


def test_conversational_write_round_trips(tmp_path):
    path = write_preferences(tmp_path / "conv.jsonl", [REC], format="conversational")
    assert json.loads(path.read_text()) == CONV                 # the format on disk
    assert read_preferences(path) == [REC]
    with pytest.raises(ValueError, match=r"format expected one of"):
        write_preferences(tmp_path / "x.jsonl", [REC], format="chatml")


@pytest.mark.parametrize("field, messages", [
    ("prompt", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]),
    ("prompt", [{"role": "assistant", "content": "Hi?"}]),
    ("chosen", [{"role": "assistant", "content": 3}]),
    ("rejected", []),
])
def test_conversational_other_than_single_turn_is_an_error_naming_line_and_field(tmp_path, field, messages):
    path = _write_lines(tmp_path, [json.dumps(CONV), json.dumps({**CONV, field: messages})])
    with pytest.raises(ValueError, match=rf"line 2: field '{field}': expected a string, or one "):
        read_preferences(path)


# ----------------------------------------------------------------------------- read once, streaming


def test_a_file_is_parsed_once_per_version(tmp_path, monkeypatch):
    from minirlhf import data

    path = write_preferences(tmp_path / "prefs.jsonl", [REC] * 3)
    calls = []
    real_loads = json.loads
    monkeypatch.setattr(data.json, "loads", lambda s: calls.append(1) or real_loads(s))
    assert read_preferences(path) == read_preferences(path) == [REC] * 3
    assert len(calls) == 3                                     # three lines, parsed once
    write_preferences(path, [REC] * 2)                          # a new version of the file
    assert read_preferences(path) == [REC] * 2 and len(calls) == 5


def test_reading_streams_line_by_line(tmp_path):
    """The first record is validated and handed over before a broken later line is read."""
    from minirlhf.data import iter_preferences

    path = _write_lines(tmp_path, [json.dumps(REC), "{broken"])
    records = iter_preferences(path)
    assert next(records) == (1, REC)
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        next(records)
