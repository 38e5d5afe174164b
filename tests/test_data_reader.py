"""read_dataset: schema and integrity checks before iteration, deterministic / sharded / resumable order."""

import json
import os
import shutil

import numpy as np
import pytest

from mindrlhf import demo as dc
from mindrlhf.data import DataError, LlamaTokenizer, convert_jsonl, read_dataset, train_sentencepiece

N_ROWS = 45


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """ppo / rm / sft datasets of N_ROWS demo rows, plus the rows' source records and the tokenizer."""
    root = tmp_path_factory.mktemp("data")
    splits = dc.build_demo_corpus(seed=0, rm_pairs_per_prompt=1)
    tok = LlamaTokenizer(train_sentencepiece(root / "tokenizer", 1200, sentences=dc.tokenizer_corpus(splits)))
    # rows that fit seq_length 48 whole (every corpus word is one piece; + BOS and EOS)
    fits = [
        r
        for r in splits["rm"]
        if len(r["prompt"].split()) + max(len(r[k].split()) for k in ("pos_resp", "neg_resp")) + 2 <= 48
    ]
    records = fits[:N_ROWS]
    src = root / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    for kind in ("ppo", "rm", "sft"):
        convert_jsonl(
            str(src), str(root / f"{kind}.mindrecord"), tok, kind, max_prompt_length=24, seq_length=48
        )
    return root, records, tok


def copy_dataset(root, kind, dest):
    for suffix in ("", ".db", ".meta.json"):
        shutil.copy(root / f"{kind}.mindrecord{suffix}", dest / f"{kind}.mindrecord{suffix}")
    return dest / f"{kind}.mindrecord"


def test_read_all_returns_the_written_rows(data):
    root, records, tok = data
    ppo = read_dataset(str(root / "ppo.mindrecord"), "ppo", batch_size=4)
    assert (ppo.num_rows, ppo.lengths) == (N_ROWS, {"max_prompt_length": 24, "seq_length": 48})
    rows = ppo.read_all()
    assert {k: (v.shape, v.dtype) for k, v in rows.items()} == {
        "prompt_ids": ((N_ROWS, 24), np.int32),
        "prompt_mask": ((N_ROWS, 24), np.int32),
        "pretrain_ids": ((N_ROWS, 48), np.int32),
        "pretrain_mask": ((N_ROWS, 48), np.int32),
        "loss_mask": ((N_ROWS, 48), np.int32),
    }
    prompts = tok.decode_batch(rows["prompt_ids"], rows["prompt_mask"])
    answers = tok.decode_batch(rows["pretrain_ids"], rows["loss_mask"])
    assert prompts == [r["prompt"] for r in records]
    assert answers == [r["pos_resp"] for r in records]
    rm = read_dataset(str(root / "rm.mindrecord"), "rm", batch_size=4).read_all()
    assert tok.decode_batch(rm["rejected_ids"], rm["rejected_mask"]) == [
        r["prompt"] + " " + r["neg_resp"] for r in records
    ]


def test_batches_are_deterministic_shuffled_and_cover_an_epoch(data):
    root, records, tok = data
    path = str(root / "sft.mindrecord")
    all_rows = read_dataset(path, "sft", batch_size=1).read_all()["input_ids"]
    row_of = {tuple(r): i for i, r in enumerate(all_rows)}
    assert len(row_of) == N_ROWS

    def order(batches):
        return [row_of[tuple(r)] for b in batches for r in b["input_ids"]]

    a = read_dataset(path, "sft", batch_size=4, seed=7)
    assert len(a) == N_ROWS // 4
    batches = list(a)
    assert len(batches) == 11 and all(b["input_ids"].shape == (4, 48) for b in batches)
    assert order(batches) == a.epoch_indices(0).tolist()
    assert order(batches) == np.random.RandomState(7).permutation(N_ROWS)[:44].tolist()
    assert order(read_dataset(path, "sft", batch_size=4, seed=7)) == order(batches)  # same seed, same order
    assert order(read_dataset(path, "sft", batch_size=4, seed=8)) != order(batches)
    assert order(a.iter_epoch(1)) != order(batches)  # each epoch reshuffles
    plain = read_dataset(path, "sft", batch_size=4, shuffle=False, drop_remainder=False)
    assert len(plain) == 12 and order(plain) == list(range(N_ROWS))  # the last batch has 1 row


def test_resume_continues_exactly(data):
    root, _, _ = data
    path = str(root / "ppo.mindrecord")
    full = list(read_dataset(path, "ppo", batch_size=4, seed=3).iter_epoch(2))
    resumed = list(read_dataset(path, "ppo", batch_size=4, seed=3, epoch=2, start_batch=7))
    assert len(resumed) == len(full) - 7
    for x, y in zip(full[7:], resumed):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    with pytest.raises(DataError, match="field 'start_batch': must be in \\[0, 11\\]"):
        read_dataset(path, "ppo", batch_size=4, start_batch=12)


def test_shards_are_disjoint_and_equal(data):
    root, _, _ = data
    path = str(root / "rm.mindrecord")
    shards = [read_dataset(path, "rm", batch_size=2, seed=1, shard_id=k, num_shards=4) for k in range(4)]
    assert [len(s) for s in shards] == [5, 5, 5, 5]  # 45 rows -> 11 per shard -> 5 batches of 2
    seen = [set(s.epoch_indices(0).tolist()) for s in shards]
    assert all(len(x) == 10 for x in seen)
    assert len(set().union(*seen)) == 40
    chosen = [tuple(r) for b in shards[2] for r in b["chosen_ids"]]
    everything = read_dataset(path, "rm", batch_size=1).read_all()["chosen_ids"]
    assert chosen == [tuple(everything[i]) for i in shards[2].epoch_indices(0)]
    with pytest.raises(DataError, match="give both shard_id and num_shards"):
        read_dataset(path, "rm", batch_size=2, shard_id=1)
    with pytest.raises(DataError, match="need 0 <= shard_id < num_shards, got 4 of 4"):
        read_dataset(path, "rm", batch_size=2, shard_id=4, num_shards=4)


