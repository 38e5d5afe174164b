"""Hugging Face `tokenizer.json` tokenizers (byte-level BPE as Llama-3 and Qwen2 ship), their chat templates,
and `load_tokenizer`, the one loader that returns the right tokenizer class for a path.

Read with the `tokenizers` library (not transformers). Special tokens come from `tokenizer_config.json`, with
`special_tokens_map.json` filling the names the config lacks; a value is a string, `{"content": ...}` or null:

| model        | bos_token           | eos_token (instruct / base)       | pad_token       | BOS added        |
| ------------ | ------------------- | --------------------------------- | --------------- | ---------------- |
| Llama-3.x    | <|begin_of_text|>   | <|eot_id|> / <|end_of_text|>       | none: give one  | by post-processor|
| Qwen2 / 2.5  | null                | <|im_end|> / <|endoftext|>        | <|endoftext|>   | never            |

Whether sequences start with BOS (`add_bos`) is the config's `add_bos_token` when it says so, else what
`tokenizer.json`'s post-processor does (as transformers 5 reads it); a null bos_token means no BOS.
Text is encoded without the post-processor; mindrlhf's layouts add BOS/EOS themselves (`schemas`).

The chat template (`chat_template.jinja` in the directory, else `tokenizer_config.json`'s `chat_template`) is
rendered with jinja2 in a sandbox as transformers' `apply_chat_template(messages, add_generation_prompt=True)`
does, with `messages = [{"role": "user", "content": prompt}]`.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Union

from mindrlhf.data.schemas import DataError
from mindrlhf.data.tokenizer import HF_TOKENIZER_FILE, LlamaTokenizer, TokenizerBase, resolve_tokenizer_path

CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")

PathLike = Union[str, "os.PathLike[str]"]
Tokenizer = Union[LlamaTokenizer, "HFTokenizer"]


def load_tokenizer(name_or_path: PathLike, pad_token_id: Optional[int] = None) -> Tokenizer:
    """The tokenizer at `name_or_path`: a SentencePiece `tokenizer.model` (LlamaTokenizer), a Hugging Face
    `tokenizer.json` (HFTokenizer), or a directory holding one (tokenizer.model first, as before).

    `pad_token_id` overrides the pad id; None takes the tokenizer's (0 for SentencePiece, as Llama2's
    configs; `pad_token` from tokenizer_config.json for Hugging Face). Raises DataError naming the path.
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "tokenizer.model")):
        if os.path.isfile(os.path.join(path, HF_TOKENIZER_FILE)):
            return HFTokenizer(path, pad_token_id=pad_token_id)
    elif os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
        if head.startswith(b"{"):  # JSON: a tokenizers file; a SentencePiece model is a binary protobuf
            return HFTokenizer(path, pad_token_id=pad_token_id)
    path = resolve_tokenizer_path(path)  # raises the not-found / no-tokenizer errors
    return LlamaTokenizer(path, pad_token_id=0 if pad_token_id is None else int(pad_token_id))


def _tokenizers():
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - an install problem, not a code path
        raise ImportError("tokenizers is not installed: pip install tokenizers") from None
    return tokenizers


def _read_json(path: str) -> Dict[str, Any]:
    """A JSON object file, {} when absent; a broken one is a DataError naming the line."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f"{path}:{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else path
        raise DataError(f"not valid JSON ({exc}); restore it from the model's repository", where) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path)
    return obj


def _token_text(value: Any) -> Optional[str]:
    """A special-token entry as its text: "x", {"content": "x", ...} or None."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


