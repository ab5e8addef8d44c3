"""The prepare stage end to end on a messy folder corpus, through the CLI."""

import json

import numpy as np
import pytest
import soundfile as sf

from speechtl.cli import main
from speechtl.data.manifest import RawItem, read_manifest, read_quarantine
from speechtl.data.prepare import PrepareConfig, PrepareError, prepare

SR = 16000


def tone(duration_s, sr=SR, freq=440.0, amp=0.3, channels=1, pad_s=0.3):
    t = np.arange(int(duration_s * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    pad = np.zeros(int(pad_s * sr))
    x = np.concatenate([pad, x, pad]).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


# name -> (how to write the audio, transcript or None for no sidecar, expected (field, reason) or None = accepted)
CASES = {
    "good": (lambda p: sf.write(p, tone(1.0), SR), "Hola, ¿qué tal?", None),
    "stereo44k": (lambda p: sf.write(p, tone(1.0, sr=44100, channels=2), 44100), "Dos canales.", None),
    "eightbit": (lambda p: sf.write(p, tone(1.0, sr=8000), 8000, subtype="PCM_U8"), "Ocho bits.", None),
    "digits": (lambda p: sf.write(p, tone(1.0), SR), "Tengo 3 gatos.", None),
    "corrupt": (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "Archivo roto.", ("audio", "unreadable")),
    "empty": (lambda p: p.write_bytes(b""), "Archivo vacío.", ("audio", "unreadable")),
    "toolong": (lambda p: sf.write(p, tone(31.0, pad_s=0.0), SR), "Demasiado largo.", ("audio", "too_long")),
    "tooshort": (lambda p: sf.write(p, tone(0.1, pad_s=0.05), SR), "Corto.", ("audio", "too_short")),
    "silent": (lambda p: sf.write(p, np.zeros(SR, dtype=np.float32), SR), "Nada.", ("audio", "silent")),
    "badchars": (lambda p: sf.write(p, tone(1.0), SR), "Ça va très bien.", ("text", "bad_chars")),
    "nonspeech": (lambda p: sf.write(p, tone(1.0), SR), "[tono simple]", ("text", "non_speech")),
    "punctonly": (lambda p: sf.write(p, tone(1.0), SR), "¿?...", ("text", "empty")),
    "notext": (lambda p: sf.write(p, tone(1.0), SR), None, ("text", "missing_transcript")),
    "hugetext": (lambda p: sf.write(p, tone(2.9), SR), "hola señor " * 1_000_000, ("text", "text_audio_mismatch")),
    "longtext": (lambda p: sf.write(p, tone(1.0), SR), "una frase larga " * 10, ("text", "text_audio_mismatch")),
    "latin1": (lambda p: sf.write(p, tone(1.0), SR), b"Se\xf1or, \xbfqu\xe9 tal?", ("text", "bad_encoding")),
}


@pytest.fixture
def messy_corpus(tmp_path):
    root = tmp_path / "corpus" / "spk1"
    root.mkdir(parents=True)
    for name, (write, text, _) in CASES.items():
        write(root / f"{name}.wav")
        if isinstance(text, bytes):  # a sidecar in another encoding (latin-1)
            (root / f"{name}.txt").write_bytes(text)
        elif text is not None:
            (root / f"{name}.txt").write_text(text, encoding="utf-8")
    return tmp_path / "corpus"


def test_prepare_quarantines_every_bad_item_with_its_reason(messy_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prepare", str(messy_corpus), "--format", "folder", "--lang", "es", "--out", str(out),
                 "--max-reject-share", "1.0", "--num-workers", "2"])
    assert code == 0
    utts = {u.id.split("__")[-1]: u for u in read_manifest(out / "manifest.jsonl")}
    rejected = {r.id.split("__")[-1]: r for r in read_quarantine(out / "quarantine.jsonl")}
    assert len(utts) + len(rejected) == len(CASES)  # nothing lost
    for name, (_, text, expected) in CASES.items():
        if expected is None:
            assert name in utts, f"{name} should be accepted, got {rejected.get(name)}"
        else:
            assert name in rejected, f"{name} should be rejected"
            assert (rejected[name].field, rejected[name].reason) == expected, name
            assert rejected[name].detail
    for utt in utts.values():
        info = sf.info(utt.audio_filepath)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - utt.duration) < 1e-3
        assert utt.lang == "es" and utt.speaker == "spk1"
    assert utts["digits"].text == "tengo tres gatos"
    assert utts["digits"].extra["raw_text"] == "Tengo 3 gatos."
    assert utts["stereo44k"].extra["source_sample_rate"] == 44100
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected"] == len(rejected)
    assert summary["rejected_by_reason"]["audio:unreadable"] == 2
    printed = capsys.readouterr().out
    assert "rejected 12 of 16 items" in printed and "audio:too_long" in printed


