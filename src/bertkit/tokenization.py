"""BertTokenizer: BERT's WordPiece tokenizer on Hugging Face `tokenizers`, output-identical to transformers'."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from bertkit.checkpoint import resolve_model_dir
from bertkit.errors import UserError

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

# transformers writes int(1e30) as model_max_length when a checkpoint does not know its limit; anything this
# large is a sentinel, and 512 (BERT's position table) is the only limit a BERT model can actually take.
_SENTINEL_MAX_LENGTH = 10**6
_DEFAULT_MAX_LENGTH = 512

_PADDING = {False: "do_not_pad", True: "longest", "do_not_pad": "do_not_pad", "longest": "longest",
            "max_length": "max_length"}
_TRUNCATION = {None: "do_not_truncate", False: "do_not_truncate", True: "longest_first",
               "do_not_truncate": "do_not_truncate", "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second"}
# Settings saved in and read from tokenizer_config.json under these names (model_max_length is read apart).
_FLAGS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "clean_up_tokenization_spaces")
# The order transformers lists BERT's special tokens in (`all_special_ids`) and adds missing ones in.
_SPECIAL_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

TextInput = str | Sequence[str]


class CharSpan(NamedTuple):
    """A token's characters in its original string: text[start:end]."""

    start: int
    end: int