class HFTokenizer(TokenizerBase):
    """A Hugging Face `tokenizer.json` with the interface of LlamaTokenizer (encode, decode, *_id, ...).

    `bos_id` is None when the model has no BOS (Qwen2); `unk_id` is None for byte-level BPE, which has no
    unknown token. `decode` drops special tokens, as LlamaTokenizer drops BOS/EOS.
    """

    kind = "huggingface"

    def __init__(self, path: PathLike, pad_token_id: Optional[int] = None):
        path = os.fspath(path)
        self.model_file = os.path.join(path, HF_TOKENIZER_FILE) if os.path.isdir(path) else path
        self.directory = os.path.dirname(os.path.abspath(self.model_file))
        with open(self.model_file, "rb") as f:
            blob = f.read()
        self.sha256 = hashlib.sha256(blob).hexdigest()
        try:
            self.tk = _tokenizers().Tokenizer.from_str(blob.decode("utf-8"))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise DataError(
                f"not a Hugging Face tokenizers file ({str(exc)[:200]}); restore tokenizer.json from the "
                "model's repository",
                self.model_file,
            ) from None
        self.vocab_size = int(self.tk.get_vocab_size(with_added_tokens=True))
        self.config_file = os.path.join(self.directory, CONFIG_FILE)
        config = _read_json(self.config_file)
        fallback = _read_json(os.path.join(self.directory, SPECIAL_TOKENS_FILE))
        # the text of each special token (None when absent or null); the config wins, the map fills gaps
        self.special_tokens = {
            name: _token_text(config[name] if name in config else fallback.get(name))
            for name in SPECIAL_NAMES
        }
        self.bos_id, self.eos_id, pad, self.unk_id = (self._id(name) for name in SPECIAL_NAMES)
        if self.eos_id is None:
            raise DataError(
                f"no eos_token in {CONFIG_FILE} or {SPECIAL_TOKENS_FILE}; copy them from the model's Hugging "
                'Face repository, or add "eos_token": "<the end-of-sequence token>" to ' + CONFIG_FILE,
                self.directory,
                "eos_token",
            )
        if pad_token_id is None and pad is None:
            raise DataError(
                f"{CONFIG_FILE} has no pad_token (Llama-3 ships none); pass --pad_token_id, e.g. the EOS id "
                f"{self.eos_id} (masks are stored, so the pad id is never read as a token)",
                self.directory,
                "pad_token",
            )
        self.pad_id = int(pad if pad_token_id is None else pad_token_id)
        if not 0 <= self.pad_id < self.vocab_size:
            raise DataError(
                f"pad_token_id {self.pad_id} is outside the vocabulary [0, {self.vocab_size})",
                field="pad_token_id",
            )
        declared = config.get("add_bos_token")
        self.add_bos = self.bos_id is not None and (
            declared if isinstance(declared, bool) else self._post_processor_adds_bos()
        )
        self.chat_template = self._find_chat_template(config)

    def _id(self, name: str) -> Optional[int]:
        text = self.special_tokens[name]
        if text is None:
            return None
        token_id = self.tk.token_to_id(text)
        if token_id is None:
            raise DataError(
                f"{name} {text!r} is not in {self.model_file}'s vocabulary; the tokenizer files do not belong "
                "together: copy them all from the same model repository",
                self.config_file,
                name,
            )
        return int(token_id)

    def _post_processor_adds_bos(self) -> bool:
        plain = self.tk.encode("a", add_special_tokens=False).ids
        full = self.tk.encode("a", add_special_tokens=True).ids
        return len(full) > len(plain) and full[0] == self.bos_id

    def _find_chat_template(self, config: Dict[str, Any]) -> Optional[str]:
        """`chat_template.jinja` (transformers >= 4.47 saves it apart), else the config's `chat_template`:
        a string, or a list of `{"name", "template"}` of which "default" is the one used."""
        jinja_file = os.path.join(self.directory, CHAT_TEMPLATE_FILE)
        if os.path.isfile(jinja_file):
            with open(jinja_file, encoding="utf-8") as f:
                return f.read()
        template = config.get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        return template if isinstance(template, str) and template.strip() else None

    @classmethod
    def from_pretrained(cls, name_or_path: PathLike, pad_token_id: Optional[int] = None) -> HFTokenizer:
        """Load from a `tokenizer.json` file or a directory containing one."""
        return cls(name_or_path, pad_token_id=pad_token_id)

    def __repr__(self) -> str:
        return (
            f"HFTokenizer({self.model_file!r}, vocab_size={self.vocab_size}, unk={self.unk_id}, "
            f"bos={self.bos_id}, eos={self.eos_id}, pad={self.pad_id}, add_bos={self.add_bos})"
        )

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> List[int]:
        """Token ids of `text` (special-token texts in it become their ids), optionally with BOS/EOS.
        `add_bos` adds BOS only when this tokenizer's sequences start with one (`self.add_bos`)."""
        ids = self.tk.encode(text, add_special_tokens=False).ids
        return self._head(add_bos) + ids + ([self.eos_id] if add_eos else [])

    def encode_batch(
        self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False
    ) -> List[List[int]]:
        """`encode` over a list, in the tokenizers library's Rust threads."""
        if not texts:
            return []
        head, tail = self._head(add_bos), [self.eos_id] if add_eos else []
        return [head + e.ids + tail for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens (BOS, EOS, chat markers) dropped. Pad ids are not: pass real tokens."""
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=True)

    def apply_chat_template(self, prompt: str) -> str:
        """`prompt` as the one user turn of the chat template, ending with the assistant's header."""
        if self.chat_template is None:
            raise DataError(
                f"{CONFIG_FILE} has no chat_template (nor is there a {CHAT_TEMPLATE_FILE}); a base model's "
                "tokenizer has none: use the instruct model's tokenizer files, or drop --chat_template",
                self.directory,
                "chat_template",
            )
        try:
            return _compile(self.chat_template).render(
                messages=[{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                tools=None,
                documents=None,
                **{k: v for k, v in self.special_tokens.items() if v is not None},
            )
        except Exception as exc:  # jinja2's TemplateError, or raise_exception() from inside the template
            raise DataError(
                f"the chat template failed: {type(exc).__name__}: {exc}; fix chat_template or drop "
                "--chat_template",
                self.config_file,
                "chat_template",
            ) from None

    def encode_chat_prompts(self, prompts: Sequence[str]) -> List[List[int]]:
        """Token ids of each prompt inside the chat template, without a leading BOS: the layouts add the one
        BOS, so a template that writes `{{ bos_token }}` itself (Llama-3) does not get it twice."""
        ids = self.encode_batch([self.apply_chat_template(p) for p in prompts])
        if self.add_bos:
            ids = [seq[1:] if seq[:1] == [self.bos_id] else seq for seq in ids]
        return ids

    def describe(self) -> dict:
        out = super().describe()
        out["chat_template"] = self.chat_template is not None
        if os.path.isfile(self.config_file):
            with open(self.config_file, "rb") as f:
                out["config_sha256"] = hashlib.sha256(f.read()).hexdigest()
        return out


@functools.lru_cache(maxsize=8)
def _compile(source: str):
    """A chat template compiled in jinja2's immutable sandbox, with the helpers transformers gives templates."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # pragma: no cover - an install problem, not a code path
        raise ImportError("jinja2 is not installed: pip install jinja2") from None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(source)
