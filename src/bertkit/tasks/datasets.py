"""The public datasets bertkit knows by name: where their files live, how to read them, and how to fetch them.

Files live under the data directory (`BERTKIT_DATA_DIR`, else `../shared/data` from the working directory) as
the project's shared/data/README.md lays them out. Splits are "train", "dev" (alias "validation") and "test";
where a dataset lacks one, another file stands in, said on the entry: MRPC's "dev" is its test file (the
original corpus has no dev split), CMRC 2018's "train" is its trial set (the official train set is not here).
MSRA NER has dev and test only.
"""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from bertkit import settings
from bertkit.errors import UserError
from bertkit.tasks.examples import QAExample, TextExample, TokenExample
from bertkit.tasks.readers import read_conll, read_sentence_per_line, read_squad, read_text_examples
from bertkit.tasks.tags import to_iob2, validate_tags

TEXT, TOKENS, QA = "text-classification", "token-classification", "question-answering"
SPLIT_ALIASES = {"validation": "dev", "valid": "dev"}
DOWNLOAD_TIMEOUT_S = 10  # per connection attempt and read: an offline machine fails fast


@dataclass(frozen=True)
class Download:
    url: str
    unpack: Callable[[bytes], dict[str, bytes]]  # the downloaded bytes -> {file name in the dataset folder: bytes}


@dataclass(frozen=True)
class DatasetInfo:
    task: str  # TEXT | TOKENS | QA
    language: str  # "en" | "zh"
    folder: str  # under the data directory
    splits: dict[str, str]  # split name -> file name in the folder
    read: Callable[..., list]  # read(path, skip_bad_rows=...) -> examples
    labels: tuple[str, ...] | None = None  # classes, or NER's IOB2 tags; None for regression and QA
    scheme: str | None = None  # NER: the files' tag scheme; tags are checked against it and turned into IOB2
    downloads: tuple[Download, ...] = ()  # empty where there is no public copy in this format
    label_names: tuple[str, ...] | None = None  # names for `labels`, in order, so predictions print words
    main_metric: str | None = None  # the metric that picks the best checkpoint (None: the task's default)

    @property
    def is_regression(self) -> bool:
        return self.task == TEXT and self.labels is None


@dataclass
class DatasetSplit:
    name: str
    split: str
    task: str
    examples: list[TextExample] | list[TokenExample] | list[QAExample]
    labels: list[str] | None  # label names (NER: IOB2 tags); None for regression and QA
    is_regression: bool
    language: str
    path: Path
    main_metric: str | None = None


def iob2_labels(entity_types: str) -> tuple[str, ...]:
    """"LOC PER" -> ("B-LOC", "B-PER", "I-LOC", "I-PER", "O"): a dataset's tag set, sorted."""
    return tuple(sorted(["O", *(f"{p}-{t}" for t in entity_types.split() for p in "BI")]))


def unzip(members: dict[str, str]) -> Callable[[bytes], dict[str, bytes]]:
    """An unpacker that takes {file name: member of the zip} out of a downloaded zip."""
    def unpack(data: bytes) -> dict[str, bytes]:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return {name: z.read(member) for name, member in members.items()}
    return unpack


def save_as(name: str) -> Callable[[bytes], dict[str, bytes]]:
    return lambda data: {name: data}


def split_squad_dev(data: bytes) -> dict[str, bytes]:
    """SQuAD v1.1's official dev set split by article, as shared/data has it: train = articles 0-37, dev = 38-42
    (the official train set is not used; the last articles are kept out)."""
    squad = json.loads(data)
    return {name: json.dumps({"version": squad["version"], "data": squad["data"][lo:hi]}).encode()
            for name, lo, hi in (("train.json", 0, 38), ("dev.json", 38, 43))}