def test_prepare_fails_over_the_reject_share_but_writes_both_files(messy_corpus, tmp_path):
    out = tmp_path / "out"
    items = [RawItem(id=f"x{i}", text="hola", audio_path=tmp_path / "nope.wav") for i in range(3)]
    with pytest.raises(PrepareError, match="3 of 3 items"):
        prepare(items, out, PrepareConfig(lang="es", max_reject_share=0.5, num_workers=0))
    assert len(read_quarantine(out / "quarantine.jsonl")) == 3
    assert read_manifest(out / "manifest.jsonl") == []


def test_prepare_honours_importer_rejections_and_in_memory_audio(tmp_path):
    items = [
        RawItem(id="mem", text="Uno dos.", samples=tone(1.0, sr=22050), sample_rate=22050, speaker="a"),
        RawItem(id="flagged", text="b", audio_path=tmp_path / "b.wav",
                extra={"reject": {"field": "text", "reason": "spelled_letter", "detail": "letter names vary"}}),
    ]
    result = prepare(items, tmp_path / "out", PrepareConfig(lang="es", max_reject_share=1.0, num_workers=0))
    assert [u.id for u in result.utterances] == ["mem"]
    assert result.utterances[0].text == "uno dos"
    assert [(r.id, r.reason) for r in result.rejected] == [("flagged", "spelled_letter")]


def test_duplicate_ids_are_an_error(tmp_path):
    items = [RawItem(id="a", text="x"), RawItem(id="a", text="y")]
    with pytest.raises(PrepareError, match="duplicate utterance id 'a'"):
        prepare(items, tmp_path / "out", PrepareConfig(lang="es", num_workers=0))


def test_prepare_with_split_writes_disjoint_manifests(tmp_path):
    root = tmp_path / "corpus"
    for spk in range(4):
        (root / f"spk{spk}").mkdir(parents=True)
        for t in range(10):
            sf.write(root / f"spk{spk}" / f"u{t}.wav", tone(0.6, freq=300 + 40 * t), SR)
            (root / f"spk{spk}" / f"u{t}.txt").write_text(f"frase número {t}", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["prepare", str(root), "--format", "folder", "--lang", "es", "--out", str(out), "--split",
                 "--num-workers", "0"]) == 0
    parts = {name: read_manifest(out / f"{name}.jsonl") for name in ("train", "dev", "test")}
    leftovers = read_quarantine(out / "split_leftovers.jsonl")
    assert sum(map(len, parts.values())) + len(leftovers) == 40
    assert not {u.speaker for u in parts["train"]} & {u.speaker for u in parts["test"]}
    assert not {u.text for u in parts["train"]} & {u.text for u in parts["test"]}
    assert main(["validate", *(str(out / f"{n}.jsonl") for n in parts)]) == 0


def test_prepare_removes_what_a_killed_preparation_left(tmp_path):
    out = tmp_path / "out"
    stale = out / "audio" / ".spk1__good.wav.k1ll3d00.tmp"  # half a clip, its writer killed: no lock held
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"RIFF half")
    sf.write(tmp_path / "good.wav", tone(1.0), SR)
    items = [RawItem(id="good", text="Hola.", audio_path=tmp_path / "good.wav")]
    result = prepare(items, out, PrepareConfig(lang="es", num_workers=0))
    assert [u.id for u in result.utterances] == ["good"] and not stale.exists()
    assert not list(out.rglob(".*"))
