"""The public datasets bertkit knows by name: where their files live, how to read them, and how to fetch them.

Files live under the data directory (`BERTKIT_DATA_DIR`, else `../shared/data` from the working directory) as
the project's shared/data/README.md lays them out; `load_dataset` looks there first, then in the download cache,
CACHE_DIR/datasets/FOLDER (`BERTKIT_CACHE_DIR`, else ~/.cache/bertkit), which is where `download` (`bertkit data
download NAME`) writes. `download` never writes the data directory: it checks every file against the SHA-256
pinned here (the sums of shared/data's copies, as published) and writes it through a temporary file in the same
folder, fsynced and renamed into place, so a failed or interrupted download leaves no partial file and keeps
the file that was there before.

Splits are "train", "dev" (alias "validation") and "test"; where a dataset lacks one, another file stands in,
said on the entry: MRPC's original corpus has no dev split, so its "dev" is 408 pairs (GLUE's dev size) carved
from its train file by a fixed rule (`carve_dev`, `carved_rows`) and its "train" is the other 3,668, with "test"
the test file; CMRC 2018's "train" is its trial set (the official train set is not here). MSRA NER has dev and
test only.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import random
import secrets
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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
CARVE_SEED = 0  # the seed of every carved dev split (see carved_rows)


@dataclass(frozen=True)
class Download:
    url: str
    unpack: Callable[[bytes], dict[str, bytes]]  # the downloaded bytes -> {file name in the dataset folder: bytes}
    # file name -> SHA-256 (hex) of the file as it lands in the folder, after unpacking. A file without a sum
    # (None, or missing here) is written unverified, with a warning saying so.
    sha256: Mapping[str, str | None] = field(default_factory=dict)


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
    # A dev split carved from the train file: "dev" is this many of its examples (carved_rows picks them) and
    # "train" the rest, with no overlap. splits["dev"] must then name the train file.
    carve_dev: int | None = None

    def __post_init__(self):
        if self.carve_dev is not None and (self.carve_dev < 1 or self.splits.get("dev") != self.splits.get("train")):
            raise ValueError("carve_dev needs a positive count and splits['dev'] naming the train file")

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
    # ensure_ascii=False: shared/data's files keep non-ASCII text as UTF-8 (not \u escapes), so the sums match
    return {name: json.dumps({"version": squad["version"], "data": squad["data"][lo:hi]},
                             ensure_ascii=False).encode("utf-8")
            for name, lo, hi in (("train.json", 0, 38), ("dev.json", 38, 43))}


GLUE = "https://dl.fbaipublicfiles.com/glue/data"
MRPC = "https://dl.fbaipublicfiles.com/senteval/senteval_data"  # the original files, as GLUE's script fetches them
WNUT17 = "https://raw.githubusercontent.com/leondz/emerging_entities_17/master"
CMRC2018 = "https://raw.githubusercontent.com/ymcui/cmrc2018/master/squad-style-data"

# SHA-256 of each file as it lands in the dataset folder: computed from the copies in shared/data, which its
# README says are copied as published (SST-2 and STS-B as unzipped from GLUE's archives). SQuAD's two files are
# split_squad_dev's output; its sums are those of shared/data's squad/ files, which split_squad_dev reproduces
# byte for byte from their articles (tests/test_datasets.py checks it on a reconstruction of the official file).
DATASETS: dict[str, DatasetInfo] = {
    "sst2": DatasetInfo(
        TEXT, "en", "sst2", {"train": "train.tsv", "dev": "dev.tsv"}, read_text_examples, labels=("0", "1"),
        label_names=("negative", "positive"),
        downloads=(Download(f"{GLUE}/SST-2.zip", unzip({"train.tsv": "SST-2/train.tsv", "dev.tsv": "SST-2/dev.tsv"}),
                            {"train.tsv": "8621df47b79e9b3fa010405ef4dd506cbf483319cf851f20f2b6773f61d387b5",
                             "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"}),)),
    "stsb": DatasetInfo(
        TEXT, "en", "stsb", {"train": "train.tsv", "dev": "dev.tsv"}, read_text_examples, main_metric="spearman",
        downloads=(Download(f"{GLUE}/STS-B.zip", unzip({"train.tsv": "STS-B/train.tsv", "dev.tsv": "STS-B/dev.tsv"}),
                            {"train.tsv": "0199ff01cc1d70531df6b644d612681e3225b4659ae675c14b9173dbbb5efaae",
                             "dev.tsv": "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59"}),)),
    "mrpc": DatasetInfo(  # no dev split in the corpus: 408 train pairs carved out (GLUE's dev size); see carved_rows
        TEXT, "en", "mrpc", {"train": "train.txt", "dev": "train.txt", "test": "test.txt"},
        partial(read_text_examples, text_column="#1 String", pair_column="#2 String", label_column="Quality"),
        labels=("0", "1"), label_names=("not_equivalent", "equivalent"), main_metric="f1", carve_dev=408,
        downloads=(Download(f"{MRPC}/msr_paraphrase_train.txt", save_as("train.txt"),
                            {"train.txt": "206d2aa9876cff00665ff4494b28e0a4acc4c3ee9885ccba5949075ffc2daa14"}),
                   Download(f"{MRPC}/msr_paraphrase_test.txt", save_as("test.txt"),
                            {"test.txt": "ea5b3d605a3560dc73ecc9bdc5482f47a2859073b318235490d9de79edf83eb3"}))),
    "afqmc": DatasetInfo(  # s1 <TAB> s2 <TAB> label, no header; CLUE publishes JSON lines, so no download
        TEXT, "zh", "zh/afqmc", {"train": "train.txt", "dev": "dev.txt"},
        partial(read_text_examples, has_header=False), labels=("0", "1"), label_names=("different", "same")),
    "conll2003": DatasetInfo(  # Reuters text: no public copy to fetch
        TOKENS, "en", "conll2003", {"train": "train.txt", "dev": "valid.txt"}, read_conll,
        labels=iob2_labels("LOC MISC ORG PER"), scheme="IOB2"),
    "wnut17": DatasetInfo(
        TOKENS, "en", "wnut17", {"train": "train.conll", "dev": "dev.conll"}, read_conll,
        labels=iob2_labels("corporation creative-work group location person product"), scheme="IOB2",
        downloads=(Download(f"{WNUT17}/wnut17train.conll", save_as("train.conll"),
                            {"train.conll": "731820e13f71af324c6b55a1575ec2ce59fbaa2a0806f8f0400b98d56cd6a7a5"}),
                   Download(f"{WNUT17}/emerging.dev.conll", save_as("dev.conll"),
                            {"dev.conll": "e053b752b8155113ca66e7db08af5f2f5f43ab993694e4774f1ec5bad42312d8"}))),
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
        downloads=(Download("https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json", split_squad_dev,
                            {"train.json": "997d327972f994067011c4e437a52d6fe2fbda28d4ac3718ea77839af9657803",
                             "dev.json": "af630bb97aeef3dcb8c12faa7bca39bfa9393f8c5c7128f4a7a03410179b1f95"}),)),
    "cmrc2018": DatasetInfo(
        QA, "zh", "zh/cmrc2018", {"train": "trial.json", "trial": "trial.json", "dev": "dev.json"}, read_squad,
        downloads=(Download(f"{CMRC2018}/cmrc2018_trial.json", save_as("trial.json"),
                            {"trial.json": "f3fae95b57da8e03afb2b57467dd221417060ef4d82db13bf22fc88589f3a6f3"}),
                   Download(f"{CMRC2018}/cmrc2018_dev.json", save_as("dev.json"),
                            {"dev.json": "e9ff74231f05c230c6fa88b84441ee334d97234cbb610991cd94b82db00c7f1f"}))),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def _tags_as_iob2(example: TokenExample, scheme: str) -> TokenExample:
    if example.tags is None:
        raise UserError(f"{example.source}: no tag column (a line is a token and its tag)")
    validate_tags(example.tags, scheme, example.source)
    return TokenExample(example.tokens, to_iob2(example.tags), example.source)


def _check_labels(examples: list, labels: tuple[str, ...], name: str) -> None:
    """A label outside the dataset's set means a wrong or damaged file: an error naming the row."""
    known = set(labels)
    for e in examples:
        unknown = [v for v in (e.tags if isinstance(e, TokenExample) else [e.label]) if v not in known]
        if unknown:
            raise UserError(f"{e.source}: label {unknown[0]!r} is not one of {name}'s labels ({', '.join(labels)})")



