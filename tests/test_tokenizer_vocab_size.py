"""Tokenizer training with a vocab_size the text cannot fit: one DataError naming the size and the bound."""

import pytest

from mindrlhf.data.schemas import DataError
from mindrlhf.data.tokenizer import LlamaTokenizer, train_sentencepiece


def _text(tmp_path, distinct=400):
    # `distinct` CJK characters, each used at least once: with byte fallback the model needs
    # 3 special + 256 byte + `distinct` character pieces at the very least.
    chars = [chr(0x4E00 + i) for i in range(distinct)]
    path = tmp_path / "cjk.txt"
    path.write_text(
        "\n".join("".join(chars[i : i + 20]) for i in range(0, distinct, 20)) + "\n", encoding="utf-8"
    )
    return path


def test_vocab_size_below_what_the_text_needs_is_a_clear_error(tmp_path):
    path = _text(tmp_path)
    with pytest.raises(DataError) as err:
        train_sentencepiece(tmp_path / "m", 300, input_files=[path])
    msg = str(err.value)
    assert str(path) in msg and "field 'vocab_size'" in msg
    # SentencePiece counts the 400 characters, the 256 bytes and <unk>/<s>/</s>, plus "▁" (the dummy prefix).
    assert "vocab_size 300 is too small for this text: SentencePiece needs at least 660 pieces" in msg
    assert "pass --vocab_size 660 or more" in msg
    assert not (tmp_path / "m.model").exists()
    model = train_sentencepiece(tmp_path / "m", 660, input_files=[path])  # the advice works
    assert LlamaTokenizer(model).vocab_size == 660


def test_cli_prints_one_line_not_a_traceback(tmp_path):
    from mindrlhf.cli.tokenizer import main

    path = _text(tmp_path)
    assert (
        main(["train", "--input", str(path), "--model_prefix", str(tmp_path / "m"), "--vocab_size", "100"])
        == 2
    )
