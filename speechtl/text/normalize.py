"""Language-aware transcript normalization, for training labels and for WER scoring.

One :class:`Normalizer` per (language, settings); its ``name`` and ``settings``
are recorded in every result file so that two WERs are only compared when they
were scored with the same text rules. A normalizer returns the normalized text
or raises :class:`TextRejected` with a machine-readable reason.

Pipeline (always in this order):

1. Unicode NFC; control and zero-width characters removed (ZWJ/ZWNJ are kept
   for languages without a fixed alphabet: they are meaningful in e.g. Persian);
   typographic quotes/apostrophes unified to ``"`` and ``'``; whitespace collapsed.
2. Annotations: ``[...]`` and ``<word ...>`` spans are always non-speech;
   ``(...)`` is non-speech only when it is the whole text or a known tag such as
   ``(risas)``; other parentheses are removed and their words kept.
3. Numbers and spoken symbols -> words (``verbalize_numbers``).
4. Lowercase, punctuation and symbols -> space (intra-word apostrophes kept,
   except in Spanish where ``O'Donnell`` -> ``ODonnell``).
5. English only: diacritics folded (``café`` -> ``cafe``), since English spelling
   treats them as optional; a letter that does not fold to a-z is still rejected.
6. Alphabet check, then (scoring only) ``strip_accents``.

Readings chosen (documented here because WER depends on them):

* Spanish times: ``10:30`` -> "diez y treinta", ``10:00`` -> "diez en punto",
  ``1:15`` -> "una y quince" (hours are feminine: *la una*).
* English times: ``10:30`` -> "ten thirty", ``10:05`` -> "ten oh five",
  ``10:00`` -> "ten o'clock". Other languages: hour then minutes as cardinals.
* Decimals: Spanish says the written separator (``3,5`` -> "tres coma cinco",
  ``3.5`` -> "tres punto cinco"); a fraction of 1-3 digits without a leading zero
  is read as a number ("tres coma catorce"), otherwise digit by digit. English
  reads the fraction digit by digit ("three point one four").
* Thousands: Spanish and other continental languages group with ``.`` or space
  (``1.500``, ``1 500``), English with ``,`` or space; a comma in Spanish is
  always decimal (``1,500`` -> "uno coma quinientos").
* A bare run of 6 or more digits, or of 2 or more starting with 0, is a code or
  phone number and is read digit by digit (``600123456``, ``007``). Write large
  quantities with grouping (``1.000.000``) to get a cardinal reading.
* ``°`` is degrees ("grados"/"degrees"); ``º``/``ª`` (and ``er``, ``do``, ``ra``...
  attached to the digits) are Spanish ordinal indicators.
* Money: ``20,50 €`` -> "veinte euros con cincuenta céntimos", ``$1`` -> "un dólar",
  ``1.000.000 €`` -> "un millón de euros"; English "one dollar and fifty cents".
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from speechtl.text.numbers import Unverbalizable, verbalize

log = logging.getLogger(__name__)

__all__ = ["TextRejected", "TextConfig", "Normalizer", "get_normalizer", "alphabet", "verbalize_numbers"]

VERSION = "v1"  # bump whenever any output of any normalizer changes
REASONS = ("empty", "non_speech", "bad_chars", "unverbalizable")


class TextRejected(Exception):
    """A transcript cannot be used; ``reason`` is one of ``REASONS``, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown TextRejected reason {reason!r}; expected one of {REASONS}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.reason, self.detail))


# --------------------------------------------------------------------------- alphabets

_LATIN = "abcdefghijklmnopqrstuvwxyz"
_ALPHABETS: dict[str, frozenset[str]] = {
    "es": frozenset(_LATIN + "áéíóúüñ "),
    "en": frozenset(_LATIN + "' "),
}
# Base letter + combining mark pairs that strip_accents keeps: they are letters of
# their own in these languages (ñ is not an accented n in Spanish; it sorts and
# spells apart: "año" and "ano" are different words).
_KEEP_MARKS: dict[str, frozenset[tuple[str, str]]] = {
    "es": frozenset({("n", "\u0303"), ("N", "\u0303")}),
    "ru": frozenset({("и", "\u0306"), ("И", "\u0306")}),
    "bg": frozenset({("и", "\u0306"), ("И", "\u0306")}),
    "be": frozenset({("и", "\u0306"), ("И", "\u0306"), ("у", "\u0306"), ("У", "\u0306")}),
    "uk": frozenset({("и", "\u0306"), ("И", "\u0306"), ("і", "\u0308"), ("І", "\u0308")}),
}
_LANG_RE = re.compile(r"[a-z]{2,3}")


