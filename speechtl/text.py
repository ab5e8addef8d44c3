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
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable

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


# --------------------------------------------------------------------------- numbers


def _unverbalizable(detail: str) -> TextRejected:
    return TextRejected("unverbalizable", detail)


@lru_cache(maxsize=None)
def _number_pattern(continental: bool, ordinal: str) -> re.Pattern[str]:
    group = "[. ]" if continental else "[, ]"
    dec = "[.,]" if continental else r"\."
    ord_alt = f"(?P<ord>{ordinal})|" if ordinal else ""
    return re.compile(
        r"(?:(?P<cur_pre>[$€£])\s?)?"
        r"(?P<sign>(?<![\w.,])[-−])?"
        rf"(?P<int>\d{{1,3}}(?P<gsep>{group})\d{{3}}(?:(?P=gsep)\d{{3}})*(?!\d)|\d+)"
        rf"(?:(?P<dsep>{dec})(?P<frac>\d+))?"
        rf"(?:{ord_alt} ?(?P<pct>%)| ?(?P<cur>[$€£])| ?(?P<deg>°[CF]?))?"
    )


_TIME = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?![\d:])")
_SYMBOL = re.compile(r"[&+@%]")
_SPACE_BEFORE_PUNCT = re.compile(r" +(?=[,.;:!?…)\]}])")  # "twenty-first ," -> "twenty-first,"


def _ascii_digits(s: str) -> str:
    return "".join(str(int(c)) for c in s)


