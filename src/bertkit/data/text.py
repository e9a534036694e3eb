"""Reading a text corpus: files to documents, documents to paragraphs, paragraphs to sentences.

A document is one file. Paragraphs are blocks of lines separated by blank lines; inside a block,
line breaks are soft wraps and the lines are joined (with a space between Latin text, without one
next to CJK text). Hard-wrapped text never has a line longer than `WRAP_WIDTH` characters, so a
block with such a line is read as one paragraph per line instead: that covers files without blank
lines that hold one paragraph per line (the State of the Union speeches), while Gutenberg books
(wrapped at ~75 columns, blank lines between paragraphs) and the Chinese novels (one long line per
paragraph, blank lines between) read as they should.

Sentences come from `split_sentences`, a rule-based splitter, chosen over `pysbd` 0.3.4 after
running both over shared/data/pretrain. Speed: over en (8 MB) 0.55 s against ~60 s for pysbd, over
zh (8.5 MB) 0.35 s against ~15 s; tokenizing a corpus larger than RAM cannot spend minutes per
10 MB here. Quality: 81% of a 2,000-paragraph English sample split identically; most of the rest
is pysbd keeping a quotation of several sentences as one sentence (this splits inside quotes, as
NLTK's punkt does) and pysbd erring on "--Mrs. | Weston" or "hear? | get away". In Chinese, pysbd moves the closing
quote ” to the start of the next sentence, which changes 67% of the paragraphs of a sample.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from bertkit.errors import UserError

WRAP_WIDTH = 100  # a block with a longer line is one paragraph per line, not wrapped text
_SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB marks a binary file, as git decides

# Chinese and Japanese script, their punctuation and full-width forms: these join without a space.
_CJK = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]")

# A run of sentence-final punctuation, then closing quotes or brackets that belong to the sentence.
_SENTENCE_END = re.compile(r"""(?P<end>[.!?。！？；．…]+)(?P<close>[”’」』）)\]"'》]*)""")
_FULL_WIDTH_END = set("。！？；．")  # these end a sentence wherever they stand
_NEXT_CHAR = re.compile(r"\s*(\S?)")
_OPENERS = set("“‘\"'(「『[_")  # a sentence may start with these as well as a capital or a digit
_WORD_BEFORE = re.compile(r"[A-Za-z][A-Za-z.]*$")
_INITIALS = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]|[A-HJ-Z]")  # U.S, e.g, J (but "I." ends sentences)
# Abbreviations that are almost always followed by a capitalized name or a number, case-sensitive
# so that "said no. Then" still splits. "etc." is left out: it ends sentences as often as not.
_ABBREVIATIONS = frozenset(
    "Mr Mrs Ms Messrs Mme Mlle Dr Prof Rev Hon St Mt Ft Jr Sr Gen Col Maj Capt Lt Sgt Cmdr Adm Gov Sen Rep "
    "Pres Supt Insp No Nos Vol Vols Fig Art Sec Ch Pp vs Inc Ltd Co Corp Bros cf viz "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec".split()
)


class DataError(UserError):
    """A corpus file that cannot be read as text. The message is one line naming the file (and line)."""


@dataclass(frozen=True)
class Document:
    path: Path
    sentences: list[str]  # in reading order, each non-empty and stripped


