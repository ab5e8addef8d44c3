"""Character vocabulary of a CTC head, built from the train split only.

Building the vocabulary from dev or test text (as the common public wav2vec2
recipe does) leaks held-out characters into the model; here only the train
manifest's normalized transcripts count. The layout follows the transformers
``Wav2Vec2CTCTokenizer`` convention:

* ``<pad>`` is id 0 and doubles as the CTC blank;
* ``<unk>`` is id 1;
* ``|`` is the word delimiter (a space in the text);
* then every character of the train text, sorted.

Characters outside the language's alphabet (:func:`speechtl.text.normalize.alphabet`)
are not mapped or dropped silently: :func:`build_vocab` reports them with the
utterances they occur in, and ``strict=True`` makes them an error. Characters
of dev/test text missing from the vocabulary are counted by :func:`coverage`
so that a run can show how much of its test text the head cannot spell.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from speechtl.fsio import atomic_write_text
from speechtl.text.normalize import alphabet

PAD = "<pad>"
UNK = "<unk>"
WORD_DELIMITER = "|"
SPECIALS = (PAD, UNK, WORD_DELIMITER)


class VocabError(ValueError):
    """A vocabulary that cannot be built or read; the message names the utterance or file and field."""


@dataclass
class CtcVocab:
    """Symbol -> id table plus what was left out while building it."""

    lang: str
    symbols: tuple[str, ...]  # id order
    outside_alphabet: dict[str, list[str]] = field(default_factory=dict)  # char -> utterance ids (first 5)
    char_counts: dict[str, int] = field(default_factory=dict)  # train occurrences of each character

    @property
    def ids(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def encode(self, text: str) -> list[int]:
        """Ids of a normalized transcript; spaces become the word delimiter, unknown characters ``<unk>``."""
        table, unk = self.ids, self.symbols.index(UNK)
        return [table.get(WORD_DELIMITER if c == " " else c, unk) for c in text]

    def save(self, path: Path | str) -> Path:
        """``vocab.json`` in the ``Wav2Vec2CTCTokenizer`` format (symbol -> id), plus a ``.meta.json`` report."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.ids, ensure_ascii=False, indent=1) + "\n")
        meta = {"lang": self.lang, "outside_alphabet": self.outside_alphabet, "char_counts": self.char_counts}
        atomic_write_text(path.with_suffix(".meta.json"), json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
        return path


def build_vocab(train: Iterable[tuple[str, str]], lang: str, *, strict: bool = False) -> CtcVocab:
    """Vocabulary of ``(utterance id, normalized text)`` pairs of the train split.

    Characters outside ``alphabet(lang)`` (when the language has one) are kept
    in the vocabulary and reported in ``outside_alphabet``; with ``strict`` they
    raise :class:`VocabError` naming the first utterance.
    """
    letters = alphabet(lang)
    counts: Counter[str] = Counter()
    outside: dict[str, list[str]] = {}
    seen = 0
    for utt_id, text in train:
        seen += 1
        if not isinstance(text, str) or not text.strip():
            raise VocabError(f"utterance {utt_id}: field 'text' is empty; the train manifest must be normalized")
        for ch in text:
            if ch == " ":
                continue
            if ch == WORD_DELIMITER:
                raise VocabError(f"utterance {utt_id}: field 'text' holds {ch!r}, the CTC word delimiter")
            counts[ch] += 1
            if letters is not None and ch not in letters:
                ids = outside.setdefault(ch, [])
                if len(ids) < 5 and utt_id not in ids:
                    ids.append(utt_id)
    if not seen:
        raise VocabError("build_vocab: the train split has no utterances")
    if strict and outside:
        ch, ids = next(iter(sorted(outside.items())))
        raise VocabError(f"utterance {ids[0]}: field 'text' has {ch!r}, outside the {lang} alphabet "
                         f"({len(outside)} such characters)")
    return CtcVocab(lang=lang, symbols=SPECIALS + tuple(sorted(counts)), outside_alphabet=dict(sorted(outside.items())),
                    char_counts=dict(sorted(counts.items())))


def coverage(vocab: CtcVocab, texts: Iterable[tuple[str, str]]) -> dict[str, object]:
    """Characters of other splits' text (``(id, text)`` pairs) the vocabulary cannot spell, with counts and ids."""
    table = vocab.ids
    missing: Counter[str] = Counter()
    where: dict[str, list[str]] = {}
    total = 0
    for utt_id, text in texts:
        for ch in text.replace(" ", ""):
            total += 1
            if ch not in table:
                missing[ch] += 1
                ids = where.setdefault(ch, [])
                if len(ids) < 5 and utt_id not in ids:
                    ids.append(utt_id)
    return {"chars": total, "unknown": sum(missing.values()), "unknown_chars": dict(missing.most_common()),
            "examples": where}


def load_vocab(path: Path | str, lang: str) -> CtcVocab:
    """Read a ``vocab.json`` written by :meth:`CtcVocab.save` (ids must be 0..n-1 with the specials first)."""
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VocabError(f"{path}: cannot read the vocabulary: {exc}") from exc
    if not isinstance(table, dict) or sorted(table.values()) != list(range(len(table))):
        raise VocabError(f"{path}: must map symbols to the ids 0..n-1")
    symbols = tuple(sorted(table, key=table.__getitem__))
    if symbols[:3] != SPECIALS:
        raise VocabError(f"{path}: ids 0, 1, 2 must be {list(SPECIALS)}, got {list(symbols[:3])}")
    return CtcVocab(lang=lang, symbols=symbols)
