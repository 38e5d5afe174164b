"""rlhf_data.py / convert_jsonl: exact layouts, the bad-input policy, atomic writes, the CLI."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mindrlhf import demo as dc
from mindrlhf.data import (
    DataError,
    LlamaTokenizer,
    convert_jsonl,
    layout_rows,
    read_dataset,
    train_sentencepiece,
)
from mindrlhf.data import writer as writer_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "rlhf_train_tutorial", "rlhf_data.py")

GOOD = {"prompt": "help me wash a dog .", "pos_resp": "scrub the dog gently .", "neg_resp": "i do not know ."}
GOOD2 = {
    "prompt": "how do i track my car ?",
    "pos_resp": "i cannot help you track my car .",
    "neg_resp": "check where your car is now .",
    "pos_type": "refusal",
    "neg_type": "unsafe",
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    sentences = dc.tokenizer_corpus(dc.build_demo_corpus(seed=0, rm_pairs_per_prompt=1))
    path = train_sentencepiece(tmp_path_factory.mktemp("tok") / "tokenizer", 1200, sentences=sentences)
    return LlamaTokenizer(path)


def write_lines(path, lines):
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line, ensure_ascii=False).encode("utf-8"))
            f.write(b"\n")
    return str(path)


def mind_rows(path):
    """Every row of a MindRecord through mindspore.dataset.MindDataset, in file order."""
    import mindspore.dataset as ds

    data = ds.MindDataset(str(path), shuffle=False)
    return list(data.create_dict_iterator(output_numpy=True, num_epochs=1))


def leftovers(directory, keep=()):
    return sorted(n for n in os.listdir(directory) if n not in keep)


def test_layout_rows_matches_the_readme_example():
    kw = dict(bos_id=1, eos_id=2, pad_id=0, max_prompt_length=4, seq_length=8)
    cols, reasons = layout_rows("ppo", [[10, 11]], [[20, 21, 22]], None, **kw)
    assert reasons == [None]
    assert cols["prompt_ids"].tolist() == [[0, 1, 10, 11]]
    assert cols["prompt_mask"].tolist() == [[0, 1, 1, 1]]
    assert cols["pretrain_ids"].tolist() == [[1, 10, 11, 20, 21, 22, 2, 0]]
    assert cols["pretrain_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 1, 0]]
    assert cols["loss_mask"].tolist() == [[0, 0, 0, 1, 1, 1, 1, 0]]
    # exactly full is kept; one token more is skipped, never truncated
    cols, reasons = layout_rows(
        "sft", [[10, 11, 12], [10, 11, 12]], [[20, 21, 22], [20, 21, 22, 23]], None, **kw
    )
    assert reasons == [None, "sequence_too_long"]
    assert cols["input_ids"].tolist() == [[1, 10, 11, 12, 20, 21, 22, 2], [0] * 8]
    assert cols["loss_mask"].tolist()[0] == [0, 0, 0, 0, 1, 1, 1, 1]
    _, reasons = layout_rows("ppo", [[10, 11, 12], [10, 11, 12, 13]], [[20], [20]], None, **kw)
    assert reasons == [None, "prompt_too_long"]
    cols, reasons = layout_rows("rm", [[10], [10]], [[20], [20]], [[30, 31], [30] * 6], **kw)
    assert reasons == [None, "sequence_too_long"]  # the longer of the pair decides
    assert cols["rejected_ids"][0].tolist() == [1, 10, 30, 31, 2, 0, 0, 0]
    assert cols["rejected_mask"][0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]


def test_ppo_two_lines_exact_values(tmp_path, tok):
    src = write_lines(tmp_path / "in.jsonl", [GOOD, GOOD2])
    out = tmp_path / "ppo.mindrecord"
    summary = convert_jsonl(src, str(out), tok, "ppo", max_prompt_length=12, seq_length=24, pad_token_id=3)
    assert (summary.lines, summary.rows, summary.skipped) == (2, 2, {})
    assert leftovers(tmp_path) == [
        "in.jsonl",
        "ppo.mindrecord",
        "ppo.mindrecord.db",
        "ppo.mindrecord.meta.json",
    ]
    rows = mind_rows(out)
    assert len(rows) == 2
    for row, rec in zip(rows, (GOOD, GOOD2)):
        p, r = tok.encode(rec["prompt"]), tok.encode(rec["pos_resp"])
        assert len(p) == len(
            rec["prompt"].split()
        )  # one piece per word: the expectations below are not vacuous
        n = 2 + len(p) + len(r)
        assert row["prompt_ids"].dtype == np.int32
        assert (
            row["prompt_ids"].tolist() == [3] * (11 - len(p)) + [1] + p
        )  # left-padded with pad 3, BOS first
        assert row["prompt_mask"].tolist() == [0] * (11 - len(p)) + [1] * (1 + len(p))
        assert row["pretrain_ids"].tolist() == [1] + p + r + [2] + [3] * (24 - n)
        assert row["pretrain_mask"].tolist() == [1] * n + [0] * (24 - n)
        assert row["loss_mask"].tolist() == [0] * (1 + len(p)) + [1] * (len(r) + 1) + [0] * (24 - n)
        target = row["pretrain_ids"][row["loss_mask"] == 1]
        assert target[-1] == 2 and tok.decode(target) == rec["pos_resp"]
    meta = json.load(open(str(out) + ".meta.json"))
    assert meta["kind"] == "ppo" and meta["num_rows"] == 2 and meta["pad_token_id"] == 3
    assert meta["lengths"] == {"max_prompt_length": 12, "seq_length": 24}
    assert meta["tokenizer"]["sha256"] == tok.sha256


def test_rm_and_sft_two_lines_exact_values(tmp_path, tok):
    src = write_lines(tmp_path / "in.jsonl", [GOOD, GOOD2])
    convert_jsonl(src, str(tmp_path / "rm.mindrecord"), tok, "rm", max_prompt_length=12, seq_length=24)
    convert_jsonl(src, str(tmp_path / "sft.mindrecord"), tok, "sft", max_prompt_length=12, seq_length=24)
    rm_rows, sft_rows = mind_rows(tmp_path / "rm.mindrecord"), mind_rows(tmp_path / "sft.mindrecord")
    for rm, sft, rec in zip(rm_rows, sft_rows, (GOOD, GOOD2)):
        p = tok.encode(rec["prompt"])
        for ids, mask, key in (
            ("chosen_ids", "chosen_mask", "pos_resp"),
            ("rejected_ids", "rejected_mask", "neg_resp"),
        ):
            seq = [1] + p + tok.encode(rec[key]) + [2]
            assert rm[ids].tolist() == seq + [0] * (24 - len(seq))
            assert rm[mask].tolist() == [1] * len(seq) + [0] * (24 - len(seq))
        r = tok.encode(rec["pos_resp"])
        seq = [1] + p + r + [2]
        assert sorted(sft) == ["attention_mask", "input_ids", "loss_mask"]
        assert sft["input_ids"].tolist() == seq + [0] * (24 - len(seq))
        assert sft["attention_mask"].tolist() == [1] * len(seq) + [0] * (24 - len(seq))
        assert sft["loss_mask"].tolist() == [0] * (1 + len(p)) + [1] * (len(r) + 1) + [0] * (24 - len(seq))


STRUCTURAL = [
    (
        "malformed_json",
        b'{"prompt": "hi", "pos_resp": ',
        None,
        "malformed JSON at column 30: Expecting value",
    ),
    (
        "not_an_object",
        b'["help me wash a dog .", "x"]',
        None,
        "expected a JSON object with prompt, pos_resp, got list",
    ),
    ("missing_field", {"prompt": "hi"}, "pos_resp", "required field is missing"),
    ("non_string", {"prompt": 5, "pos_resp": "x"}, "prompt", "expected a string, got int 5"),
    ("non_string", {"prompt": "hi", "pos_resp": None}, "pos_resp", "expected a string, got NoneType null"),
    ("invalid_utf8", b'{"prompt": "caf\xe9", "pos_resp": "x"}', None, "invalid UTF-8 at byte 15"),
    ("invalid_utf8", b'{"prompt": "\\ud800", "pos_resp": "x"}', "prompt", "lone surrogate"),
]


@pytest.mark.parametrize("reason,line,field,message", STRUCTURAL)
def test_structural_errors_stop_with_file_line_and_field(tmp_path, tok, reason, line, field, message):
    src = write_lines(tmp_path / "in.jsonl", [GOOD, line, GOOD2])
    out = str(tmp_path / "out.mindrecord")
    with pytest.raises(DataError) as info:
        convert_jsonl(src, out, tok, "ppo", max_prompt_length=16, seq_length=32, chunk_size=1)
    text = str(info.value)
    assert text.startswith(f"{src}:2: ")
    assert message in text and "--on_error skip" in text
    if field:
        assert f"field '{field}'" in text
    assert leftovers(tmp_path) == ["in.jsonl"]  # no output, no .db, no temporary directory

    summary = convert_jsonl(src, out, tok, "ppo", max_prompt_length=16, seq_length=32, on_error="skip")
    assert (summary.lines, summary.rows, summary.skipped) == (3, 2, {reason: 1})
    assert summary.examples[reason] == [f"{src}:2"]
    assert len(mind_rows(out)) == 2


CONTENT = [
    ("empty_prompt", {"prompt": "  \t", "pos_resp": "x", "neg_resp": "y"}),
    ("empty_response", {"prompt": "hi", "pos_resp": "\n", "neg_resp": "y"}),
    ("empty_response", {"prompt": "hi", "pos_resp": "x", "neg_resp": ""}),  # rm only
    ("identical_pair", {"prompt": "hi", "pos_resp": "same .", "neg_resp": "same ."}),  # rm only
    ("prompt_too_long", {"prompt": "please , " * 4 + "help me", "pos_resp": "x", "neg_resp": "y"}),
    ("sequence_too_long", {"prompt": "hi", "pos_resp": "sure ! " * 8, "neg_resp": "y"}),
    ("blank_line", b"  \r"),
]


@pytest.mark.parametrize("mode", ["ppo", "rm"])
@pytest.mark.parametrize("reason,line", CONTENT)
def test_content_problems_are_skipped_and_counted(tmp_path, tok, reason, line, mode):
    src = write_lines(tmp_path / "in.jsonl", [GOOD2, line, GOOD2])
    out = str(tmp_path / "out.mindrecord")
    summary = convert_jsonl(src, out, tok, mode, max_prompt_length=10, seq_length=20)  # on_error="stop"
    rm_only = isinstance(line, dict) and (line["neg_resp"] == "" or line["pos_resp"] == line["neg_resp"])
    if mode == "ppo" and rm_only:
        assert (summary.rows, summary.skipped) == (3, {})
        return
    assert (summary.lines, summary.rows, summary.skipped) == (3, 2, {reason: 1})
    assert summary.examples[reason] == [f"{src}:2"]
    assert reason in summary.format()
    assert len(mind_rows(out)) == 2


def test_limits_are_inclusive(tmp_path, tok):
    rec = {"prompt": "help me wash a dog .", "pos_resp": "scrub the dog gently ."}
    p, r = len(tok.encode(rec["prompt"])), len(tok.encode(rec["pos_resp"]))
    src = write_lines(tmp_path / "in.jsonl", [rec])
    s = convert_jsonl(src, str(tmp_path / "a"), tok, "ppo", max_prompt_length=p + 1, seq_length=p + r + 2)
    assert s.rows == 1
    with pytest.raises(DataError, match="no usable rows .skipped: prompt_too_long=1"):
        convert_jsonl(src, str(tmp_path / "b"), tok, "ppo", max_prompt_length=p, seq_length=64)
    with pytest.raises(DataError, match="no usable rows .skipped: sequence_too_long=1"):
        convert_jsonl(src, str(tmp_path / "c"), tok, "ppo", max_prompt_length=32, seq_length=p + r + 1)
    assert leftovers(tmp_path) == ["a", "a.db", "a.meta.json", "in.jsonl"]


def test_empty_input_and_bad_arguments(tmp_path, tok):
    empty = write_lines(tmp_path / "empty.jsonl", [b"", b"   "])
    with pytest.raises(DataError, match="no usable rows .skipped: blank_line=2"):
        convert_jsonl(empty, str(tmp_path / "o"), tok)
    with pytest.raises(DataError, match="input file not found"):
        convert_jsonl(str(tmp_path / "nope.jsonl"), str(tmp_path / "o"), tok)
    with pytest.raises(DataError, match="is a directory, not a JSONL file"):
        convert_jsonl(str(tmp_path), str(tmp_path / "o"), tok)
    with pytest.raises(DataError, match="field 'chunk_size': must be a positive integer, got 0"):
        convert_jsonl(empty, str(tmp_path / "o"), tok, chunk_size=0)
    with pytest.raises(DataError, match="unknown dataset kind 'dpo'"):
        convert_jsonl(empty, str(tmp_path / "o"), tok, kind="dpo")
    with pytest.raises(DataError, match="field 'seq_length': must be an integer >= 3"):
        convert_jsonl(empty, str(tmp_path / "o"), tok, seq_length=2)
    with pytest.raises(DataError, match="output directory does not exist"):
        convert_jsonl(write_lines(tmp_path / "in.jsonl", [GOOD]), str(tmp_path / "no" / "o"), tok)
    assert leftovers(tmp_path) == ["empty.jsonl", "in.jsonl"]


def test_refuses_to_overwrite_unless_asked(tmp_path, tok):
    src = write_lines(tmp_path / "in.jsonl", [GOOD, GOOD2])
    out = str(tmp_path / "ppo.mindrecord")
    convert_jsonl(src, out, tok, max_prompt_length=16, seq_length=32)
    write_lines(src, [GOOD])
    with pytest.raises(
        DataError, match=r"output already exists \(ppo.mindrecord, ppo.mindrecord.db, .*--overwrite"
    ):
        convert_jsonl(src, out, tok, max_prompt_length=16, seq_length=32)
    assert len(mind_rows(out)) == 2
    os.unlink(out + ".meta.json")  # any one of the three files counts as an existing output
    with pytest.raises(DataError, match="output already exists"):
        convert_jsonl(src, out, tok, max_prompt_length=16, seq_length=32)
    convert_jsonl(src, out, tok, max_prompt_length=16, seq_length=32, overwrite=True)
    assert len(mind_rows(out)) == 1
    assert read_dataset(out, "ppo", batch_size=1).num_rows == 1
    assert leftovers(tmp_path) == [
        "in.jsonl",
        "ppo.mindrecord",
        "ppo.mindrecord.db",
        "ppo.mindrecord.meta.json",
    ]


def test_interrupt_during_write_leaves_nothing(tmp_path, tok, monkeypatch):
    src = write_lines(tmp_path / "in.jsonl", [GOOD, GOOD2, GOOD])
    calls = []

    def interrupted(self, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(self, rows)

    original = writer_mod.AtomicMindRecordWriter.write
    monkeypatch.setattr(writer_mod.AtomicMindRecordWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_jsonl(
            src, str(tmp_path / "o.mindrecord"), tok, max_prompt_length=16, seq_length=32, chunk_size=1
        )
    assert calls == [1, 1]
    assert leftovers(tmp_path) == ["in.jsonl"]


def test_failed_move_restores_the_old_dataset(tmp_path, tok, monkeypatch):
    src = write_lines(tmp_path / "in.jsonl", [GOOD, GOOD2])
    out = str(tmp_path / "o.mindrecord")
    real_replace = os.replace
    moves = []

    def failing_replace(a, b):
        moves.append(os.path.basename(b))
        if (
            b == out and os.path.basename(a) == "o.mindrecord"
        ):  # the new data file, after its .db was moved in
            raise OSError("disk full")
        real_replace(a, b)

    monkeypatch.setattr(writer_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        convert_jsonl(src, out, tok, max_prompt_length=16, seq_length=32)
    assert moves == ["o.mindrecord.db", "o.mindrecord"]
    assert leftovers(tmp_path) == ["in.jsonl"]  # the .db that was already moved in is gone again

    monkeypatch.setattr(writer_mod.os, "replace", real_replace)
    convert_jsonl(src, out, tok, max_prompt_length=16, seq_length=32)
    before = {n: open(tmp_path / n, "rb").read() for n in leftovers(tmp_path, keep=["in.jsonl"])}
    write_lines(src, [GOOD])
    monkeypatch.setattr(writer_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        convert_jsonl(src, out, tok, max_prompt_length=16, seq_length=32, overwrite=True)
    after = {n: open(tmp_path / n, "rb").read() for n in leftovers(tmp_path, keep=["in.jsonl"])}
    assert after == before  # the old dataset is back, byte for byte
    assert read_dataset(out, "ppo", batch_size=1).num_rows == 2


def _slow_cli(tmp_path, tok):
    """A CLI run that blocks after its first write, so a test can signal it mid-write."""
    src = write_lines(tmp_path / "in.jsonl", [GOOD, GOOD2] * 4)
    script = tmp_path / "slow.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from mindspore.mindrecord import FileWriter
            original = FileWriter.write_raw_data
            def slow(self, rows, parallel_writer=False):
                original(self, rows, parallel_writer)
                print("WROTE", flush=True)
                time.sleep(60)
            FileWriter.write_raw_data = slow
            sys.path.insert(0, {os.path.dirname(SCRIPT)!r})
            import rlhf_data
            sys.exit(rlhf_data.main(sys.argv[1:]))
            """
        )
    )
    args = ["--tokenizer_name_or_path", tok.model_file, "--file_path", src, "--output_path"]
    args += [
        str(tmp_path / "out.mindrecord"),
        "--max_prompt_length",
        "16",
        "--seq_length",
        "32",
        "--chunk_size",
        "2",
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "WROTE"
    assert any(n.startswith(".out.mindrecord.partial-") for n in os.listdir(tmp_path))
    return proc


@pytest.mark.slow
def test_sigterm_mid_write_cleans_up(tmp_path, tok):
    proc = _slow_cli(tmp_path, tok)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: nothing was written" in err
    assert leftovers(tmp_path) == ["in.jsonl", "slow.py"]


@pytest.mark.slow
def test_sigkill_mid_write_never_leaves_output_under_its_name(tmp_path, tok):
    proc = _slow_cli(tmp_path, tok)
    proc.kill()
    proc.communicate(timeout=60)
    names = leftovers(tmp_path, keep=["in.jsonl", "slow.py"])
    assert len(names) == 1 and names[0].startswith(".out.mindrecord.partial-")  # only the temporary directory


@pytest.mark.slow
def test_cli_on_the_demo_corpus(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mindrlhf.demo",
            "--output_dir",
            str(tmp_path),
            "--seed",
            "1",
            "--rm_pairs_per_prompt",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "tokenizer.model: 1200 pieces" in run.stderr  # the demo corpus CLI logs (stderr)
    base = [sys.executable, SCRIPT, "--tokenizer_name_or_path", str(tmp_path), "--max_prompt_length", "32"]
    base += [
        "--seq_length",
        "64",
        "--pad_token_id",
        "0",
        "--mode",
        "rm",
        "--file_path",
        str(tmp_path / "rm.jsonl"),
    ]
    run = subprocess.run(
        [*base, "--output_path", str(tmp_path / "rm.mindrecord")], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    n_lines = sum(1 for _ in open(tmp_path / "rm.jsonl"))
    assert f"Total number of samples: {n_lines}" in run.stdout
    assert "lines/s" in run.stderr and "skipped: none" in run.stderr
    data = read_dataset(str(tmp_path / "rm.mindrecord"), "rm", batch_size=64)
    assert data.num_rows == n_lines
    # a user error is one line on stderr and exit code 2, no traceback
    run = subprocess.run(
        [*base, "--output_path", str(tmp_path / "rm.mindrecord")], capture_output=True, text=True, env=env
    )
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr and "--overwrite" in run.stderr
