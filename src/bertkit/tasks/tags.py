"""Named-entity tag schemes (IOB1, IOB2, IO, BIOES, BMES): detect them, check tags, convert to IOB2, read spans.

A tag is `O` or PREFIX-TYPE; the type is everything after the first "-", so WNUT's `B-creative-work` and
Weibo's `B-PER.NAM` keep theirs whole. The prefixes mean the same in every scheme (B and S begin an entity,
S and E end one, I and M continue one), so converting to IOB2 needs no scheme; checking tags does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bertkit.errors import UserError

SCHEMES = {  # the prefixes each scheme allows besides O
    "IOB1": ("I", "B"),  # I everywhere; B only to split two adjacent entities of one type
    "IOB2": ("B", "I"),  # B begins every entity
    "IO": ("I",),  # no boundaries: adjacent entities of one type merge
    "BIOES": ("B", "I", "E", "S"),  # S: single-token entity, E: last token
    "BMES": ("B", "M", "E", "S"),  # BIOES with M for I, as the Chinese NER sets write it
}


def split_tag(tag: str) -> tuple[str, str]:
    """"B-PER.NAM" -> ("B", "PER.NAM"), "O" -> ("O", ""), "PER" -> ("PER", "")."""
    prefix, _, entity_type = tag.partition("-")
    return prefix, entity_type


def _continues(prefix: str, entity_type: str, previous: str) -> bool:
    """Whether a tag continues the entity of the tag before it (`previous`, "O" at a sentence start)."""
    prev_prefix, prev_type = split_tag(previous)
    return prefix in ("I", "M", "E") and prev_prefix not in ("O", "E", "S") and prev_type == entity_type


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """The scheme of a file's tags: BMES if an M- appears, BIOES if an E- or S- does, IO if only I- does, IOB1 if
    some I- begins an entity, else IOB2 (also for all-O data). IO and IOB1 data without adjacent same-type
    entities look alike; both convert to IOB2 the same way."""
    sequences = [list(s) for s in tag_sequences]
    prefixes = {split_tag(t)[0] for s in sequences for t in s} - {"O"}
    if prefixes & {"M", "E", "S"}:
        return "BMES" if "M" in prefixes else "BIOES"
    if prefixes == {"I"}:
        return "IO"
    for s in sequences:
        if any(split_tag(t)[0] == "I" and not _continues("I", split_tag(t)[1], prev) for prev, t in zip(["O"] + s, s)):
            return "IOB1"
    return "IOB2"


def validate_tags(tags: Sequence[str], scheme: str, source: str) -> None:
    """UserError naming `source` and the token for a tag that is not O or an allowed PREFIX-TYPE of `scheme`."""
    allowed = SCHEMES[scheme]
    for i, tag in enumerate(tags, start=1):
        prefix, entity_type = split_tag(tag)
        if tag != "O" and not (prefix in allowed and entity_type):
            forms = ", ".join(f"{p}-TYPE" for p in allowed)
            raise UserError(f"{source}: bad tag {tag!r} at token {i}: {scheme} tags are O, {forms}")


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Tags of any scheme in SCHEMES as IOB2: a tag that begins an entity becomes B-, one that continues it I-.

    Lenient where files are not: an I-/M-/E- that does not continue an entity begins one (Weibo has entities
    that start with M-), so IOB1's I- after O and BMES's S- both become B-."""
    out, previous = [], "O"
    for tag in tags:
        prefix, entity_type = split_tag(tag)
        if tag == "O":
            out.append("O")
        else:
            out.append(("I-" if _continues(prefix, entity_type, previous) else "B-") + entity_type)
        previous = tag
    return out