def downloads_dir(cache_dir: str | Path | None = None) -> Path:
    """Where `download` writes and `load_dataset` looks second: CACHE_DIR/datasets."""
    return settings.cache_dir(cache_dir) / "datasets"


def carved_rows(n: int, count: int, seed: int = CARVE_SEED) -> set[int]:
    """The `count` row indices (of `n`) that make a carved dev split: the rows holding the `count` smallest of `n`
    successive `random.Random(seed).random()` draws, one a row in file order. Python guarantees random()'s
    sequence for a seed across versions and machines (random.sample's is not promised), so the split is fixed."""
    rng = random.Random(seed)
    keys = [rng.random() for _ in range(n)]
    return set(sorted(range(n), key=keys.__getitem__)[:count])


def _carve(examples: list, count: int, dev: bool, path: Path) -> list:
    if len(examples) <= count:
        raise UserError(f"{path}: {len(examples)} examples, too few to carve a dev split of {count} from")
    rows = carved_rows(len(examples), count)
    return [e for i, e in enumerate(examples) if (i in rows) == dev]


def load_dataset(name: str, split: str, data_dir: str | Path | None = None, skip_bad_rows: bool = False,
                 cache_dir: str | Path | None = None) -> DatasetSplit:
    """One split of a named dataset, read, checked and (NER) converted to IOB2 tags. Each file is looked for in
    DATA_DIR/FOLDER first, then in the download cache, CACHE_DIR/datasets/FOLDER."""
    info = dataset_info(name)
    split = SPLIT_ALIASES.get(split, split)
    if split not in info.splits:
        raise UserError(f"{name} has no {split!r} split here; its splits are {', '.join(info.splits)}")
    root = settings.data_dir(data_dir)
    in_data = root / info.folder / info.splits[split]
    in_cache = downloads_dir(cache_dir) / info.folder / info.splits[split]
    path = in_data if in_data.is_file() else in_cache if in_cache.is_file() else None
    hint = f"`bertkit data download {name}`" if info.downloads else f"copy {name}'s files into {root / info.folder}/"
    if path is None:
        where = f"{root}: no data directory" if not root.is_dir() else f"{in_data}: no such file"
        raise UserError(f"{where}, and no {in_cache} downloaded; set BERTKIT_DATA_DIR to the folder that holds "
                        f"{info.folder}/, or {hint}")
    examples = info.read(path, skip_bad_rows=skip_bad_rows)
    if info.carve_dev and split in ("train", "dev"):
        examples = _carve(examples, info.carve_dev, split == "dev", path)
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
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts: OSErrors
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        raise UserError(f"cannot download {name} from {url} ({reason}); this machine may be offline: "
                        f"copy the files into {folder}/ by hand") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _already_there(source: Download, folder: Path) -> bool:
    """Every file of `source` is pinned and already in `folder` with its pinned sum: nothing to fetch."""
    pins = source.sha256
    return bool(pins) and all(expected is not None and (folder / file_name).is_file()
                              and _sha256((folder / file_name).read_bytes()) == expected
                              for file_name, expected in pins.items())