class BatchEncoding(dict):
    """The tokenizer's output: a dict of `input_ids`, `attention_mask`, ... that also reads as attributes,
    with the `tokenizers.Encoding` of every row for word, sequence and character alignment."""

    def __init__(self, data: Mapping[str, Any], encodings: list[Encoding]):
        super().__init__(data)
        self._encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def encodings(self) -> list[Encoding]:
        return self._encodings

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encodings[batch_index].tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encodings[batch_index].sequence_ids

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None,
                      sequence_index: int = 0) -> int | None:
        batch_index, char_index = (0, batch_or_char_index) if char_index is None else (batch_or_char_index, char_index)
        return self._encodings[batch_index].char_to_token(char_index, sequence_index)

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        batch_index, token_index = ((0, batch_or_token_index) if token_index is None
                                    else (batch_or_token_index, token_index))
        span = self._encodings[batch_index].token_to_chars(token_index)
        return CharSpan(*span) if span is not None else None

    def to(self, device: Any) -> BatchEncoding:
        """Move every tensor to `device` (in place, like transformers) and return self."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self


class BertTokenizer:
    """BERT's tokenizer: BertNormalizer, BertPreTokenizer, WordPiece, `[CLS] A [SEP] B [SEP]`.

    The vocabulary comes from `vocab_file` (vocab.txt), `tokenizer_file` (the WordPiece vocab inside a
    tokenizer.json) or `vocab` (token -> id); the normalisation settings always come from the arguments,
    as transformers does, so `do_lower_case=False` on an uncased tokenizer.json gives a cased tokenizer.
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        *,
        tokenizer_file: str | os.PathLike | None = None,
        vocab: Mapping[str, int] | None = None,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,  # None: strip when lowercasing, as the original BERT
        tokenize_chinese_chars: bool = True,
        model_max_length: int = _DEFAULT_MAX_LENGTH,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        clean_up_tokenization_spaces: bool = False,  # transformers 5's default for BERT
    ):
        if vocab is None:
            vocab = _read_vocab(vocab_file, tokenizer_file)
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token

        backend = _wordpiece_backend(WordPiece(dict(vocab), unk_token=unk_token, continuing_subword_prefix="##",
                                               max_input_chars_per_word=100),
                                     do_lower_case, strip_accents, tokenize_chinese_chars)
        # Added as special tokens so they are matched before normalisation and never split ("[MASK]" stays whole).
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                    for token in self.all_special_tokens])
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, backend.token_to_id(cls_token)), (sep_token, backend.token_to_id(sep_token))],
        )
        self._backend = backend
        # Padding and truncation are backend state, set for each call and cleared after it (so code that uses
        # `backend_tokenizer` directly never inherits them); the lock keeps concurrent calls apart.
        self._lock = threading.Lock()

    # ---- loading and saving ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides: Any) -> BertTokenizer:
        """Load from a model directory (or a name `bertkit.checkpoint.resolve_model_dir` knows): the settings
        from tokenizer_config.json, the vocab from tokenizer.json, else vocab.txt. `overrides` win over the file."""
        model_dir = resolve_model_dir(name_or_path)
        files = {}
        if (model_dir / TOKENIZER_FILE).is_file():
            files["tokenizer_file"] = model_dir / TOKENIZER_FILE
        elif (model_dir / VOCAB_FILE).is_file():
            files["vocab_file"] = model_dir / VOCAB_FILE
        else:
            raise UserError(
                f"no tokenizer vocabulary in {model_dir}: looked for {TOKENIZER_FILE} and {VOCAB_FILE}")
        return cls(**files, **{**_read_settings(model_dir), **overrides})

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[Path]:
        """Write vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json, readable by
        this class and by transformers' AutoTokenizer. Returns the written paths."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / VOCAB_FILE, out / TOKENIZER_FILE, out / TOKENIZER_CONFIG_FILE, out / SPECIAL_TOKENS_MAP_FILE]
        vocab = sorted(self._backend.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
        if [i for _, i in vocab] != list(range(len(vocab))):
            raise UserError("vocab.txt needs ids 0..n-1 without gaps; this vocabulary has gaps")
        paths[0].write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
        self._backend.save(str(paths[1]))
        special = {name: getattr(self, name) for name in _SPECIAL_NAMES}
        config = {"tokenizer_class": "BertTokenizer", "model_max_length": self.model_max_length,
                  **{name: getattr(self, name) for name in _FLAGS}, **special}
        paths[2].write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths[3].write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return paths

    @classmethod
    def train(
        cls,
        files: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        vocab_size: int = 30522,
        *,
        texts: Iterable[str] | None = None,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        min_frequency: int = 2,
        limit_alphabet: int = 1000,
        show_progress: bool = False,
    ) -> BertTokenizer:
        """Train a WordPiece vocabulary on text `files` (UTF-8) or on an iterable of strings (`texts=`), with
        BERT's normalisation; [PAD] [UNK] [CLS] [SEP] [MASK] get ids 0..4."""
        if (files is None) == (texts is None):
            raise UserError("BertTokenizer.train needs exactly one of `files` or `texts`")
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        settings = dict(do_lower_case=do_lower_case, strip_accents=strip_accents,
                        tokenize_chinese_chars=tokenize_chinese_chars)
        # Trained with the very normalizer and pre-tokenizer it will run with, so each Chinese character
        # is its own word here as it is when encoding.
        backend = _wordpiece_backend(WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"), **settings)
        trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, limit_alphabet=limit_alphabet,
                                   special_tokens=special, continuing_subword_prefix="##",
                                   show_progress=show_progress)
        if texts is not None:
            backend.train_from_iterator(texts, trainer=trainer)
        else:
            paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
            backend.train([str(path) for path in paths], trainer=trainer)
        return cls(vocab=backend.get_vocab(with_added_tokens=False), **settings)

    # ---- vocabulary ----------------------------------------------------------------------------------------

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._backend

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Size of the WordPiece vocabulary, without added tokens."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def unk_token_id(self) -> int:
        return self._backend.token_to_id(self.unk_token)

    @property
    def sep_token_id(self) -> int:
        return self._backend.token_to_id(self.sep_token)

    @property
    def pad_token_id(self) -> int:
        return self._backend.token_to_id(self.pad_token)

    @property
    def cls_token_id(self) -> int:
        return self._backend.token_to_id(self.cls_token)

    @property
    def mask_token_id(self) -> int:
        return self._backend.token_to_id(self.mask_token)

    @property
    def all_special_tokens(self) -> list[str]:
        return [getattr(self, name) for name in _SPECIAL_NAMES]

    @property
    def all_special_ids(self) -> list[int]:
        return [self._backend.token_to_id(token) for token in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            found = self._backend.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Tokens back into text by the tokenizer's WordPiece decoder, as transformers does: "##" pieces glued to
        the one before, and "." "," "?" "!" to the token before them."""
        if self._backend.decoder is None:
            return " ".join(tokens).replace(" ##", "").strip()
        return self._backend.decoder.decode(list(tokens))

    # ---- encoding ------------------------------------------------------------------------------------------

    def __call__(
        self,
        text: TextInput,
        text_pair: TextInput | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        return_tensors: str | None = None,
        return_token_type_ids: bool = True,
        return_attention_mask: bool = True,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        return_overflowing_tokens: bool = False,
        pad_to_multiple_of: int | None = None,
        is_split_into_words: bool = False,
    ) -> BatchEncoding:
        """Encode one text, a pair, or a batch of either, with transformers' semantics for every argument.

        A single text gives flat lists (or (1, T) tensors); a batch gives one row per text, plus one row per
        overflowing window when `return_overflowing_tokens` (then `overflow_to_sample_mapping` names its text).
        With `is_split_into_words`, a text is a list of words (a batch, a list of such lists) and `word_ids` index
        those words.
        """
        if return_tensors not in (None, "pt", "np"):
            raise UserError(f"return_tensors={return_tensors!r}; expected 'pt', 'np' or None")
        padding_strategy, truncation_strategy, max_length = self._strategies(
            padding, truncation, max_length, pad_to_multiple_of)
        if is_split_into_words:
            batched = bool(text) and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
        if batched:
            if isinstance(text_pair, str):
                raise UserError("when `text` is a batch, `text_pair` must be a list of the same length, not a string")
            if text_pair is not None and len(text_pair) != len(text):
                raise UserError(f"`text` has {len(text)} texts but `text_pair` has {len(text_pair)}")
            inputs = list(zip(text, text_pair)) if text_pair is not None else list(text)
        else:
            # An empty pair reads as no pair at all, exactly as in transformers.
            inputs = [(text, text_pair)] if text_pair else [text]

        encodings = self._encode_batch(inputs, add_special_tokens, padding_strategy, truncation_strategy,
                                       max_length, stride, pad_to_multiple_of, is_split_into_words)

        rows: list[Encoding] = []
        sample_of_row: list[int] = []
        for sample, encoding in enumerate(encodings):
            windows = [encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding]
            rows += windows
            sample_of_row += [sample] * len(windows)
        fields = [("input_ids", True, lambda e: e.ids),
                  ("token_type_ids", return_token_type_ids, lambda e: e.type_ids),
                  ("attention_mask", return_attention_mask, lambda e: e.attention_mask),
                  ("special_tokens_mask", return_special_tokens_mask, lambda e: e.special_tokens_mask),
                  ("offset_mapping", return_offsets_mapping, lambda e: e.offsets)]
        data: dict[str, Any] = {key: [get(e) for e in rows] for key, wanted, get in fields if wanted}
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_of_row
        if return_tensors is not None:
            data = {key: _to_tensor(key, value, return_tensors) for key, value in data.items()}
        elif not batched and not return_overflowing_tokens:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, rows)

    def encode(self, text: str, text_pair: str | None = None, **kwargs: Any) -> list[int]:
        """The input ids of one text (or pair); takes `__call__`'s keyword arguments."""
        return self(text, text_pair, **kwargs)["input_ids"]

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of `text`, without [CLS]/[SEP]."""
        return self._encode_batch([text], False, "do_not_pad", "do_not_truncate", None, 0, None)[0].tokens

    def decode(self, ids: Any, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str | list[str]:
        """Text of one sequence of ids (list, array or tensor); a 2-D input gives one string per row."""
        ids = _to_py(ids)
        if isinstance(ids, int):
            ids = [ids]
        if ids and isinstance(ids[0], list):
            return self.batch_decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
        return self._clean_up(self._backend.decode(ids, skip_special_tokens=skip_special_tokens),
                              clean_up_tokenization_spaces)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        texts = self._backend.decode_batch(_to_py(sequences), skip_special_tokens=skip_special_tokens)
        return [self._clean_up(text, clean_up_tokenization_spaces) for text in texts]

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FLAGS[:3] + ("model_max_length",))
        return f"BertTokenizer(vocab_size={self.vocab_size}, {settings})"

    # ---- internals -----------------------------------------------------------------------------------------

    def _strategies(self, padding: bool | str, truncation: bool | str | None, max_length: int | None,
                    pad_to_multiple_of: int | None) -> tuple[str, str, int | None]:
        """transformers' reading of padding/truncation/max_length (`_get_padding_truncation_strategies`)."""
        if padding not in _PADDING:
            raise UserError(f"padding={padding!r}; expected True, False, 'longest', 'max_length' or 'do_not_pad'")
        if truncation not in _TRUNCATION:
            raise UserError(f"truncation={truncation!r}; expected True, False, 'longest_first', 'only_first', "
                            "'only_second' or 'do_not_truncate'")
        # A bare max_length means "truncate to it", an old transformers convention users rely on.
        if max_length is not None and padding is False and truncation is None:
            truncation = True
        padding_strategy, truncation_strategy = _PADDING[padding], _TRUNCATION[truncation]
        if max_length is None and (padding_strategy == "max_length" or truncation_strategy != "do_not_truncate"):
            max_length = self.model_max_length
        if (truncation_strategy != "do_not_truncate" and padding_strategy != "do_not_pad"
                and pad_to_multiple_of is not None and max_length % pad_to_multiple_of != 0):
            raise UserError(f"truncation length {max_length} is not a multiple of pad_to_multiple_of="
                            f"{pad_to_multiple_of}; padding would exceed it")
        return padding_strategy, truncation_strategy, max_length

    def _encode_batch(self, inputs: list, add_special_tokens: bool, padding: str, truncation: str,
                      max_length: int | None, stride: int, pad_to_multiple_of: int | None,
                      is_pretokenized: bool = False) -> list[Encoding]:
        with self._lock:
            if truncation == "do_not_truncate":
                self._backend.no_truncation()
            else:
                self._backend.enable_truncation(max_length, stride=stride, strategy=truncation, direction="right")
            if padding == "do_not_pad":
                self._backend.no_padding()
            else:
                self._backend.enable_padding(
                    direction="right", pad_id=self.pad_token_id, pad_type_id=0, pad_token=self.pad_token,
                    length=max_length if padding == "max_length" else None, pad_to_multiple_of=pad_to_multiple_of)
            try:
                return self._backend.encode_batch(inputs, is_pretokenized=is_pretokenized,
                                                  add_special_tokens=add_special_tokens)
            except BaseException as err:
                # The Rust side raises a bare Exception when only_first/only_second cannot reach max_length, and
                # panics (a BaseException) when a stride does not fit in a window; both are the caller's to fix.
                if str(err).startswith("Truncation error"):
                    raise UserError(f"truncation={truncation!r} cannot fit max_length={max_length}: {err}; use "
                                    "truncation='longest_first' or a larger max_length") from None
                if type(err).__name__ == "PanicException" and "stride" in str(err):
                    raise UserError(f"stride={stride} does not fit in windows of max_length={max_length}: the "
                                    "stride must be smaller than the tokens each window keeps of the truncated "
                                    "text") from None
                if isinstance(err, TypeError) and (bad := _lone_surrogate(inputs)) is not None:
                    # The Rust side takes only strings it can encode as UTF-8, and says "TextEncodeInput must be
                    # Union[...]" of one with a lone surrogate (JSON's "\ud800" decodes to one).
                    row, char = bad
                    raise UserError(f"text {row + 1} of {len(inputs)} holds a lone surrogate \\u{ord(char):04x} (half "
                                    "of a UTF-16 pair), which is not a character and cannot be tokenized") from None
                raise
            finally:
                self._backend.no_truncation()
                self._backend.no_padding()

    def _clean_up(self, text: str, clean_up_tokenization_spaces: bool | None) -> str:
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return _clean_up_tokenization(text) if clean_up_tokenization_spaces else text


def _wordpiece_backend(model: WordPiece, do_lower_case: bool, strip_accents: bool | None,
                       tokenize_chinese_chars: bool) -> Tokenizer:
    """A `tokenizers.Tokenizer` with BERT's normalizer, pre-tokenizer and decoder around `model`."""
    backend = Tokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=tokenize_chinese_chars, strip_accents=strip_accents,
        lowercase=do_lower_case)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization`: drop the spaces decoding leaves before punctuation and contractions."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text


def _read_vocab(vocab_file: str | os.PathLike | None, tokenizer_file: str | os.PathLike | None) -> dict[str, int]:
    """token -> id from a tokenizer.json's WordPiece model, else from vocab.txt (one token a line)."""
    if tokenizer_file is not None:
        with open(tokenizer_file, encoding="utf-8") as handle:
            model = json.load(handle).get("model", {})
        if model.get("type") != "WordPiece":
            raise UserError(
                f"{tokenizer_file}: model type is {model.get('type')!r}, a BERT tokenizer needs 'WordPiece'")
        return model["vocab"]
    if vocab_file is not None:
        if not Path(vocab_file).is_file():
            raise FileNotFoundError(f"vocabulary file not found: {vocab_file}")
        # The `tokenizers` reader, as transformers uses it for a vocab.txt, so odd lines are read alike.
        return WordPiece.read_file(str(vocab_file))
    raise UserError("BertTokenizer needs a vocabulary: pass vocab_file, tokenizer_file or vocab")


def _read_settings(model_dir: Path) -> dict[str, Any]:
    """BertTokenizer arguments from tokenizer_config.json, with special_tokens_map.json filling in tokens."""
    config = _read_json(model_dir / TOKENIZER_CONFIG_FILE)
    special_map = _read_json(model_dir / SPECIAL_TOKENS_MAP_FILE)
    settings = {name: config[name] for name in _FLAGS if name in config}
    max_length = config.get("model_max_length", config.get("max_len"))
    if max_length is not None:
        settings["model_max_length"] = _DEFAULT_MAX_LENGTH if max_length > _SENTINEL_MAX_LENGTH else int(max_length)
    for name in _SPECIAL_NAMES:
        token = config.get(name, special_map.get(name))
        if token is not None:
            # Saved as "[CLS]" or as a serialised AddedToken {"content": "[CLS]", ...}.
            settings[name] = token["content"] if isinstance(token, dict) else token
    return settings


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _to_py(ids: Any) -> Any:
    """Lists from tensors and arrays, so ids decode whatever holds them."""
    return ids.tolist() if hasattr(ids, "tolist") else ids


def _to_tensor(key: str, rows: list, return_tensors: str) -> Any:
    """(B, T) int64 tensor of `rows` ((B, T, 2) for offsets; (B,) for the sample mapping)."""
    if key != "overflow_to_sample_mapping" and len({len(row) for row in rows}) > 1:
        raise UserError(f"cannot make a tensor of `{key}`: its sequences have different lengths "
                        f"({min(map(len, rows))} to {max(map(len, rows))}); pass padding=True (and truncation=True "
                        "when a text is longer than max_length)")
    if return_tensors == "pt":
        return torch.tensor(rows, dtype=torch.long)
    return np.array(rows, dtype=np.int64)


def _lone_surrogate(inputs: list) -> tuple[int, str] | None:
    """(0-based row, the character) of the first lone surrogate in a batch of texts, pairs or word lists."""
    def strings(item):
        if isinstance(item, str):
            yield item
        elif isinstance(item, (list, tuple)):
            for part in item:
                yield from strings(part)

    for row, item in enumerate(inputs):
        for s in strings(item):
            try:
                s.encode("utf-8")
            except UnicodeEncodeError as e:
                return row, s[e.start]
    return None
