"""Hugging Face tokenizer.json tokenizers: a Llama-3-style and a Qwen2-style byte-level BPE trained here with the
`tokenizers` library; special ids from tokenizer_config.json, chat templates, parity with transformers, the data
tool (library and CLI) in every mode, and the bad-input errors."""

import json
import os

import numpy as np
import pytest

from mindrlhf import demo as dc
from mindrlhf.cli import data as data_cli
from mindrlhf.data import (
    DataError,
    HFTokenizer,
    LlamaTokenizer,
    convert_jsonl,
    layout_rows,
    load_tokenizer,
    read_dataset,
    train_sentencepiece,
)

tokenizers = pytest.importorskip("tokenizers")

SENTENCES = dc.tokenizer_corpus(dc.build_demo_corpus(seed=0, rm_pairs_per_prompt=1))[:3000]
# The pre-tokenizer regexes of the real tokenizer.json files (Llama-3 groups digits by 3, Qwen2 by 1).
LLAMA3_PAT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
QWEN2_PAT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
# Special tokens come first in training, so their ids are their positions in these lists.
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}\n{%- for message in messages %}{%- if message.role != 'system' %}{{- '<|im_start|>' + "
    "message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n"
)
TEXTS = ["how do i bake a cake ?", " 如何 bake 🍰 ", "a  b\n\tc", "it's 12345 dogs", "scrub the dog gently ."]
ROWS = [
    {"prompt": "help me wash a dog .", "pos_resp": "scrub the dog gently .", "neg_resp": "i do not know .",
     "answer": "7"},
    {"prompt": "如何 bake a cake 🍰 ?", "pos_resp": "mix flour and eggs .", "neg_resp": "no .", "answer": "19"},
]  # fmt: skip


def _train(specials, pattern, bos=None):
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tk = tokenizers.Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(SENTENCES, trainer)
    if bos is None:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
    else:  # Llama-3: the post-processor prepends BOS
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tk.token_to_id(bos))]
        )
    return tk


def _save(directory, tk, config, special_map=None):
    os.makedirs(directory, exist_ok=True)
    tk.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    if special_map is not None:
        with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as f:
            json.dump(special_map, f)
    return str(directory)


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    """Llama-3 style: BOS from the post-processor, eos <|eot_id|>, no pad token, a template writing BOS."""
    tk = _train(LLAMA3_SPECIALS, LLAMA3_PAT, bos="<|begin_of_text|>")
    config = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": LLAMA3_TEMPLATE,
    }
    return _save(tmp_path_factory.mktemp("llama3"), tk, config)


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    """Qwen2 style: no BOS (bos_token null), eos <|im_end|>, pad <|endoftext|>, ChatML template."""
    tk = _train(QWEN2_SPECIALS, QWEN2_PAT)
    config = {
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "chat_template": QWEN2_TEMPLATE,
    }
    return _save(tmp_path_factory.mktemp("qwen2"), tk, config)


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return train_sentencepiece(tmp_path_factory.mktemp("sp") / "tokenizer", 600, sentences=SENTENCES)


def _hf(directory):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(directory)


def test_special_ids_come_from_the_config(llama3_dir, qwen2_dir):
    llama = load_tokenizer(llama3_dir, pad_token_id=1)
    assert isinstance(llama, HFTokenizer) and llama.vocab_size == 500
    assert (llama.bos_id, llama.eos_id, llama.pad_id, llama.unk_id, llama.add_bos) == (0, 2, 1, None, True)
    qwen = load_tokenizer(qwen2_dir)
    assert (qwen.bos_id, qwen.eos_id, qwen.pad_id, qwen.unk_id, qwen.add_bos) == (None, 2, 0, None, False)
    assert load_tokenizer(os.path.join(qwen2_dir, "tokenizer.json")).eos_id == 2  # the file itself
    # encode(add_bos=True) adds BOS only where the model has one
    ids = qwen.tk.encode(TEXTS[0], add_special_tokens=False).ids
    assert qwen.encode(TEXTS[0], add_bos=True, add_eos=True) == [*ids, 2]
    assert llama.encode(TEXTS[0], add_bos=True) == [
        0,
        *llama.tk.encode(TEXTS[0], add_special_tokens=False).ids,
    ]