class _Reader:
    """Number and symbol words for one language; the base class is the generic fallback."""

    continental = True  # "," or "." decimal, "." or space thousands (else "." decimal, "," thousands)
    ordinal_suffix = ""  # regex for ordinal indicators after digits; "" = none
    minus = ""  # word for a leading "-"; "" = num2words reads signed numbers itself
    point_words: dict[str, str] = {}  # decimal separator -> word; {} = num2words reads decimals
    symbols: dict[str, str] = {}  # spoken symbols (& + @ %) -> words
    degrees: dict[str, str] = {}  # "", "C", "F" -> words after a number with °
    currencies: dict[str, tuple[str, str, str, str]] = {}  # symbol -> unit, units, subunit, subunits
    money_joiner = ""  # between units and subunits

    def __init__(self, lang: str) -> None:
        from num2words import CONVERTER_CLASSES  # light, but keep import cost off module load

        self.lang = lang
        self.supported = lang in CONVERTER_CLASSES
        self.number_re = _number_pattern(self.continental, self.ordinal_suffix)

    def n2w(self, value: int | Decimal, **kwargs: Any) -> str:
        if not self.supported:
            raise _unverbalizable(f"number {value} cannot be read: num2words has no {self.lang!r} language")
        from num2words import num2words

        try:
            words = num2words(value, lang=self.lang, **kwargs)
        except (OverflowError, NotImplementedError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise _unverbalizable(f"number {value} cannot be read in {self.lang!r}: {exc}") from exc
        return words.replace(",", " ")

    def cardinal(self, n: int) -> str:
        return self.n2w(n)

    def digits(self, s: str) -> str:
        return " ".join(self.cardinal(int(c)) for c in s)

    def fraction(self, frac: str) -> str:
        return self.digits(frac)

    def number(self, neg: bool, n: int, dsep: str | None, frac: str | None) -> str:
        if not self.point_words:
            value: int | Decimal = n if frac is None else Decimal(f"{n}.{_ascii_digits(frac)}")
            return self.n2w(-value if neg else value)
        words = self.cardinal(n)
        if frac is not None and dsep is not None:
            words = f"{words} {self.point_words[dsep]} {self.fraction(frac)}"
        return f"{self.minus} {words}" if neg else words

    def ordinal(self, n: int, suffix: str) -> str:
        return self.n2w(n, to="ordinal")

    def time(self, h: int, m: int) -> str:
        return self.cardinal(h) if m == 0 else f"{self.cardinal(h)} {self.cardinal(m)}"

    def word_for(self, table: dict[str, Any], key: str, symbol: str) -> Any:
        if key not in table:
            raise _unverbalizable(f"no spoken form of {symbol!r} for language {self.lang!r}")
        return table[key]

    def count(self, n: int, one: str, many: str) -> str:
        return f"{self.cardinal(n)} {one if n == 1 else many}"

    def money(self, neg: bool, n: int, dsep: str | None, frac: str | None, symbol: str) -> str:
        one, many, sub_one, sub_many = self.word_for(self.currencies, symbol, symbol)
        if frac is not None and len(frac) == 2:
            cents = int(frac)
            parts = [self.count(n, one, many)] if n or not cents else []
            parts += [self.count(cents, sub_one, sub_many)] if cents else []
            words = f" {self.money_joiner} ".join(parts)
        elif frac is not None:
            words = f"{self.number(False, n, dsep, frac)} {many}"
        else:
            words = self.count(n, one, many)
        return f"{self.minus} {words}" if neg else words


class _Spanish(_Reader):
    ordinal_suffix = r"\.?[ºª]|(?:era|ero|er|ra|ro|da|do|ta|to|va|vo|na|no|ma|mo)(?![^\W\d_])"
    minus = "menos"
    point_words = {",": "coma", ".": "punto"}
    symbols = {"&": "y", "+": "más", "@": "arroba", "%": "por ciento"}
    degrees = {"": "grados", "C": "grados celsius", "F": "grados fahrenheit"}
    currencies = {
        "€": ("euro", "euros", "céntimo", "céntimos"),
        "$": ("dólar", "dólares", "centavo", "centavos"),
        "£": ("libra", "libras", "penique", "peniques"),
    }
    money_joiner = "con"
    _FEMININE_ORD = ("ª", "a", "era", "ra", "da", "ta", "va", "na", "ma")
    _O_END = re.compile(r"o\b")
    _NUMERO = re.compile(r"(?<![^\W\d_])[Nn]\.?[º°](?![^\W\d_])")

    def fraction(self, frac: str) -> str:
        if len(frac) <= 3 and not frac.startswith("0"):
            return self.cardinal(int(frac))
        return self.digits(frac)

    def ordinal(self, n: int, suffix: str) -> str:
        words = self.n2w(n, to="ordinal")
        tag = suffix.lstrip(".").lower()
        if tag in self._FEMININE_ORD:
            return self._O_END.sub("a", words)  # vigésimo primero -> vigésima primera
        if tag == "er" and words.endswith(("primero", "tercero")):
            return words[:-1]  # 1er -> primer
        return words

    @staticmethod
    def _apocope(words: str) -> str:  # before a masculine noun: veintiuno -> veintiún
        if words.endswith("veintiuno"):
            return words[:-3] + "ún"
        return words[:-1] if words.endswith("uno") else words

    def time(self, h: int, m: int) -> str:
        hour = self.cardinal(h)
        if hour.endswith("uno"):
            hour = hour[:-1] + "a"  # la una, las veintiuna
        return f"{hour} en punto" if m == 0 else f"{hour} y {self.cardinal(m)}"

    def count(self, n: int, one: str, many: str) -> str:
        if n == 1:
            return f"un {one}"
        words = self._apocope(self.cardinal(n))
        if words.endswith(("millón", "millones", "billón", "billones")):
            words += " de"  # un millón de euros
        return f"{words} {many}"


class _English(_Reader):
    continental = False
    ordinal_suffix = r"(?i:st|nd|rd|th)(?![^\W\d_])"
    minus = "minus"
    point_words = {".": "point"}
    symbols = {"&": "and", "+": "plus", "@": "at", "%": "percent"}
    degrees = {"": "degrees", "C": "degrees celsius", "F": "degrees fahrenheit"}
    currencies = {
        "$": ("dollar", "dollars", "cent", "cents"),
        "€": ("euro", "euros", "cent", "cents"),
        "£": ("pound", "pounds", "penny", "pence"),
    }
    money_joiner = "and"

    def time(self, h: int, m: int) -> str:
        if m == 0:
            return f"{self.cardinal(h)} o'clock"
        minutes = f"oh {self.cardinal(m)}" if m < 10 else self.cardinal(m)
        return f"{self.cardinal(h)} {minutes}"


@lru_cache(maxsize=64)
def _reader(lang: str) -> _Reader:
    return {"es": _Spanish, "en": _English}.get(lang, _Reader)(lang)


def _read_number(r: _Reader, m: re.Match[str]) -> str:
    g = m.groupdict()
    int_s, frac, dsep, ord_ = g["int"], g["frac"], g["dsep"], g.get("ord")
    neg = g["sign"] is not None
    symbol = g["cur_pre"] or g["cur"]
    if g["gsep"] == " " and int_s.count(" ") >= 2 and not (neg or symbol or g["pct"] or g["deg"] or ord_ or frac):
        # "900 123 456": three or more space-separated groups are a phone number read group by group
        return " " + " ".join(r.digits(x) if x[0] == "0" else r.number(False, int(x), None, None)
                              for x in int_s.split(" ")) + " "
    if g["gsep"]:
        int_s = int_s.replace(g["gsep"], "")
    bare = not (neg or symbol or g["pct"] or g["deg"] or ord_ or frac is not None or g["gsep"])
    if bare and (len(int_s) >= 6 or (len(int_s) > 1 and int(int_s[0]) == 0)):
        return f" {r.digits(int_s)} "  # phone number or code
    n = int(int_s)
    if ord_ and not (neg or frac is not None or symbol):
        return f" {r.ordinal(n, ord_)} "
    if symbol:
        words = r.money(neg, n, dsep, frac, symbol)
    else:
        words = r.number(neg, n, dsep, frac)
    if g["pct"]:
        words += " " + r.word_for(r.symbols, "%", "%")
    if g["deg"]:
        words += " " + r.word_for(r.degrees, g["deg"][1:], g["deg"])
    if ord_:
        words += " " + ord_
    return f" {words} "


def _verbalize(text: str, r: _Reader) -> str:
    def time(m: re.Match[str]) -> str:
        h, mins = int(m.group(1)), int(m.group(2))
        return f" {r.time(h, mins)} " if h <= 24 and mins <= 59 else m.group(0)

    if isinstance(r, _Spanish):
        text = r._NUMERO.sub(" número ", text)
    text = _TIME.sub(time, text)
    text = r.number_re.sub(lambda m: _read_number(r, m), text)
    text = _SYMBOL.sub(lambda m: f" {r.word_for(r.symbols, m.group(0), m.group(0))} ", text)
    leftovers = sorted({c for c in text if unicodedata.category(c)[0] == "N"})
    if leftovers:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in leftovers)
        raise _unverbalizable(f"number characters with no reading in {r.lang!r}: {shown}")
    return _SPACE_BEFORE_PUNCT.sub("", _SPACES.sub(" ", text)).strip()


def verbalize_numbers(text: str, lang: str) -> str:
    """Digits, times, money, percentages and spoken symbols (& + @ %) -> words in ``lang``.

    Raises ``TextRejected("unverbalizable", ...)`` when something numeric cannot be
    read in ``lang`` (no num2words support, a symbol with no known word, overflow).
    """
    return _verbalize(text, _reader(_check_lang(lang)))


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
        self._reader = _reader(config.lang)
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
            s = _verbalize(s, self._reader)
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