def _write_atomically(path: Path, content: bytes) -> None:
    """`content` into `path` through a temporary file in the same folder, fsynced, then renamed over `path`: a
    failure at any point removes the temporary file and leaves `path` as it was."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (POSIX); where a folder cannot be opened or synced (Windows), skip it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def download(name: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Fetch a dataset's files from its public source into the download cache, CACHE_DIR/datasets/FOLDER/ (the
    folder returned), where `load_dataset` finds them when DATA_DIR/FOLDER/ lacks them. Never writes DATA_DIR.

    Every file is checked against its pinned SHA-256 before anything is written (a mismatch is a UserError naming
    the file and both sums), then written through a temporary file, fsynced and renamed into place. A source
    whose files are all there already with their pinned sums is not fetched again."""
    info = dataset_info(name)
    data_folder = settings.data_dir(data_dir) / info.folder
    folder = downloads_dir(cache_dir) / info.folder
    if not info.downloads:
        files = ", ".join(sorted(set(info.splits.values())))
        raise UserError(f"{name} has no public download in this format; copy its files ({files}) into {data_folder}/")
    pending: dict[str, bytes] = {}  # file name -> checked content, written only once every source is in
    for source in info.downloads:
        if _already_there(source, folder):
            continue
        data = fetch(source.url, name, data_folder)
        try:
            files = source.unpack(data)
        except (zipfile.BadZipFile, KeyError, ValueError) as e:
            raise UserError(f"{source.url}: not what {name} should be ({e}); copy the files into {data_folder}/"
                            ) from None
        for file_name, content in files.items():
            actual, expected = _sha256(content), source.sha256.get(file_name)
            if expected is None:
                warnings.warn(f"{name}: {file_name} from {source.url} has no pinned SHA-256, so it is unverified "
                              f"(its SHA-256 is {actual})", stacklevel=2)
            elif actual != expected:
                raise UserError(f"{name}: {file_name} from {source.url} has SHA-256 {actual}, expected {expected}; "
                                f"nothing was written to {folder}/")
            pending[file_name] = content
    created = not folder.is_dir()
    target = folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, content in pending.items():
            target = folder / file_name
            _write_atomically(target, content)
        _fsync_dir(folder)
    except OSError as e:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a folder this call made and left nothing in
        raise UserError(f"cannot write {target} ({e.strerror or e}); no partial file was left, and the "
                        f"{target.name} that was there before, if any, is kept") from None
    if any((data_folder / f).is_file() for f in set(info.splits.values())):
        warnings.warn(f"{data_folder}/ also holds {name}'s files, and they are read first; the download in {folder}/ "
                      "is used only for files missing there", stacklevel=2)
    return folder