@pytest.mark.parametrize("which", ["llama3", "qwen2"])
def test_encoding_matches_transformers_and_decodes_back(which, llama3_dir, qwen2_dir):
    directory = llama3_dir if which == "llama3" else qwen2_dir
    ours, ref = load_tokenizer(directory, pad_token_id=0), _hf(directory)
    assert (ours.bos_id, ours.eos_id) == (ref.bos_token_id, ref.eos_token_id)
    for text in [*TEXTS, "say <|im_end|> or <|eot_id|> here"]:
        ids = ours.encode(text, add_bos=True)
        assert ids == ref(text)["input_ids"], text  # transformers adds BOS through the post-processor
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    for text in TEXTS:
        assert ours.decode(ours.encode(text, add_bos=True, add_eos=True)) == text
    assert ours.encode_batch(TEXTS, add_bos=True) == [ours.encode(t, add_bos=True) for t in TEXTS]


def test_chat_template_renders_as_transformers_and_bos_is_not_doubled(llama3_dir, qwen2_dir):
    qwen = load_tokenizer(qwen2_dir)
    assert qwen.apply_chat_template("help me wash a dog .") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhelp me wash a dog .<|im_end|>\n<|im_start|>assistant\n"
    )
    llama = load_tokenizer(llama3_dir, pad_token_id=0)
    assert llama.apply_chat_template(" hi ") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    for tok, directory in ((qwen, qwen2_dir), (llama, llama3_dir)):
        ref = _hf(directory)
        for prompt in ROWS[0]["prompt"], ROWS[1]["prompt"]:
            expected = ref.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
            ids = tok._head(True) + tok.encode_chat_prompts([prompt])[0]  # the one BOS the layout adds
            assert ids == expected
    body = llama.encode_chat_prompts(["hi"])[0]
    assert body[0] == 3 and 0 not in body  # starts at <|start_header_id|>: the template's BOS was taken off


def test_special_tokens_map_fills_what_the_config_lacks(tmp_path):
    tk = _train(QWEN2_SPECIALS, QWEN2_PAT)
    d = _save(
        tmp_path / "t",
        tk,
        {"eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "special": True}, "bos_token": None},
        special_map={"eos_token": "<|endoftext|>", "pad_token": {"content": "<|im_start|>"}},
    )
    tok = HFTokenizer(d)
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (2, 1, None)  # the config's eos wins, the map gives pad
    assert tok.chat_template is None
    with pytest.raises(DataError, match="has no chat_template.*drop --chat_template"):
        tok.encode_chat_prompts(["hi"])
    (tmp_path / "t" / "chat_template.jinja").write_text("[{{ messages[0]['content'] }}]", encoding="utf-8")
    assert HFTokenizer(d).apply_chat_template("hi") == "[hi]"  # the separate file, as transformers saves it


def test_add_bos_token_false_overrides_the_post_processor(tmp_path):
    tk = _train(LLAMA3_SPECIALS, LLAMA3_PAT, bos="<|begin_of_text|>")
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|end_of_text|>"}
    assert HFTokenizer(_save(tmp_path / "a", tk, config)).add_bos is True
    tok = HFTokenizer(_save(tmp_path / "b", tk, dict(config, add_bos_token=False)))
    assert (tok.bos_id, tok.add_bos) == (0, False)
    assert tok.encode("hi", add_bos=True) == tok.encode("hi")


def test_loader_picks_the_class(tmp_path, sp_model, qwen2_dir):
    assert isinstance(load_tokenizer(sp_model), LlamaTokenizer)
    assert load_tokenizer(sp_model).pad_id == 0 and load_tokenizer(sp_model, pad_token_id=3).pad_id == 3
    assert isinstance(load_tokenizer(os.path.dirname(sp_model)), LlamaTokenizer)
    both = tmp_path / "both"
    both.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (both / name).write_bytes(open(os.path.join(qwen2_dir, name), "rb").read())
    assert isinstance(load_tokenizer(both), HFTokenizer)
    (both / "tokenizer.model").write_bytes(open(sp_model, "rb").read())
    assert isinstance(load_tokenizer(both), LlamaTokenizer)  # tokenizer.model first, as before
    os.remove(both / "tokenizer.model")
    with pytest.raises(DataError, match="its tokenizer.json is a Hugging Face tokenizer"):
        LlamaTokenizer(both)  # the SentencePiece class points at the loader


def _corrupt(tmp_path, qwen2_dir, name, text):
    d = tmp_path / f"{len(os.listdir(tmp_path))}_{name}"  # a fresh copy per case
    d.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).write_bytes(open(os.path.join(qwen2_dir, f), "rb").read())
    if text is None:
        os.remove(d / name)
    else:
        (d / name).write_text(text, encoding="utf-8")
    return d