def test_wrong_kind_or_arguments(data):
    root, _, _ = data
    with pytest.raises(DataError, match=r"ppo.mindrecord: field 'kind': is a 'ppo' dataset, not 'rm'"):
        read_dataset(str(root / "ppo.mindrecord"), "rm", batch_size=2)
    with pytest.raises(DataError, match="field 'batch_size': must be a positive integer"):
        read_dataset(str(root / "ppo.mindrecord"), "ppo", batch_size=0)
    with pytest.raises(DataError, match="dataset file not found"):
        read_dataset(str(root / "nope.mindrecord"), "ppo", batch_size=2)


def test_corruption_is_caught_before_mindspore_reads(tmp_path, data):
    root, _, _ = data
    path = copy_dataset(root, "ppo", tmp_path)
    blob = bytearray(path.read_bytes())
    blob[-100:-96] = b"\xde\xad\xbe\xef"  # a few payload bytes: MindRecord alone would return a wrong row
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="ppo.mindrecord: sha256 differs .*corrupted"):
        read_dataset(str(path), "ppo", batch_size=2)
    assert (
        read_dataset(str(path), "ppo", batch_size=2, verify="size").num_rows == N_ROWS
    )  # size-only check passes
    path.write_bytes(bytes(blob[:-2048]))
    with pytest.raises(DataError, match="has .* bytes but was written with .*truncated"):
        read_dataset(str(path), "ppo", batch_size=2, verify="size")


def test_missing_db_sidecar_or_renamed_pair(tmp_path, data):
    root, _, _ = data
    path = copy_dataset(root, "ppo", tmp_path)
    os.unlink(str(path) + ".db")
    with pytest.raises(
        DataError, match="ppo.mindrecord.db is missing: a MindRecord dataset is the file and its .db"
    ):
        read_dataset(str(path), "ppo", batch_size=2)
    path = copy_dataset(root, "sft", tmp_path)
    os.unlink(str(path) + ".meta.json")
    with pytest.raises(DataError, match="sidecar sft.mindrecord.meta.json is missing .*verify='none'"):
        read_dataset(str(path), "sft", batch_size=2)
    assert read_dataset(str(path), "sft", batch_size=2, verify="none").num_rows == N_ROWS
    for suffix in ("", ".db", ".meta.json"):
        shutil.copy(root / f"rm.mindrecord{suffix}", tmp_path / f"renamed.mindrecord{suffix}")
    with pytest.raises(DataError, match="describes rm.mindrecord, rm.mindrecord.db, not renamed.mindrecord"):
        read_dataset(str(tmp_path / "renamed.mindrecord"), "rm", batch_size=2)


def _hand_written(tmp_path, name, schema, rows):
    from mindspore.mindrecord import FileWriter

    w = FileWriter(str(tmp_path / name), shard_num=1)
    w.add_schema(schema, "test")
    w.write_raw_data(rows)
    w.commit()
    return str(tmp_path / name)


SEQ = {"type": "int32", "shape": [8]}
SFT_OK = {"input_ids": SEQ, "attention_mask": SEQ, "loss_mask": SEQ}


@pytest.mark.parametrize(
    "schema,message",
    [
        (
            {"input_ids": SEQ, "attention_mask": SEQ},
            "field 'loss_mask': missing from the file .it has: attention_mask, input_ids.",
        ),
        (
            {**SFT_OK, "loss_mask": {"type": "float32", "shape": [8]}},
            "field 'loss_mask': has type 'float32', expected 'int32'",
        ),
        (
            {**SFT_OK, "input_ids": {"type": "int32", "shape": [-1]}},
            "field 'input_ids': has shape \\[-1\\], expected a fixed 1-D",
        ),
        (
            {**SFT_OK, "loss_mask": {"type": "int32", "shape": [9]}},
            "field 'loss_mask': has length 9 but other fields have seq_length=8",
        ),
    ],
)
def test_schema_errors_name_the_field(tmp_path, schema, message):
    row = {}
    for name, spec in schema.items():
        n = spec["shape"][0] if spec["shape"][0] > 0 else 8
        row[name] = np.zeros(n, np.float32 if spec["type"] == "float32" else np.int32)
    path = _hand_written(tmp_path, "hand.mindrecord", schema, [row])
    with pytest.raises(DataError, match=f"hand.mindrecord: {message}"):
        read_dataset(path, "sft", batch_size=1, verify="none")


def test_a_hand_written_valid_file_reads_unchecked(tmp_path):
    rows = [{k: np.full(8, i, np.int32) for k in SFT_OK} for i in range(3)]
    path = _hand_written(tmp_path, "ok.mindrecord", SFT_OK, rows)
    got = read_dataset(
        path, "sft", batch_size=2, verify="none", shuffle=False, drop_remainder=False
    ).read_all()
    assert got["loss_mask"][:, 0].tolist() == [0, 1, 2]


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.mindrecord"
    path.write_bytes(b"\x00" * 4096)
    (tmp_path / "junk.mindrecord.db").write_bytes(b"")
    with pytest.raises(DataError, match="junk.mindrecord: MindSpore cannot open it as MindRecord"):
        read_dataset(str(path), "ppo", batch_size=1, verify="none")