def list_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files under `paths` (files or folders, searched recursively), sorted so builds are deterministic.

    Hidden files and folders (names starting with ".") are skipped, like .DS_Store or .git.
    """
    files: list[Path] = []
    for path in map(Path, [paths] if isinstance(paths, (str, Path)) else paths):
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise DataError(f"{path}: folder has no text files")
            files.extend(found)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def join_lines(lines: list[str]) -> str:
    """Join the wrapped lines of one paragraph: a space between Latin words, nothing next to CJK."""
    text = lines[0]
    for line in lines[1:]:
        cjk = _CJK.match(text[-1]) or _CJK.match(line[0])
        text += line if cjk else " " + line
    return text


def _decoded_lines(path: Path, errors: str) -> Iterator[str]:
    """The lines of a UTF-8 file, stripped, read one at a time so a large file never sits in memory.

    `errors="strict"` makes a byte that is not UTF-8 an error naming its line; `"replace"` turns it
    into U+FFFD (which the BERT normalizer then drops) and warns once per file.
    """
    warned = False
    with open(path, "rb") as f:
        if b"\x00" in f.read(_SNIFF_BYTES):
            raise DataError(f"{path}: binary file (NUL bytes), expected UTF-8 text; UTF-16 files must be converted")
        f.seek(0)
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                where = f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                if errors == "strict":
                    raise DataError(f"{where}; convert the file to UTF-8 or allow replacement") from None
                if not warned:
                    warnings.warn(f"{where}; bytes that are not UTF-8 are dropped from this file", stacklevel=2)
                    warned = True
                line = raw.decode("utf-8", errors="replace")
            if "\x00" in line:
                raise DataError(f"{path}:{lineno}: binary file (NUL bytes), expected UTF-8 text")
            yield line.lstrip("\ufeff").strip() if lineno == 1 else line.strip()


def read_paragraphs(path: str | Path, errors: str = "strict") -> Iterator[str]:
    """The paragraphs of one file, by the rule in the module docstring; `errors` as in `_decoded_lines`."""
    block: list[str] = []
    for line in chain(_decoded_lines(Path(path), errors), [""]):  # the final "" flushes the last block
        if line:
            block.append(line)
            continue
        if any(len(b) > WRAP_WIDTH for b in block):
            yield from block
        elif block:
            yield join_lines(block)
        block = []


def _ends_sentence(text: str, start: int, match: re.Match) -> bool:
    """Whether the punctuation run `match` ends the sentence that began at `start`."""
    end, at = match["end"], match.end()
    first = _NEXT_CHAR.match(text, at)[1]  # the next character that is not a space
    if not first or any(c in _FULL_WIDTH_END for c in end):
        return True
    if _CJK.match(text[at]):  # "好!他" or "……他": Chinese text takes no space after a sentence
        return end != "."
    if not text[at].isspace():  # "3.14", "U.S.", "e.g.x": no space, no sentence end
        return False
    if not (first.isupper() or first.isdigit() or first in _OPENERS or _CJK.match(first)):
        return False  # '"Oh!" said she.' goes on after the exclamation
    if end == ".":
        word = _WORD_BEFORE.search(text, start, match.start())
        if word and (word[0] in _ABBREVIATIONS or _INITIALS.fullmatch(word[0])):
            return False
    return True


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph of English or Chinese text into sentences.

    English: `.`, `!`, `?` (and `…`) end a sentence when whitespace and a capital, a digit or an
    opening quote follow, and `.` not after an abbreviation (Mr., Dr., No.) or initials (U.S., J.).
    Chinese: `。！？；．…` end a sentence wherever they stand. Closing quotes and brackets after the
    punctuation stay with the sentence (`。」`, `!”`, `."`); a straight `"` counts as closing only
    when the paragraph so far holds an odd number of them, as a quotation may span sentences.
    """
    sentences, start = [], 0
    quotes, counted_to = 0, 0  # straight quotes in paragraph[:counted_to]: a quote may open sentences ago
    for match in _SENTENCE_END.finditer(paragraph):
        if not _ends_sentence(paragraph, start, match):
            continue
        stop = match.start("close")
        quotes += paragraph.count('"', counted_to, stop)
        for c in match["close"]:
            if c == '"':
                if quotes % 2 == 0:
                    break  # an even count means this quote opens the next sentence
                quotes += 1
            stop += 1
        counted_to = stop
        sentences.append(paragraph[start:stop].strip())
        start = stop
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def read_document(path: str | Path, errors: str = "strict") -> Document:
    """One file as a list of sentences; a file with no text is an error."""
    sentences = [s for paragraph in read_paragraphs(path, errors) for s in split_sentences(paragraph)]
    if not sentences:
        raise DataError(f"{path}: no text (the file is empty or only whitespace)")
    return Document(Path(path), sentences)


def iter_documents(paths: str | Path | Iterable[str | Path], errors: str = "strict") -> Iterator[Document]:
    """Documents from files and folders, one file at a time, in `list_files` order."""
    for path in list_files(paths):
        yield read_document(path, errors)
