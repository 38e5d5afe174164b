"""LlamaTokenizer over SentencePiece and train_sentencepiece: ids, padding sides, determinism, errors."""

import hashlib

import numpy as np
import pytest

from mindrlhf import demo as dc
from mindrlhf.cli import tokenizer as tokenizer_cli
from mindrlhf.data import DataError, LlamaTokenizer, pad_sequences, train_sentencepiece

SENTENCES = dc.tokenizer_corpus(dc.build_demo_corpus(seed=0, rm_pairs_per_prompt=1))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return train_sentencepiece(tmp_path_factory.mktemp("tok") / "tokenizer", 1200, sentences=SENTENCES)


@pytest.fixture(scope="module")
def tok(model_path):
    return LlamaTokenizer(model_path)


def test_llama_special_ids_and_vocab(tok):
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 0)
    assert tok.vocab_size == 1200
    assert tok.sp.id_to_piece(1) == "<s>" and tok.sp.id_to_piece(2) == "</s>"
    # every corpus word is a single piece at this vocabulary size, so responses stay short
    words = sorted(set(" ".join(SENTENCES).split()))
    assert max(len(ids) for ids in tok.encode_batch(words)) == 1


def test_training_is_deterministic_and_path_independent(tmp_path, model_path):
    a = train_sentencepiece(tmp_path / "a" / "tok", 1200, sentences=SENTENCES)
    b = train_sentencepiece(tmp_path / "b" / "other_name", 1200, sentences=iter(SENTENCES))
    digest = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (a, b, model_path)]
    assert digest[0] == digest[1] == digest[2]
    c = train_sentencepiece(tmp_path / "c" / "tok", 600, sentences=SENTENCES)
    assert LlamaTokenizer(c).vocab_size == 600


def test_train_from_files_equals_train_from_sentences(tmp_path, model_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(SENTENCES) + "\n\n", encoding="utf-8")  # a blank line is ignored
    p = train_sentencepiece(tmp_path / "tok", 1200, input_files=[text])
    assert open(p, "rb").read() == open(model_path, "rb").read()
    with pytest.raises(ValueError, match="exactly one"):
        train_sentencepiece(tmp_path / "x", 100)
    with pytest.raises(DataError, match="missing.txt"):
        train_sentencepiece(tmp_path / "x", 100, input_files=[tmp_path / "missing.txt"])


def test_encode_decode_round_trip_and_special_tokens(tok):
    text = "please , how do i bake a cake ?"
    ids = tok.encode(text)
    assert [tok.sp.id_to_piece(i) for i in ids] == ["▁" + w for w in text.split()]
    assert tok.encode(text, add_bos=True, add_eos=True) == [1, *ids, 2]
    assert tok.decode([1, *ids, 2]) == text
    assert tok.decode(ids[:2]) == "please ,"
    assert tok.encode_batch([text, "sure !"], add_bos=True) == [[1, *ids], [1, *tok.encode("sure !")]]


def test_byte_fallback_keeps_unseen_characters(tok):
    text = "如何 bake 🍰"
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text


def test_batch_encode_prompts_left_pads_with_bos(tok):
    texts = ["how do i bake a cake ?", "help me wash a dog ."]
    ids, mask = tok.batch_encode_prompts(texts, max_length=12)
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == (2, 12)
    for row, m, text in zip(ids, mask, texts):
        seq = [1, *tok.encode(text)]
        expected = [0] * (12 - len(seq)) + seq
        assert row.tolist() == expected
        assert m.tolist() == [0] * (12 - len(seq)) + [1] * len(seq)
    with pytest.raises(ValueError, match="prompt 0 has 8 tokens"):
        tok.batch_encode_prompts(texts, max_length=7)
    cut, cut_mask = tok.batch_encode_prompts(texts[:1], max_length=4, truncate=True)
    assert cut.tolist() == [[1, *tok.encode(texts[0])[-3:]]] and cut_mask.tolist() == [[1, 1, 1, 1]]


def test_pad_sequences_both_sides_with_a_nonzero_pad():
    ids, mask = pad_sequences([[5, 6], [7], []], 4, pad_id=9, side="right")
    assert ids.tolist() == [[5, 6, 9, 9], [7, 9, 9, 9], [9, 9, 9, 9]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    ids, mask = pad_sequences([[5, 6], [0]], 3, pad_id=0, side="left")
    assert ids.tolist() == [[0, 5, 6], [0, 0, 0]]
    assert mask.tolist() == [[0, 1, 1], [0, 0, 1]]  # a real token 0 (unk) is still masked in
    with pytest.raises(ValueError, match="sequence 0 has 3 tokens"):
        pad_sequences([[1, 2, 3]], 2, 0)


def test_decode_batch_uses_mask_and_stops_at_eos(tok):
    a = tok.encode("sure !")
    ids = np.array([[0, 0, 1, *a, 2, 7, 7]], np.int32)
    mask = np.array([[0, 0] + [1] * (len(a) + 4)], np.int32)
    assert tok.decode_batch(ids, mask) == ["sure !"]


def test_loading_errors_name_the_path(tmp_path, model_path):
    with pytest.raises(DataError, match="llama-2-7b.*cannot be downloaded"):
        LlamaTokenizer("llama-2-7b")
    with pytest.raises(DataError, match="has no tokenizer.model"):
        LlamaTokenizer(tmp_path)
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        LlamaTokenizer(tmp_path)
    bad.write_bytes(open(model_path, "rb").read())
    assert LlamaTokenizer(tmp_path).model_file == str(bad)  # a directory holding tokenizer.model
    with pytest.raises(DataError, match="pad_token_id 5000 is outside"):
        LlamaTokenizer(model_path, pad_token_id=5000)


def test_cli_train_and_encode(tmp_path, capsys):
    text = tmp_path / "c.txt"
    text.write_text("\n".join(SENTENCES[:2000]), encoding="utf-8")
    assert (
        tokenizer_cli.main(
            ["train", "--input", str(text), "--model_prefix", str(tmp_path / "t"), "--vocab_size", "500"]
        )
        == 0
    )
    assert (tmp_path / "t.model").is_file() and (tmp_path / "t.vocab").is_file()
    assert "500 pieces, unk=0 bos=1 eos=2" in capsys.readouterr().out
    assert tokenizer_cli.main(["encode", "--model", str(tmp_path / "t.model"), "sure !"]) == 0
    assert str(LlamaTokenizer(tmp_path / "t.model").encode("sure !")) in capsys.readouterr().out
    assert tokenizer_cli.main(["encode", "--model", str(tmp_path / "missing"), "x"]) == 2
