"""The Asterisk Spanish prompts importer: the text fixes, and the real Debian packages."""

import gzip

import numpy as np
import pytest
import soundfile as sf

from speechtl.data.importers import CorpusError, asterisk
from speechtl.data.prepare import PrepareConfig, prepare


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Por favor ingrese su numero de agente", "Por favor ingrese su número de agente"),
        ("Contrasena incorrecta.", "Contraseña incorrecta."),
        ("Por favor ingese el numero", "Por favor ingrese el número"),
        ("No esta disponible", "No está disponible"),
        ("Si esta es la persona", "Si esta es la persona"),
        ("enviar a esta persona", "enviar a esta persona"),
        ("Trés para expulsar", "Tres para expulsar"),
        ("bloquear ó desbloquear", "bloquear o desbloquear"),
        ("NUMERO", "NÚMERO"),
        ("Marque 2 paracambiar de carpeta", "Marque 2 para cambiar de carpeta"),
        ("Para mas informacion", "Para más información"),
        ("La conferencia ha sido extendida.", "La conferencia ha sido extendida."),
    ],
)
def test_restore(raw, expected):
    assert asterisk.restore(raw) == expected


def _fake_corpus(tmp_path, lines):
    root = tmp_path / "es"
    (root / "digits").mkdir(parents=True)
    (root / "silence").mkdir()
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)).astype(np.float32)
    for name in ("vm-intro", "conf-x", "digits/0", "digits/10", "digits/1F", "letters/b", "silence/1", "vm-orphan"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / f"{name}.wav", tone if not name.startswith("silence") else tone * 0, 16000)
    texts = tmp_path / "texts.txt.gz"
    with gzip.open(texts, "wt", encoding="utf-8") as handle:
        handle.write("; comment\n\n" + "".join(line + "\n" for line in lines))
    return root, texts


def test_read_fixes_ids_and_keeps_every_prompt(tmp_path):
    root, texts = _fake_corpus(
        tmp_path,
        ["vm-intro: Marque 1 para el menu", "conf-x: [tono simple]", "digits/0: cero", "digits/0: diez",
         "digits/1f: una", "letters/b: b", "vm-missing: Sin audio"],
    )
    assert asterisk.detect(root)
    items = {i.id: i for i in asterisk.read(root, texts=texts)}
    assert set(items) == {"vm-intro", "conf-x", "digits/0", "digits/10", "digits/1F", "letters/b", "vm-missing",
                          "silence/1", "vm-orphan"}
    assert items["digits/10"].text == "diez" and items["digits/10"].audio_path.name == "10.wav"
    assert items["vm-intro"].text == "Marque 1 para el menú"
    assert items["vm-intro"].extra["raw_text"] == "Marque 1 para el menu"
    assert items["letters/b"].extra["reject"]["reason"] == "spelled_letter"
    assert items["vm-missing"].audio_path is None
    assert items["vm-orphan"].extra["transcript_missing"]
    assert items["silence/1"].extra["reject"]["reason"] == "non_speech"

    result = prepare(items.values(), tmp_path / "out", PrepareConfig(lang="es", max_reject_share=1.0, num_workers=0))
    reasons = {r.id: r.reason for r in result.rejected}
    assert reasons == {
        "conf-x": "non_speech",
        "letters/b": "spelled_letter",
        "vm-missing": "missing_audio",
        "vm-orphan": "missing_transcript",
        "silence/1": "non_speech",
    }
    assert {u.id: u.text for u in result.utterances}["vm-intro"] == "marque uno para el menú"


def test_unknown_duplicate_id_is_an_error(tmp_path):
    root, texts = _fake_corpus(tmp_path, ["vm-intro: uno", "vm-intro: otro"])
    with pytest.raises(CorpusError, match=r"texts.txt.gz:4: id 'vm-intro' repeats line 3"):
        list(asterisk.read(root, texts=texts))