def _check_lang(lang: object) -> str:
    if not isinstance(lang, str) or not _LANG_RE.fullmatch(lang):
        raise ValueError(f"lang must be a lowercase ISO 639 code such as 'es' or 'en', got {lang!r}")
    return lang


def alphabet(lang: str) -> frozenset[str] | None:
    """Every character allowed in normalized ``lang`` text, space included.

    ``None`` means the generic fallback: any Unicode letter or mark.
    """
    return _ALPHABETS.get(_check_lang(lang))


# --------------------------------------------------------------------------- char tables


class _CharTable(dict):  # type: ignore[type-arg]
    """A ``str.translate`` table computed lazily per code point and cached."""

    def __init__(self, fn: Callable[[str], str | None]) -> None:
        super().__init__()
        self._fn = fn

    def __missing__(self, cp: int) -> str | None:
        value = self._fn(chr(cp))
        self[cp] = value
        return value


_QUOTES = {c: "'" for c in "‘’‚‛′ʼ`´"} | {c: '"' for c in "“”„‟″«»‹›"}
_JOINERS = "\u200c\u200d"


def _clean_char(ch: str, keep_joiners: bool) -> str | None:
    if ch in _QUOTES:
        return _QUOTES[ch]
    if ch.isspace():
        return " "
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return " "
    if cat == "Cf":
        return ch if keep_joiners and ch in _JOINERS else None
    if cat in ("Co", "Cn", "Cs"):
        return None
    return ch


def _punct_char(ch: str) -> str:
    return " " if unicodedata.category(ch)[0] in "PS" and ch != "'" else ch


_CLEAN = {keep: _CharTable(lambda ch, keep=keep: _clean_char(ch, keep)) for keep in (False, True)}
_PUNCT = _CharTable(_punct_char)
_SPACES = re.compile(r"\s+")
_APOS_INTRA = re.compile(r"(?<=[^\W_])'(?=[^\W_])")
_APOS_OTHER = re.compile(r"(?<![^\W_])'|'(?![^\W_])")


@lru_cache(maxsize=8192)
def _has_case_script(ch: str) -> bool:
    return unicodedata.name(ch, "").split(" ", 1)[0] in ("LATIN", "GREEK", "CYRILLIC")


def _strip_marks(text: str, keep: frozenset[tuple[str, str]]) -> str:
    """Drop nonspacing marks on Latin/Greek/Cyrillic letters, except the ``keep`` pairs."""
    out: list[str] = []
    base = ""
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.category(ch) == "Mn":
            if _has_case_script(base) and (base, ch) not in keep:
                continue
        else:
            base = ch
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


# --------------------------------------------------------------------------- annotations

_ANNOTATION = re.compile(r"\[[^\[\]]*\]|<[^\W\d_][\w\- ]*>|\([^()]*\)")
_KNOWN_TAGS = frozenset(
    "risas risa ruido ruidos tos música musica silencio inaudible incomprensible aplausos "
    "respiración respiracion noise laughter laughs laugh cough music silence applause breath "
    "breathing crosstalk unk".split()
)


def _split_annotations(text: str) -> tuple[str, list[str]]:
    """Remove non-speech spans; return the rest and the spans found (in order)."""
    found: list[str] = []
    whole = text.strip()

    def repl(m: re.Match[str]) -> str:
        span = m.group(0)
        if span[0] == "(" and span != whole and span[1:-1].strip().lower() not in _KNOWN_TAGS:
            return f" {span[1:-1]} "  # ordinary parenthetical: keep the words
        found.append(span)
        return " "

    return _ANNOTATION.sub(repl, text), found


def verbalize_numbers(text: str, lang: str) -> str:
    """Digits, times, money, percentages and spoken symbols (& + @ %) -> words in ``lang``.

    Raises ``TextRejected("unverbalizable", ...)`` when something numeric cannot be
    read in ``lang`` (no num2words support, a symbol with no known word, overflow).
    """
    try:
        return verbalize(text, _check_lang(lang))
    except Unverbalizable as exc:
        raise TextRejected("unverbalizable", str(exc)) from exc


# --------------------------------------------------------------------------- normalizer


