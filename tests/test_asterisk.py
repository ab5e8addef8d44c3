"""The Asterisk Spanish prompts importer: the text fixes, and the real Debian packages."""

import gzip

import numpy as np
import pytest
import soundfile as sf

from speechtl.importers import CorpusError, asterisk
from speechtl.prepare import PrepareConfig, prepare


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
