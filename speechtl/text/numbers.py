"""Numbers and spoken symbols -> words, per language (the readings are documented in :mod:`speechtl.text.normalize`).

:func:`verbalize` turns digits, times, money, percentages, ordinals and the
symbols ``& + @ %`` into words with num2words and a small reader class per
language (Spanish, English, and a generic fallback); anything numeric left
without a reading raises :class:`Unverbalizable`.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from functools import lru_cache
from typing import Any

from num2words import CONVERTER_CLASSES, num2words

_SPACES_RE = re.compile(r"\s+")


class Unverbalizable(ValueError):
    """Something numeric has no reading in the language (:mod:`speechtl.text.normalize`: ``unverbalizable``)."""


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
        self.lang = lang
        self.supported = lang in CONVERTER_CLASSES
        self.number_re = _number_pattern(self.continental, self.ordinal_suffix)

    def n2w(self, value: int | Decimal, **kwargs: Any) -> str:
        if not self.supported:
            raise Unverbalizable(f"number {value} cannot be read: num2words has no {self.lang!r} language")

        try:
            words = num2words(value, lang=self.lang, **kwargs)
        except (OverflowError, NotImplementedError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise Unverbalizable(f"number {value} cannot be read in {self.lang!r}: {exc}") from exc
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
            raise Unverbalizable(f"no spoken form of {symbol!r} for language {self.lang!r}")
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
        raise Unverbalizable(f"number characters with no reading in {r.lang!r}: {shown}")
    return _SPACE_BEFORE_PUNCT.sub("", _SPACES_RE.sub(" ", text)).strip()


def verbalize(text: str, lang: str) -> str:
    """``text`` with every number and spoken symbol read out in ``lang`` (raises :class:`Unverbalizable`)."""
    return _verbalize(text, _reader(lang))
