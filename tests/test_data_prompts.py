"""Prompt-only datasets for GRPO: JSONL {"prompt", "answer", ...} -> prompt_ids/prompt_mask + string columns."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from mindrlhf.data.convert import convert_jsonl
from mindrlhf.data.reader import read_dataset
from mindrlhf.data.schemas import DataError
from mindrlhf.data.tokenizer import LlamaTokenizer, train_sentencepiece

P = 24  # max_prompt_length
LINES = [
    {"prompt": "12+7=", "answer": "19", "level": "easy"},
    {"prompt": "3+4=", "answer": "7", "level": "easy"},
    {"prompt": "what is 100+250 ?", "answer": "350", "level": "hard ünïcode 世界"},
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    sentences = ["what is 12+7 = 19", "3+4=7", "easy hard problems", "100+250 is 350"] * 20
    return LlamaTokenizer(train_sentencepiece(tmp_path_factory.mktemp("tok") / "t", 300, sentences=sentences))


def _jsonl(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n")
    return str(path)


def _convert(tmp_path, tok, lines, **kw):
    src = _jsonl(tmp_path / "in.jsonl", lines)
    out = str(tmp_path / "prompts.mindrecord")
    summary = convert_jsonl(src, out, tok, kind="prompt", max_prompt_length=P, seq_length=P + 4, **kw)
    return src, out, summary


def test_prompt_rows_and_every_string_column_by_default(tmp_path, tok):
    _, out, summary = _convert(tmp_path, tok, LINES)
    assert summary.rows == 3
    data = read_dataset(out, "prompt", batch_size=2, shuffle=False).read_all()
    assert sorted(data) == ["answer", "level", "prompt_ids", "prompt_mask"]
    assert data["answer"].dtype.kind == "U" and list(data["answer"]) == ["19", "7", "350"]
    assert list(data["level"]) == ["easy", "easy", "hard ünïcode 世界"]
    for i, line in enumerate(LINES):  # [BOS] + prompt, left-padded to P
        ids = [tok.bos_id, *tok.encode(line["prompt"])]
        np.testing.assert_array_equal(data["prompt_ids"][i, P - len(ids) :], ids)
        assert data["prompt_mask"][i].tolist() == [0] * (P - len(ids)) + [1] * len(ids)
        assert (data["prompt_ids"][i, : P - len(ids)] == tok.pad_id).all()
    meta = json.load(open(out + ".meta.json", encoding="utf-8"))
    assert meta["kind"] == "prompt" and meta["string_columns"] == ["answer", "level"]
    batch = next(iter(read_dataset(out, "prompt", batch_size=2, shuffle=True, seed=3)))
    assert batch["answer"].shape == (2,) and batch["prompt_ids"].shape == (2, P)
    for row, answer in zip(batch["prompt_ids"], batch["answer"]):  # columns stay aligned under shuffling
        i = [d["answer"] for d in LINES].index(answer)
        assert tok.decode([t for t in row if t != tok.pad_id and t != tok.bos_id]) == LINES[i]["prompt"]


def test_columns_flag_keeps_only_the_named_ones(tmp_path, tok):
    _, out, _ = _convert(tmp_path, tok, LINES, columns=["answer"])
    data = read_dataset(out, "prompt", batch_size=1, shuffle=False).read_all()
    assert sorted(data) == ["answer", "prompt_ids", "prompt_mask"]


@pytest.mark.parametrize(
    "bad, reason, field",
    [
        ({"answer": "1"}, "missing_field", "prompt"),
        ({"prompt": "1+1=", "answer": 2}, "non_string", "answer"),
        ({"prompt": "1+1=", "answer": "  "}, "empty_column", "answer"),
        ({"prompt": "1+1="}, "missing_field", "answer"),
    ],
)
def test_bad_lines_stop_at_file_line_or_are_skipped(tmp_path, tok, bad, reason, field):
    lines = [LINES[0], bad, LINES[1]]
    with pytest.raises(DataError) as err:
        _convert(tmp_path, tok, lines, columns=["answer"])
    assert f"in.jsonl:2: field '{field}'" in str(err.value) and "--on_error skip" in str(err.value)
    assert not os.path.exists(tmp_path / "prompts.mindrecord")
    _, out, summary = _convert(tmp_path, tok, lines, columns=["answer"], on_error="skip")
    assert summary.rows == 2 and summary.skipped == {reason: 1}
    assert list(read_dataset(out, "prompt", batch_size=1, shuffle=False).read_all()["answer"]) == ["19", "7"]


def test_empty_prompt_and_too_long_prompt_are_skipped_and_counted(tmp_path, tok):
    lines = [LINES[0], {"prompt": " ", "answer": "1"}, {"prompt": "12+7= " * 20, "answer": "1"}]
    _, _, summary = _convert(tmp_path, tok, lines, columns=["answer"])
    assert summary.rows == 1 and summary.skipped == {"empty_prompt": 1, "prompt_too_long": 1}


def test_columns_are_refused_for_other_kinds_and_for_reserved_names(tmp_path, tok):
    src = _jsonl(tmp_path / "in.jsonl", LINES)
    with pytest.raises(DataError, match="use --mode prompt"):
        convert_jsonl(src, str(tmp_path / "x.mindrecord"), tok, kind="sft", columns=["answer"])
    with pytest.raises(DataError, match="'prompt_ids' cannot be an extra column"):
        convert_jsonl(src, str(tmp_path / "x.mindrecord"), tok, kind="prompt", columns=["prompt_ids"])


def test_reader_checks_string_columns_against_the_metadata(tmp_path, tok):
    _, out, _ = _convert(tmp_path, tok, LINES, columns=["answer"])
    meta_path = out + ".meta.json"
    meta = json.load(open(meta_path, encoding="utf-8"))
    meta["string_columns"] = ["answer", "level"]
    json.dump(meta, open(meta_path, "w", encoding="utf-8"))
    with pytest.raises(DataError, match=r"has string columns \['answer'\] but the metadata lists"):
        read_dataset(out, "prompt", batch_size=1)


def test_cli_mode_prompt(tmp_path, tok):
    src = _jsonl(tmp_path / "in.jsonl", LINES)
    out = str(tmp_path / "cli.mindrecord")
    script = os.path.join(ROOT, "examples", "rlhf_train_tutorial", "rlhf_data.py")
    args = ["--tokenizer_name_or_path", tok.model_file, "--file_path", src, "--output_path", out]
    args += [
        "--max_prompt_length",
        str(P),
        "--seq_length",
        str(P + 4),
        "--mode",
        "prompt",
        "--columns",
        "answer",
    ]
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "Total number of samples: 3" in proc.stdout
    data = read_dataset(out, "prompt", batch_size=3, shuffle=False).read_all()
    assert list(data["answer"]) == ["19", "7", "350"] and "level" not in data