@dataclass(frozen=True)
class TextConfig:
    """Settings of one normalizer; the defaults are the training-label settings."""

    lang: str  # ISO 639 code: "es" and "en" have full rules, anything else the generic fallback
    lowercase: bool = True  # lowercase everything (Á -> á)
    strip_punctuation: bool = True  # punctuation/symbols -> space; intra-word apostrophes kept (not in es)
    verbalize_numbers: bool = True  # digits, money, %, & + @ -> words; off = digits are kept as digits
    annotations: str = "drop"  # [..] <..> (known tag) spans: "drop" them, or "reject" the whole text
    strip_accents: bool = False  # scoring only: á -> a, ü -> u; letters like Spanish ñ are kept
    check_alphabet: bool = True  # reject text with characters outside alphabet(lang)

    def __post_init__(self) -> None:
        _check_lang(self.lang)
        for f in dataclasses.fields(self):
            if f.name not in ("lang", "annotations") and not isinstance(getattr(self, f.name), bool):
                raise ValueError(f"TextConfig.{f.name} must be true or false, got {getattr(self, f.name)!r}")
        if self.annotations not in ("drop", "reject"):
            raise ValueError(f"TextConfig.annotations must be 'drop' or 'reject', got {self.annotations!r}")


class Normalizer:
    """Callable text normalizer: ``normalizer(text) -> str`` or ``TextRejected``."""

    def __init__(self, config: TextConfig) -> None:
        self.config = config
        self.name = f"speechtl-text-{config.lang}-{VERSION}"
        self.settings: dict[str, Any] = dataclasses.asdict(config)
        self._alphabet = _ALPHABETS.get(config.lang)
        self._clean = _CLEAN[self._alphabet is None]
        self._keep_marks = _KEEP_MARKS.get(config.lang, frozenset())
        log.debug("text normalizer %s %s", self.name, self.settings)

    def __repr__(self) -> str:
        return f"Normalizer({self.config!r})"

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"Normalizer expects str, got {type(text).__name__}")
        cfg = self.config
        s = _SPACES.sub(" ", unicodedata.normalize("NFC", text).translate(self._clean)).strip()
        s, found = _split_annotations(s)
        if found and cfg.annotations == "reject":
            raise TextRejected("non_speech", f"non-speech annotation {found[0]!r} (annotations='reject')")
        if cfg.verbalize_numbers:
            try:
                s = verbalize(s, cfg.lang)
            except Unverbalizable as exc:
                raise TextRejected("unverbalizable", str(exc)) from exc
        if cfg.lowercase:
            s = s.lower()
        if cfg.strip_punctuation:
            if cfg.lang == "es":
                s = _APOS_INTRA.sub("", s)
            s = _APOS_OTHER.sub(" ", s).translate(_PUNCT)
        if cfg.lang == "en":
            s = _strip_marks(s, frozenset())
        s = _SPACES.sub(" ", s).strip()
        if not any(unicodedata.category(c)[0] in "LN" for c in s):
            if found:
                spans = ", ".join(repr(a) for a in found)
                raise TextRejected("non_speech", f"only non-speech annotations: {spans}")
            raise TextRejected("empty", f"nothing speakable left after normalizing {text!r}")
        if cfg.check_alphabet:
            self._check(s)
        if cfg.strip_accents:
            s = _strip_marks(s, self._keep_marks)
        return s

    def _check(self, s: str) -> None:
        bad = sorted(c for c in set(s) if not self._allowed(c))
        if bad:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in bad)
            raise TextRejected("bad_chars", f"characters outside the {self.config.lang} alphabet: {shown}")

    def _allowed(self, c: str) -> bool:
        cat = unicodedata.category(c)
        if c == " " or (not self.config.strip_punctuation and cat[0] in "PS"):
            return True
        if not self.config.verbalize_numbers and cat[0] == "N":
            return True
        if self._alphabet is None:
            return cat[0] in "LM" or c == "'" or c in _JOINERS
        return c in self._alphabet or c.lower() in self._alphabet


_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(TextConfig) if f.name != "lang")


def get_normalizer(lang: str, **overrides: Any) -> Normalizer:
    """The normalizer for ``lang`` with ``TextConfig`` fields overridden by keyword."""
    unknown = sorted(set(overrides) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown text setting(s) {unknown}; valid settings are {list(_CONFIG_KEYS)}")
    return Normalizer(TextConfig(lang=lang, **overrides))