@pytest.mark.skipif(not asterisk.DEFAULT_TEXTS.is_file(), reason="Debian asterisk-core-sounds-es not installed")
def test_real_debian_prompts(tmp_path):
    items = list(asterisk.read(asterisk.DEFAULT_ROOT))
    assert asterisk.detect(asterisk.DEFAULT_ROOT)
    with_both = [i for i in items if i.audio_path is not None and i.text and "reject" not in i.extra]
    assert 440 <= len(with_both) <= 500
    assert len({i.id for i in items}) == len(items)
    assert all(i.audio_path is not None for i in items)  # every text found its audio file


# --- other voices (es-co): texts by prompt id --------------------------------------------------------------

ESCO_TEXTS = [
    "vm-goodbye: hasta pronto.",
    "vm-intro: Marque 1 para el menu",
    "digits/0: cero",
    "digits/0: diez",
    "digits/1f: una",
    "digits/a-m: a.m.",
    "letters/b: b",
    "vm-unrecorded: Nunca grabado",
]
ESCO_FILES = ("vm-goodbye", "vm-intro", "conf-x", "digits/0", "digits/10", "digits/1F", "digits/a-m", "letters/b",
              "digits/h-21")


def _fake_esco(tmp_path, monkeypatch):
    """A texts file and a fake es-co root at its cache place (SPEECHTL_CACHE=tmp_path/cache)."""
    monkeypatch.setenv("SPEECHTL_CACHE", str(tmp_path / "cache"))
    root = asterisk.default_root("es-co")
    for name in ESCO_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.gsm").write_bytes(b"\xd0" * 33)  # the importer only yields paths
    texts = tmp_path / "texts.txt.gz"
    with gzip.open(texts, "wt", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in ESCO_TEXTS))
    return root, texts