GLUE = "https://dl.fbaipublicfiles.com/glue/data"
MRPC = "https://dl.fbaipublicfiles.com/senteval/senteval_data"  # the original files, as GLUE's script fetches them
WNUT17 = "https://raw.githubusercontent.com/leondz/emerging_entities_17/master"
CMRC2018 = "https://raw.githubusercontent.com/ymcui/cmrc2018/master/squad-style-data"

DATASETS: dict[str, DatasetInfo] = {
    "sst2": DatasetInfo(
        TEXT, "en", "sst2", {"train": "train.tsv", "dev": "dev.tsv"}, read_text_examples, labels=("0", "1"),
        label_names=("negative", "positive"),
        downloads=(Download(f"{GLUE}/SST-2.zip",
                            unzip({"train.tsv": "SST-2/train.tsv", "dev.tsv": "SST-2/dev.tsv"})),)),
    "stsb": DatasetInfo(
        TEXT, "en", "stsb", {"train": "train.tsv", "dev": "dev.tsv"}, read_text_examples, main_metric="spearman",
        downloads=(Download(f"{GLUE}/STS-B.zip",
                            unzip({"train.tsv": "STS-B/train.tsv", "dev.tsv": "STS-B/dev.tsv"})),)),
    "mrpc": DatasetInfo(
        TEXT, "en", "mrpc", {"train": "train.txt", "dev": "test.txt", "test": "test.txt"},
        partial(read_text_examples, text_column="#1 String", pair_column="#2 String", label_column="Quality"),
        labels=("0", "1"), label_names=("not_equivalent", "equivalent"), main_metric="f1",
        downloads=(Download(f"{MRPC}/msr_paraphrase_train.txt", save_as("train.txt")),
                   Download(f"{MRPC}/msr_paraphrase_test.txt", save_as("test.txt")))),
    "afqmc": DatasetInfo(  # s1 <TAB> s2 <TAB> label, no header; CLUE publishes JSON lines, so no download
        TEXT, "zh", "zh/afqmc", {"train": "train.txt", "dev": "dev.txt"},
        partial(read_text_examples, has_header=False), labels=("0", "1"), label_names=("different", "same")),
    "conll2003": DatasetInfo(  # Reuters text: no public copy to fetch
        TOKENS, "en", "conll2003", {"train": "train.txt", "dev": "valid.txt"}, read_conll,
        labels=iob2_labels("LOC MISC ORG PER"), scheme="IOB2"),
    "wnut17": DatasetInfo(
        TOKENS, "en", "wnut17", {"train": "train.conll", "dev": "dev.conll"}, read_conll,
        labels=iob2_labels("corporation creative-work group location person product"), scheme="IOB2",
        downloads=(Download(f"{WNUT17}/wnut17train.conll", save_as("train.conll")),
                   Download(f"{WNUT17}/emerging.dev.conll", save_as("dev.conll")))),
    "weibo_ner": DatasetInfo(
        TOKENS, "zh", "zh/weibo_ner", {"train": "train.bmes", "dev": "dev.bmes", "test": "test.bmes"}, read_conll,
        labels=iob2_labels("GPE.NAM GPE.NOM LOC.NAM LOC.NOM ORG.NAM ORG.NOM PER.NAM PER.NOM"), scheme="BMES"),
    "resume_ner": DatasetInfo(
        TOKENS, "zh", "zh/resume_ner", {"train": "train.bmes", "dev": "dev.bmes", "test": "test.bmes"},
        read_sentence_per_line, labels=iob2_labels("CONT EDU LOC NAME ORG PRO RACE TITLE"), scheme="BMES"),
    "msra_ner": DatasetInfo(  # no train split here
        TOKENS, "zh", "zh/msra_ner", {"dev": "dev.ner", "test": "test.ner"}, read_conll,
        labels=iob2_labels("NR NS NT"), scheme="BMES"),
    "squad": DatasetInfo(
        QA, "en", "squad", {"train": "train.json", "dev": "dev.json"}, read_squad,
        downloads=(Download("https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json", split_squad_dev),)),
    "cmrc2018": DatasetInfo(
        QA, "zh", "zh/cmrc2018", {"train": "trial.json", "trial": "trial.json", "dev": "dev.json"}, read_squad,
        downloads=(Download(f"{CMRC2018}/cmrc2018_trial.json", save_as("trial.json")),
                   Download(f"{CMRC2018}/cmrc2018_dev.json", save_as("dev.json")))),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def _tags_as_iob2(example: TokenExample, scheme: str) -> TokenExample:
    validate_tags(example.tags, scheme, example.source)
    return TokenExample(example.tokens, to_iob2(example.tags), example.source)


def _check_labels(examples: list, labels: tuple[str, ...], name: str) -> None:
    """A label outside the dataset's set means a wrong or damaged file: an error naming the row."""
    known = set(labels)
    for e in examples:
        unknown = [v for v in (e.tags if isinstance(e, TokenExample) else [e.label]) if v not in known]
        if unknown:
            raise UserError(f"{e.source}: label {unknown[0]!r} is not one of {name}'s labels ({', '.join(labels)})")


def load_dataset(name: str, split: str, data_dir: str | Path | None = None, skip_bad_rows: bool = False
                 ) -> DatasetSplit:
    """One split of a named dataset, read, checked and (NER) converted to IOB2 tags."""
    info = dataset_info(name)
    split = SPLIT_ALIASES.get(split, split)
    if split not in info.splits:
        raise UserError(f"{name} has no {split!r} split here; its splits are {', '.join(info.splits)}")
    root = settings.data_dir(data_dir)
    hint = f"`bertkit data download {name}`" if info.downloads else f"copy {name}'s files into {root / info.folder}/"
    if not root.is_dir():
        raise UserError(f"{root}: no data directory; set BERTKIT_DATA_DIR to the folder that holds the datasets, "
                        f"or {hint}")
    path = root / info.folder / info.splits[split]
    if not path.is_file():
        raise UserError(f"{path}: no such file; set BERTKIT_DATA_DIR to the folder that holds {info.folder}/, "
                        f"or {hint}")
    examples = info.read(path, skip_bad_rows=skip_bad_rows)
    if info.scheme:
        examples = [_tags_as_iob2(e, info.scheme) for e in examples]
    if info.labels:
        _check_labels(examples, info.labels, name)
    labels = list(info.labels) if info.labels else None
    if info.label_names:
        rename = dict(zip(info.labels, info.label_names))
        examples = [replace(e, label=rename[e.label]) for e in examples]
        labels = list(info.label_names)
    return DatasetSplit(name, split, info.task, examples, labels, info.is_regression, info.language, path,
                        info.main_metric)


def fetch(url: str, name: str, folder: Path) -> bytes:
    """The bytes at `url`; any network failure is a UserError that says how to do without the network."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except (OSError, ValueError) as e:  # URLError, HTTPError and timeouts are OSErrors; a bad URL a ValueError
        reason = getattr(e, "reason", None) or e
        raise UserError(f"cannot download {name} from {url} ({reason}); this machine may be offline: "
                        f"copy the files into {folder}/ by hand") from None


def download(name: str, data_dir: str | Path | None = None) -> Path:
    """Fetch a dataset's files from its public source into DATA_DIR/FOLDER/, the folder returned."""
    info = dataset_info(name)
    folder = settings.data_dir(data_dir) / info.folder
    if not info.downloads:
        files = ", ".join(sorted(set(info.splits.values())))
        raise UserError(f"{name} has no public download in this format; copy its files ({files}) into {folder}/")
    for source in info.downloads:
        data = fetch(source.url, name, folder)
        try:
            files = source.unpack(data)
        except (zipfile.BadZipFile, KeyError, ValueError) as e:
            raise UserError(f"{source.url}: not what {name} should be ({e}); copy the files into {folder}/") from None
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, content in files.items():
            (folder / file_name).write_bytes(content)
    return folder
