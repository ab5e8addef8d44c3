"""Table-driven tests for speechtl.text.normalize: normalization, numbers, annotations, alphabets."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest

from speechtl.text.normalize import (
    Normalizer,
    TextConfig,
    TextRejected,
    alphabet,
    get_normalizer,
    verbalize_numbers,
)


@dataclass(frozen=True)
class Rej:
    """Expected rejection: reason, and a substring the detail must contain."""

    reason: str
    detail: str = ""


NO_ACCENTS = {"strip_accents": True}
KEEP_CASE_PUNCT = {"lowercase": False, "strip_punctuation": False}

# (text, lang, overrides, expected output or Rej)
CASES: list[tuple[str, str, dict, str | Rej]] = [
    # --- always-on cleanup
    ("  Hola\t\n  mundo  ", "es", {}, "hola mundo"),
    ("ho\u200bla\u00admundo\ufeff", "es", {}, "holamundo"),
    ("e\u0301xito", "es", {}, "éxito"),  # NFD input -> NFC
    ("Qu\u00e9\u00a0tal", "es", {}, "qué tal"),  # NBSP is whitespace
    ("don\u2019t", "en", {}, "don't"),  # typographic apostrophe unified
    ("\u201cHola\u201d", "es", KEEP_CASE_PUNCT, '"Hola"'),  # typographic quotes unified
    ("«Hola»", "es", KEEP_CASE_PUNCT, '"Hola"'),
    # --- Spanish letters, case, punctuation
    ("¿Qué tal? ¡Bien!", "es", {}, "qué tal bien"),
    ("ÁRBOL ÉXITO ÍNDICE ÓPERA ÚLTIMO PINGÜINO ÑANDÚ", "es", {}, "árbol éxito índice ópera último pingüino ñandú"),
    ("Hola… «amigo» – dijo — sí", "es", {}, "hola amigo dijo sí"),
    ("bien-estar socio-económico", "es", {}, "bien estar socio económico"),
    ("O'Donnell", "es", {}, "odonnell"),
    ("¿Qué tal?", "es", KEEP_CASE_PUNCT, "¿Qué tal?"),
    ("Árbol", "es", {"lowercase": False}, "Árbol"),
    # --- Spanish numbers
    ("Tengo 25 años", "es", {}, "tengo veinticinco años"),
    ("1.500", "es", {}, "mil quinientos"),
    ("1 500", "es", {}, "mil quinientos"),
    ("1.500.000", "es", {}, "un millón quinientos mil"),
    ("3,5", "es", {}, "tres coma cinco"),
    ("3.5", "es", {}, "tres punto cinco"),
    ("3,14", "es", {}, "tres coma catorce"),
    ("0,05", "es", {}, "cero coma cero cinco"),
    ("1.500,25", "es", {}, "mil quinientos coma veinticinco"),
    ("1º", "es", {}, "primero"),
    ("1.º", "es", {}, "primero"),
    ("la 2ª vez", "es", {}, "la segunda vez"),
    ("el 1er piso", "es", {}, "el primer piso"),
    ("3ra", "es", {}, "tercera"),
    ("15%", "es", {}, "quince por ciento"),
    ("3,5 %", "es", {}, "tres coma cinco por ciento"),
    ("20 €", "es", {}, "veinte euros"),
    ("20€", "es", {}, "veinte euros"),
    ("$20", "es", {}, "veinte dólares"),
    ("1 €", "es", {}, "un euro"),
    ("21 €", "es", {}, "veintiún euros"),
    ("20,50 €", "es", {}, "veinte euros con cincuenta céntimos"),
    ("1.000.000 €", "es", {}, "un millón de euros"),
    ("10:30", "es", {}, "diez y treinta"),
    ("a las 10:00", "es", {}, "a las diez en punto"),
    ("1:15", "es", {}, "una y quince"),
    ("600123456", "es", {}, "seis cero cero uno dos tres cuatro cinco seis"),
    ("Llame al 900 123 456.", "es", {}, "llame al novecientos ciento veintitrés cuatrocientos cincuenta y seis"),
    ("007", "es", {}, "cero cero siete"),
    ("-5 grados", "es", {}, "menos cinco grados"),
    ("10-5", "es", {}, "diez cinco"),
    ("25°C", "es", {}, "veinticinco grados celsius"),
    ("nº 5", "es", {}, "número cinco"),
    ("mp3", "es", {}, "mp tres"),
    ("Juan & María + Pedro", "es", {}, "juan y maría más pedro"),
    ("info@correo", "es", {}, "info arroba correo"),
    ("1.000.000.000.000.000.000.000.000.000", "es", {}, Rej("unverbalizable", "1000000000000000000000000000")),
    ("25 años", "es", {"verbalize_numbers": False}, "25 años"),
    ("15%", "es", {"verbalize_numbers": False}, "15"),
    # --- Spanish rejections
    ("crème", "es", {}, Rej("bad_chars", "'è' (U+00E8)")),
    ("garçon straße", "es", {}, Rej("bad_chars", "characters outside the es alphabet: 'ß' (U+00DF), 'ç' (U+00E7)")),
    ("Москва", "es", {}, Rej("bad_chars", "'м' (U+043C)")),
    ("garçon", "es", {"check_alphabet": False}, "garçon"),
    ("", "es", {}, Rej("empty")),
    ("   ", "es", {}, Rej("empty")),
    ("¿? ... ¡!", "es", {}, Rej("empty")),
    ("\u200b", "es", {}, Rej("empty")),
    # --- annotations
    ("[tono simple]", "es", {}, Rej("non_speech", "'[tono simple]'")),
    ("[ ascending tones ]", "en", {}, Rej("non_speech", "'[ ascending tones ]'")),
    ("<noise> <unk>", "en", {}, Rej("non_speech", "'<noise>', '<unk>'")),
    ("[laughter] ...", "en", {}, Rej("non_speech", "[laughter]")),
    ("(risas)", "es", {}, Rej("non_speech", "(risas)")),
    ("(Hola)", "es", {}, Rej("non_speech", "(Hola)")),  # whole text in parentheses
    ("(Risas) hola", "es", {}, "hola"),
    ("hola <unk> mundo [ruido]", "es", {}, "hola mundo"),
    ("hola (que no) adiós", "es", {}, "hola que no adiós"),
    ("hola (ruido) adiós", "es", {}, "hola adiós"),
    ("hola [ruido]", "es", {"annotations": "reject"}, Rej("non_speech", "'[ruido]'")),
    ("hola (que no)", "es", {"annotations": "reject"}, "hola que no"),
    ("5 < 10", "es", {}, "cinco diez"),  # a less-than sign is not an annotation
    # --- strip_accents (scoring)
    ("Canción pingüino año", "es", NO_ACCENTS, "cancion pinguino año"),
    ("AÑO", "es", {"strip_accents": True, "lowercase": False}, "AÑO"),
    ("crème", "es", NO_ACCENTS, Rej("bad_chars", "'è'")),  # checked before stripping
    ("ёлка йогурт", "ru", NO_ACCENTS, "елка йогурт"),
    ("Élève", "fr", NO_ACCENTS, "eleve"),
    # --- English
    ("I have 3.5 apples", "en", {}, "i have three point five apples"),
    ("1st 2nd 3rd 21st", "en", {}, "first second third twenty first"),
    ("15%", "en", {}, "fifteen percent"),
    ("$20", "en", {}, "twenty dollars"),
    ("$1.50", "en", {}, "one dollar and fifty cents"),
    ("1,500", "en", {}, "one thousand five hundred"),
    ("Tom & Jerry", "en", {}, "tom and jerry"),
    ("-5", "en", {}, "minus five"),
    ("10:05", "en", {}, "ten oh five"),
    ("10:00", "en", {}, "ten o'clock"),
    ("'Rock 'n' roll' isn't dead", "en", {}, "rock n roll isn't dead"),
    ("café naïve", "en", {}, "cafe naive"),
    ("smørrebrød", "en", {}, Rej("bad_chars", "'ø' (U+00F8)")),
    ("Twenty-Five", "en", {}, "twenty five"),
    ("5551234", "en", {}, "five five five one two three four"),
    ("On the 21st, I paid $20.", "en", KEEP_CASE_PUNCT, "On the twenty-first, I paid twenty dollars."),
    ("Pagué 20 €.", "es", KEEP_CASE_PUNCT, "Pagué veinte euros."),
    # --- generic fallback
    ("J'ai 25 ans", "fr", {}, "j'ai vingt cinq ans"),
    ("Ça coûte 3,5", "fr", {}, "ça coûte trois virgule cinq"),
    ("Ich habe 3,5 Äpfel", "de", {}, "ich habe drei komma fünf äpfel"),
    ("Straße", "de", {}, "straße"),
    ("У меня 5 яблок", "ru", {}, "у меня пять яблок"),
    ("Nina miaka 5", "sw", {}, Rej("unverbalizable", "'sw'")),
    ("Nina miaka mitano", "sw", {}, "nina miaka mitano"),
    ("15%", "fr", {}, Rej("unverbalizable", "'%'")),
    ("Tom & Jerry", "de", {}, Rej("unverbalizable", "'&'")),
    ("m²", "es", {}, Rej("unverbalizable", "'²'")),
    ("می\u200cخواهم", "fa", {}, "می\u200cخواهم"),  # ZWNJ is meaningful in Persian
    ("[laughter] добрый день", "ru", {}, "добрый день"),
]


def _ids() -> list[str]:
    return [f"{i}-{lang}-{text[:20]!r}" for i, (text, lang, _, _) in enumerate(CASES)]


@pytest.mark.parametrize(("text", "lang", "overrides", "expected"), CASES, ids=_ids())
def test_normalize(text: str, lang: str, overrides: dict, expected: str | Rej) -> None:
    norm = get_normalizer(lang, **overrides)
    if isinstance(expected, Rej):
        with pytest.raises(TextRejected) as info:
            norm(text)
        assert info.value.reason == expected.reason
        assert expected.detail in info.value.detail
        assert str(info.value) == f"{info.value.reason}: {info.value.detail}"
    else:
        assert norm(text) == expected


GOOD = [c for c in CASES if not isinstance(c[3], Rej)]


@pytest.mark.parametrize(("text", "lang", "overrides", "expected"), GOOD)
def test_idempotent(text: str, lang: str, overrides: dict, expected: str) -> None:
    norm = get_normalizer(lang, **overrides)
    once = norm(text)
    assert norm(once) == once


def test_table_is_broad() -> None:
    langs = {c[1] for c in CASES}
    assert {"es", "en", "fr", "de", "ru"} <= langs
    assert len(CASES) >= 60
    assert {c[3].reason for c in CASES if isinstance(c[3], Rej)} == {
        "empty",
        "non_speech",
        "bad_chars",
        "unverbalizable",
    }


@pytest.mark.parametrize(
    ("lang", "contains", "excludes"),
    [
        ("es", set("abcñáéíóúü "), set("çèß'")),
        ("en", set("az' "), set("ñé")),
    ],
)
def test_alphabet(lang: str, contains: set[str], excludes: set[str]) -> None:
    letters = alphabet(lang)
    assert letters is not None
    assert contains <= letters
    assert not (excludes & letters)


@pytest.mark.parametrize("lang", ["fr", "de", "ru", "yue"])
def test_alphabet_generic_is_none(lang: str) -> None:
    assert alphabet(lang) is None


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("25", "es", "veinticinco"),
        ("Son 15% y 20 €", "es", "Son quince por ciento y veinte euros"),
        ("3.5", "en", "three point five"),
        ("5", "fr", "cinq"),
    ],
)
def test_verbalize_numbers(text: str, lang: str, expected: str) -> None:
    assert verbalize_numbers(text, lang) == expected


def test_verbalize_numbers_unsupported_language() -> None:
    with pytest.raises(TextRejected) as info:
        verbalize_numbers("5", "sw")
    assert info.value.reason == "unverbalizable"


def test_name_and_settings() -> None:
    norm = get_normalizer("es", strip_accents=True)
    assert norm.name == "speechtl-text-es-v1"
    assert norm.settings["strip_accents"] is True
    assert norm.settings["lang"] == "es"
    assert set(norm.settings) == {
        "lang",
        "lowercase",
        "strip_punctuation",
        "verbalize_numbers",
        "annotations",
        "strip_accents",
        "check_alphabet",
    }
    assert Normalizer(TextConfig(lang="es", strip_accents=True)).settings == norm.settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lang": "ES"}, "lowercase ISO 639"),
        ({"lang": "spanish"}, "lowercase ISO 639"),
        ({"lang": "es", "annotations": "keep"}, "'drop' or 'reject'"),
        ({"lang": "es", "lowercase": "yes"}, "TextConfig.lowercase must be true or false"),
    ],
)
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TextConfig(**kwargs)


def test_unknown_override() -> None:
    with pytest.raises(ValueError, match="unknown text setting.*'lowercse'"):
        get_normalizer("es", lowercse=False)


def test_rejection_is_picklable_and_checked() -> None:
    exc = pickle.loads(pickle.dumps(TextRejected("bad_chars", "x")))
    assert (exc.reason, exc.detail, str(exc)) == ("bad_chars", "x", "bad_chars: x")
    with pytest.raises(ValueError, match="unknown TextRejected reason"):
        TextRejected("weird", "x")


def test_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="expects str"):
        get_normalizer("es")(None)  # type: ignore[arg-type]