def test_default_root_follows_the_cache_env(tmp_path, monkeypatch):
    monkeypatch.delenv("SPEECHTL_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sub = "debian/asterisk-prompt-es-co/usr/share/asterisk/sounds/es"
    assert asterisk.default_root("es-co") == tmp_path / "home" / ".cache" / "speechtl" / sub
    monkeypatch.setenv("SPEECHTL_CACHE", str(tmp_path / "c"))
    assert asterisk.default_root("es-co") == tmp_path / "c" / sub
    assert asterisk.default_root() == asterisk.default_root("es_MX_f_Allison") == asterisk.DEFAULT_ROOT
    with pytest.raises(ValueError, match="unknown voice 'xx'.*es-co"):
        asterisk.default_root("xx")


@pytest.mark.parametrize(
    "prompt_id, file, text, reject",
    [
        ("vm-goodbye", "vm-goodbye.gsm", "hasta pronto.", None),
        ("vm-intro", "vm-intro.gsm", "Marque 1 para el menú", None),  # the core text, restored
        ("digits/0", "digits/0.gsm", "cero", None),
        ("digits/10", "digits/10.gsm", "diez", None),  # DUPLICATE_IDS
        ("digits/1F", "digits/1F.gsm", "una", None),  # ID_RENAMES
        ("digits/a-m", "digits/a-m.gsm", "a.m.", "spelled_abbreviation"),  # EXCLUDE
        ("letters/b", "letters/b.gsm", "b", "spelled_letter"),
        ("conf-x", "conf-x.gsm", "", None),  # audio without text
        ("digits/h-21", "digits/h-21.gsm", "", None),
    ],
)
def test_esco_maps_audio_to_texts_by_id(tmp_path, monkeypatch, prompt_id, file, text, reject):
    root, texts = _fake_esco(tmp_path, monkeypatch)
    items = {i.id: i for i in asterisk.read(None, texts=texts, voice="es-co")}
    item = items[prompt_id]
    assert item.audio_path == root / file
    assert item.text == text
    assert item.speaker == "es_CO_f_July"
    assert item.extra.get("reject", {}).get("reason") == reject
    assert item.extra["voice"] == "es-co"
    assert item.extra["texts_source"] == "core-sounds-es.txt by prompt id"
    assert item.extra.get("transcript_missing", False) == (text == "")
    assert item.extra.get("wording_fixed_by_id", False) == (prompt_id in ("digits/0", "digits/10"))


def test_esco_yields_only_recorded_prompts(tmp_path, monkeypatch):
    root, texts = _fake_esco(tmp_path, monkeypatch)
    items = list(asterisk.read(texts=texts, voice="es-co"))
    assert sorted(i.id for i in items) == sorted(f.replace("1f", "1F") for f in ESCO_FILES)  # no vm-unrecorded
    assert all(i.audio_path is not None for i in items)
    assert items[0].extra["raw_id"] == "vm-goodbye" and items[0].extra["texts_line"] == 1
    # an explicit root wins over the voice default
    other = tmp_path / "other"
    (other / "vm-goodbye.gsm").parent.mkdir()
    (other / "vm-goodbye.gsm").write_bytes(b"x")
    assert [(i.id, i.audio_path) for i in asterisk.read(other, texts=texts, voice="es-co")] == [
        ("vm-goodbye", other / "vm-goodbye.gsm")
    ]


def test_esco_through_prepare_quarantines_audio_without_text(tmp_path, monkeypatch):
    root, texts = _fake_esco(tmp_path, monkeypatch)
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / 8000)).astype(np.float32)
    for name in ("vm-goodbye", "conf-x"):  # prepare decodes: real audio, as wav
        (root / f"{name}.gsm").unlink()
        sf.write(root / f"{name}.wav", tone, 8000)
    items = [i for i in asterisk.read(texts=texts, voice="es-co") if i.id in ("vm-goodbye", "conf-x")]
    result = prepare(items, tmp_path / "out", PrepareConfig(lang="es", max_reject_share=1.0, num_workers=0))
    assert {r.id: r.reason for r in result.rejected} == {"conf-x": "missing_transcript"}
    assert [(u.id, u.speaker) for u in result.utterances] == [("vm-goodbye", "es_CO_f_July")]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"voice": "es-co"}, r"audio folder .*asterisk-prompt-es-co/usr/share/asterisk/sounds/es of voice 'es-co' "
                             r"is missing: .*package asterisk-prompt-es-co; run `make setup` \(scripts/system-deps.sh\)"),
        ({"voice": "es-co", "root": "{tmp}/nowhere"}, r"audio folder .*/nowhere of voice 'es-co' is missing"),
        ({"voice": "es-co", "root": str(asterisk.DEFAULT_ROOT)}, r"holds voice 'es_MX_f_Allison', not 'es-co'"),
        ({"voice": "es-mx"}, r"unknown voice 'es-mx'"),
    ],
)
def test_esco_bad_root_or_voice(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.setenv("SPEECHTL_CACHE", str(tmp_path / "empty-cache"))
    if "root" in kwargs:
        kwargs = {**kwargs, "root": kwargs["root"].format(tmp=tmp_path)}
        if kwargs["root"] == str(asterisk.DEFAULT_ROOT) and not asterisk.DEFAULT_ROOT.is_dir():
            pytest.skip("Debian asterisk-core-sounds-es-g722 not installed")
    texts = tmp_path / "texts.txt"
    texts.write_text("vm-goodbye: hasta pronto.\n", encoding="utf-8")
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        list(asterisk.read(texts=texts, **kwargs))


_REAL_ESCO = asterisk.default_root("es-co")


@pytest.mark.skipif(
    not (_REAL_ESCO.is_dir() and asterisk.DEFAULT_TEXTS.is_file()),
    reason="asterisk-prompt-es-co not extracted (scripts/system-deps.sh) or asterisk-core-sounds-es not installed",
)
def test_real_esco_prompts():
    assert asterisk.detect(_REAL_ESCO)
    items = list(asterisk.read(_REAL_ESCO, voice="es-co"))
    audio = sorted(_REAL_ESCO.rglob("*.gsm"))
    assert len(items) == len(audio) >= 250  # every file is an item, every item a file
    assert sorted(i.audio_path for i in items) == audio
    with_text = [i for i in items if not i.extra.get("transcript_missing")]
    assert len(with_text) >= 0.8 * len(audio)
    assert {i.speaker for i in items} == {"es_CO_f_July"}