def test_bad_inputs_are_one_clear_error(tmp_path, qwen2_dir, llama3_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"has no tokenizer.model \(SentencePiece\) or tokenizer.json"):
        load_tokenizer(empty)
    with pytest.raises(DataError, match="no such file.*tokenizer names cannot be downloaded"):
        load_tokenizer("Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(DataError, match="tokenizer.json.*not a Hugging Face tokenizers file"):
        load_tokenizer(_corrupt(tmp_path, qwen2_dir, "tokenizer.json", '{"model": {"type": "BPE"'))
    with pytest.raises(DataError, match=r"tokenizer_config.json:2.*not valid JSON"):
        load_tokenizer(_corrupt(tmp_path, qwen2_dir, "tokenizer_config.json", '{"eos_token":\n "x",,}'))
    with pytest.raises(DataError, match="no eos_token in tokenizer_config.json or special_tokens_map.json"):
        load_tokenizer(_corrupt(tmp_path, qwen2_dir, "tokenizer_config.json", None))
    with pytest.raises(DataError, match="eos_token '<\\|im_end\\|>' is not in .*vocabulary"):
        load_tokenizer(
            _corrupt(tmp_path, qwen2_dir, "tokenizer.json", open(llama3_dir + "/tokenizer.json").read())
        )
    with pytest.raises(DataError, match="has no pad_token.*pass --pad_token_id, e.g. the EOS id 2"):
        load_tokenizer(llama3_dir)
    with pytest.raises(DataError, match="pad_token_id 500 is outside"):
        load_tokenizer(qwen2_dir, pad_token_id=500)
    broken = _corrupt(tmp_path, qwen2_dir, "chat_template.jinja", "{% if %}")
    with pytest.raises(DataError, match="chat template failed: TemplateSyntaxError"):
        load_tokenizer(broken).apply_chat_template("hi")
    raising = _corrupt(tmp_path, qwen2_dir, "chat_template.jinja", "{{ raise_exception('only user turns') }}")
    with pytest.raises(DataError, match="chat template failed.*only user turns"):
        load_tokenizer(raising).encode_chat_prompts(["hi"])
    sandboxed = _corrupt(tmp_path, qwen2_dir, "chat_template.jinja", "{{ ''.__class__.__mro__ }}")
    with pytest.raises(DataError, match="chat template failed: SecurityError"):
        load_tokenizer(sandboxed).apply_chat_template("hi")


def test_layout_without_bos_hand_computed():
    kw = dict(bos_id=None, eos_id=2, pad_id=0, max_prompt_length=3, seq_length=7)
    cols, reasons = layout_rows("ppo", [[10, 11], [10, 11, 12, 13]], [[20, 21, 22], [20]], None, **kw)
    assert reasons == [None, "prompt_too_long"]
    assert cols["prompt_ids"].tolist()[0] == [0, 10, 11] and cols["prompt_mask"].tolist()[0] == [0, 1, 1]
    assert cols["pretrain_ids"].tolist()[0] == [10, 11, 20, 21, 22, 2, 0]
    assert cols["pretrain_mask"].tolist()[0] == [1, 1, 1, 1, 1, 1, 0]
    assert cols["loss_mask"].tolist()[0] == [0, 0, 1, 1, 1, 1, 0]
    _, reasons = layout_rows(
        "sft", [[10, 11, 12], [10, 11, 12]], [[20, 21, 22], [20, 21, 22, 23]], None, **kw
    )
    assert reasons == [None, "sequence_too_long"]  # 3 + 3 + EOS = 7 fits exactly; one more does not


def _jsonl(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return str(path)


def _real(ids, mask):
    return [int(i) for i in np.asarray(ids)[np.asarray(mask) == 1]]


@pytest.mark.parametrize("which", ["llama3", "qwen2"])
def test_data_tool_every_mode(which, tmp_path, llama3_dir, qwen2_dir):
    directory = llama3_dir if which == "llama3" else qwen2_dir
    pad = 1 if which == "llama3" else None  # Llama-3 ships no pad token: it is given
    tok = load_tokenizer(directory, pad_token_id=pad)
    head = [0] if which == "llama3" else []  # BOS <|begin_of_text|> = 0; Qwen2 has none
    src = _jsonl(tmp_path)
    P, T = 24, 48
    for kind in ("ppo", "sft", "rm", "prompt"):
        out = str(tmp_path / f"{kind}.mindrecord")
        convert_jsonl(src, out, directory, kind=kind, max_prompt_length=P, seq_length=T, pad_token_id=pad)
        data = read_dataset(out, kind, batch_size=1, shuffle=False).read_all()
        meta = json.load(open(out + ".meta.json"))
        assert meta["pad_token_id"] == tok.pad_id == (1 if which == "llama3" else 0)
        assert (meta["tokenizer"]["kind"], meta["tokenizer"]["bos_id"], meta["tokenizer"]["eos_id"]) == (
            "huggingface",
            head[0] if head else None,
            2,
        )
        for i, row in enumerate(ROWS):
            p, r = tok.encode(row["prompt"]), tok.encode(row["pos_resp"])
            if kind in ("ppo", "prompt"):
                ids, mask = data["prompt_ids"][i], data["prompt_mask"][i]
                assert _real(ids, mask) == head + p and mask.sum() == len(head) + len(p)
                assert mask.tolist() == [0] * (P - mask.sum()) + [1] * int(mask.sum())  # left-padded
                assert (ids[mask == 0] == tok.pad_id).all()
                assert tok.decode(_real(ids, mask)) == row["prompt"]  # decodes back exactly
            if kind == "prompt":
                assert data["answer"][i] == row["answer"]
                continue
            full = head + p + r + [2]
            name, mname = {"ppo": ("pretrain_ids", "pretrain_mask"), "sft": ("input_ids", "attention_mask"),
                           "rm": ("chosen_ids", "chosen_mask")}[kind]  # fmt: skip
            ids, mask = data[name][i], data[mname][i]
            assert ids.tolist() == full + [tok.pad_id] * (T - len(full))
            assert mask.tolist() == [1] * len(full) + [0] * (T - len(full))
            if kind != "rm":  # response tokens and the EOS only
                want = [0] * (len(head) + len(p)) + [1] * (len(r) + 1) + [0] * (T - len(full))
                assert data["loss_mask"][i].tolist() == want
            else:
                rej = head + p + tok.encode(row["neg_resp"]) + [2]
                assert _real(data["rejected_ids"][i], data["rejected_mask"][i]) == rej
            assert tok.decode(_real(ids, mask)) == row["prompt"] + row["pos_resp"]


def test_cli_chat_template_rows_match_transformers(tmp_path, qwen2_dir, llama3_dir, sp_model, capsys):
    src = _jsonl(tmp_path)
    for directory, pad in ((qwen2_dir, []), (llama3_dir, ["--pad_token_id", "1"])):
        out = str(tmp_path / f"{os.path.basename(directory)}.mindrecord")
        argv = ["--tokenizer_name_or_path", directory, "--file_path", src, "--output_path", out, "--mode", "prompt",
                "--max_prompt_length", "64", "--seq_length", "96", "--chat_template", "--quiet", *pad]  # fmt: skip
        assert data_cli.main(argv) == 0
        data = read_dataset(out, "prompt", batch_size=2, shuffle=False).read_all()
        assert json.load(open(out + ".meta.json"))["tokenizer"]["chat_template_applied"] is True
        ref = _hf(directory)
        for i, row in enumerate(ROWS):
            msgs = [{"role": "user", "content": row["prompt"]}]
            want = ref.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            want = list(want["input_ids"] if hasattr(want, "keys") else want)
            assert _real(data["prompt_ids"][i], data["prompt_mask"][i]) == want
    capsys.readouterr()
    # errors: exit 2 and one line, never a traceback
    out = str(tmp_path / "x.mindrecord")
    base = ["--file_path", src, "--output_path", out, "--quiet", "--chat_template"]
    assert data_cli.main(["--tokenizer_name_or_path", sp_model, *base]) == 2
    err = capsys.readouterr().err
    assert "sentencepiece tokenizer has no chat template" in err and "Traceback" not in err
    assert data_cli.main(["--tokenizer_name_or_path", llama3_dir, *base]) == 2
    assert "has no pad_token" in capsys.readouterr().err
    assert not os.path.exists(out)
