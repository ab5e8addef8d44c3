"""Corpus importers: one tiny fixture corpus per format, built in tmp_path."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechtl.data.importers import (
    IMPORTERS,
    CorpusError,
    detect_format,
    get_importer,
    read_corpus,
)
from speechtl.data.manifest import RawItem

SR = 16000


def tone(path: Path, freq: float = 440.0, seconds: float = 0.2, sr: int = SR) -> np.ndarray:
    """Write a sine tone (format from the suffix) and return the samples written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    samples = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    fmt = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix, "WAV")  # other suffixes: wav bytes inside
    sf.write(str(path), samples, sr, format=fmt)
    return samples


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def by_id(items: list[RawItem]) -> dict[str, RawItem]:
    return {item.id: item for item in items}


# ------------------------------------------------------------------ fixtures

CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"


def cv_row(client: str, clip: str, sentence: str, age: str = "", gender: str = "") -> str:
    return f"{client}\t{clip}\t{sentence}\t2\t0\t{age}\t{gender}\t\tes\t\n"


@pytest.fixture
def cv_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cv-es"
    rows = [
        ("spkA", "common_voice_es_1.mp3", 'Dijo "hola" y se fue.', "twenties", "male"),
        ("spkA", "common_voice_es_2.mp3", "Buenos días.", "twenties", "male"),
        ("spkB", "common_voice_es_3.mp3", "¿Qué tal?", "", ""),
        ("spkB", "common_voice_es_4.mp3", "Nos vemos.", "", ""),
    ]
    for i, (_, clip, *_rest) in enumerate(rows[:3]):  # clip 4 is missing on purpose
        tone(root / "clips" / clip, 300 + 100 * i)
    write(root / "validated.tsv", CV_HEADER + "".join(cv_row(*r) for r in rows))
    write(root / "train.tsv", CV_HEADER + "".join(cv_row(*r) for r in rows[:2]))
    write(root / "dev.tsv", CV_HEADER)
    write(root / "test.tsv", CV_HEADER + "".join(cv_row(*r) for r in rows[2:]))
    # other.tsv with a reduced column set: optional columns may be absent
    write(root / "other.tsv", "client_id\tpath\tsentence\nspkC\tcommon_voice_es_9.mp3\tOtra frase.\n")
    return root


@pytest.fixture
def librispeech_dir(tmp_path: Path) -> Path:
    root = tmp_path / "LibriSpeech"
    write(root / "SPEAKERS.TXT", ";ID  |SEX| SUBSET           |MINUTES| NAME\n"
          "84   | F | dev-clean        | 8.02 | Christie\n"
          "174  | M | dev-clean        | 8.04 | Peter\n")
    for spk, chapter, n in (("84", "121123", 2), ("174", "50561", 2)):
        chap = root / "dev-clean" / spk / chapter
        lines = []
        for i in range(n):
            utt = f"{spk}-{chapter}-{i:04d}"
            tone(chap / f"{utt}.flac", 200 + 50 * i)
            lines.append(f"{utt} SENTENCE NUMBER {i} OF {spk}\n")
        write(chap / f"{spk}-{chapter}.trans.txt", "".join(lines))
    return root


@pytest.fixture
def mls_dir(tmp_path: Path) -> Path:
    root = tmp_path / "mls_spanish"
    write(root / "metainfo.txt", "SPEAKER | GENDER | PARTITION | MINUTES | BOOK ID | TITLE | CHAPTER\n"
          "10 | F | train | 1.0 | 100 | Libro | Uno\n20 | M | test | 1.0 | 200 | Otro | Dos\n")
    tone(root / "train" / "audio" / "10" / "100" / "10_100_000001.flac")
    tone(root / "train" / "audio" / "10" / "100" / "10_100_000002.wav")  # another extension
    write(root / "train" / "transcripts.txt", "10_100_000001\thola mundo\n10_100_000002\tadiós mundo\n"
          "10_100_000003\tsin audio\n")
    tone(root / "test" / "audio" / "20" / "200" / "20_200_000001.flac")
    write(root / "test" / "transcripts.txt", "20_200_000001\tprueba uno\n")
    return root


@pytest.fixture
def kaldi_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "train"
    audio = tmp_path / "audio"
    tone(audio / "u1.wav", 300)
    tone(audio / "u2.wav", 400)
    tone(audio / "u3.wav", 500)
    write(root / "wav.scp", f"u1 {audio / 'u1.wav'}\n"
          f"u2 sox {audio / 'u2.wav'} -t wav - |\n"
          "u3 ../../audio/u3.wav\n"
          f"u4 cat {audio / 'u1.wav'} |\n")
    write(root / "text", "u1 hola mundo\nu2 buenos días\nu3\nu4 otra vez\n")
    write(root / "utt2spk", "u1 spkA\nu2 spkA\nu3 spkB\nu4 spkB\n")
    write(root / "spk2gender", "spkA f\nspkB m\n")
    return root


@pytest.fixture
def nemo_file(tmp_path: Path) -> Path:
    root = tmp_path / "nemo"
    tone(root / "wavs" / "a.wav", seconds=1.0)
    tone(root / "wavs" / "b.wav")
    rows = [
        {"audio_filepath": "wavs/a.wav", "text": "primera", "duration": 1.0, "speaker": "s1", "lang": "es",
         "snr": 30},
        {"audio_filepath": "wavs/a.wav", "text": "segmento uno", "duration": 0.4, "offset": 0.1, "speaker": "s1"},
        {"audio_filepath": "wavs/a.wav", "text": "segmento dos", "duration": 0.3, "offset": 0.6, "speaker": "s1"},
        {"id": "b-id", "audio_filepath": "wavs/b.wav", "text": "segunda", "duration": 0.2, "speaker": "s2"},
        {"audio_filepath": str(root / "wavs" / "missing.wav"), "text": "falta", "duration": 0.2},
    ]
    # ids: the first line keeps the audio stem 'a'; the segments get their own
    return write(root / "train_manifest.json", "".join(json.dumps(r) + "\n" for r in rows[:3]) + "\n"
                 + "".join(json.dumps(r) + "\n" for r in rows[3:]))


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    tone(root / "spk1" / "a.wav")
    write(root / "spk1" / "a.txt", "\ufeffhola  mundo\n")
    tone(root / "spk1" / "sub" / "b.flac")
    write(root / "spk1" / "sub" / "b.txt", "buenos días")
    tone(root / "spk2" / "c.wav")  # no transcript
    write(root / "spk2" / "d.txt", "sin audio")  # no audio
    tone(root / "top.wav")
    write(root / "top.txt", "en la raíz")
    return root


def wav_bytes(freq: float, seconds: float = 0.2, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * sr)) / sr
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    datasets = pytest.importorskip("datasets")

    def part(names: list[str], speakers: list[str], texts: list[str], freq0: int) -> object:
        ds = datasets.Dataset.from_dict({
            "audio": [{"bytes": wav_bytes(freq0 + 100 * i), "path": f"{n}.wav"} for i, n in enumerate(names)],
            "sentence": texts,
            "client_id": speakers,
            "age": ["thirties"] * len(names),
        })
        return ds.cast_column("audio", datasets.Audio(decode=False))

    dd = datasets.DatasetDict({
        "train": part(["clip_1", "clip_2", "clip_3"], ["sA", "sA", "sB"], ["uno", "dos", "tres"], 300),
        "test": part(["clip_4"], ["sB"], ["cuatro"], 700),
    })
    root = tmp_path / "hf"
    dd.save_to_disk(str(root))
    return root


# ------------------------------------------------------------------ registry


def test_registry_lists_every_format_and_rejects_unknown_names() -> None:
    assert set(IMPORTERS) == {"commonvoice", "librispeech", "kaldi", "nemo", "folder", "hf", "asterisk"}
    assert IMPORTERS["asterisk"] == "speechtl.data.importers.asterisk"
    for name in IMPORTERS:
        if name != "asterisk":  # written elsewhere
            assert get_importer(name).NAME == name
    with pytest.raises(ValueError, match="known formats: .*commonvoice.*kaldi"):
        get_importer("timit")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("cv_dir", "commonvoice"),
        ("librispeech_dir", "librispeech"),
        ("mls_dir", "librispeech"),
        ("kaldi_dir", "kaldi"),
        ("nemo_file", "nemo"),
        ("folder_dir", "folder"),
        ("hf_dir", "hf"),
    ],
)
def test_detect_format_picks_the_right_importer(fixture: str, expected: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(fixture)
    assert detect_format(root) == expected
    assert detect_format(root.parent / root.name) == expected
    if expected == "nemo":
        assert detect_format(root.parent) == "nemo"  # a directory of manifests


def test_detect_format_explains_what_each_format_expects(tmp_path: Path) -> None:
    write(tmp_path / "notes.md", "nothing here")
    with pytest.raises(CorpusError) as err:
        detect_format(tmp_path)
    message = str(err.value)
    for name in ("hf", "kaldi", "commonvoice", "librispeech", "nemo", "folder"):
        assert f"  {name}: " in message
    assert "wav.scp" in message and "clips/" in message
    with pytest.raises(CorpusError, match="no such file"):
        detect_format(tmp_path / "absent")


def test_read_corpus_rejects_unknown_options(folder_dir: Path) -> None:
    with pytest.raises(ValueError, match="does not take option.*tsv"):
        list(read_corpus(folder_dir, tsv="train"))


# ------------------------------------------------------------------ Common Voice


def test_commonvoice_reads_validated_by_default(cv_dir: Path) -> None:
    items = list(read_corpus(cv_dir))
    assert [i.id for i in items] == [f"common_voice_es_{n}" for n in (1, 2, 3, 4)]
    first = items[0]
    assert first.text == 'Dijo "hola" y se fue.'  # quotes kept verbatim
    assert first.speaker == "spkA"
    assert first.audio_path == cv_dir / "clips" / "common_voice_es_1.mp3"
    assert first.extra["cv_split"] == "validated"
    assert first.extra["age"] == "twenties" and first.extra["gender"] == "male"
    assert first.extra["up_votes"] == 2 and first.extra["locale"] == "es"
    assert items[2].extra["age"] is None  # empty cell
    assert {i.speaker for i in items} == {"spkA", "spkB"}
    assert not items[3].audio_path.exists()  # missing clip still yielded


def test_commonvoice_tsv_option_and_dedup(cv_dir: Path) -> None:
    items = list(read_corpus(cv_dir, tsv=["train", "test"]))
    assert [i.extra["cv_split"] for i in items] == ["train", "train", "test", "test"]
    items = list(read_corpus(cv_dir, format="commonvoice", tsv=["validated", "train.tsv"]))
    assert len(items) == 4  # train clips are also in validated: yielded once
    other = list(read_corpus(cv_dir, tsv="other"))
    assert [(i.id, i.speaker, i.text) for i in other] == [("common_voice_es_9", "spkC", "Otra frase.")]
    (cv_dir / "validated.tsv").unlink()
    assert [i.extra["cv_split"] for i in read_corpus(cv_dir)] == ["train", "train", "test", "test"]
    with pytest.raises(CorpusError, match="invalidated.tsv: tsv file not found"):
        list(read_corpus(cv_dir, tsv="invalidated"))


def test_commonvoice_malformed_rows(cv_dir: Path) -> None:
    tsv = cv_dir / "validated.tsv"
    good = tsv.read_text(encoding="utf-8")
    tsv.write_text(good + "spkC\tcommon_voice_es_5.mp3\tfaltan columnas\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"validated\.tsv:6: 3 tab-separated fields, the header has 10"):
        list(read_corpus(cv_dir))
    tsv.write_text(good + cv_row("spkC", "common_voice_es_2.mp3", "otra vez"), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"validated\.tsv:6: duplicate clip id 'common_voice_es_2' "
                                          r"\(first seen at .*validated\.tsv:3\)"):
        list(read_corpus(cv_dir))
    tsv.write_text(good + cv_row("spkC", "", "sin ruta"), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"validated\.tsv:6: field 'path' is empty"):
        list(read_corpus(cv_dir))
    tsv.write_text("client_id\tpath\ttext\nx\ty.mp3\tz\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"validated\.tsv:1: header lacks required column\(s\) sentence"):
        list(read_corpus(cv_dir, format="commonvoice"))


# ------------------------------------------------------------------ LibriSpeech / MLS


def test_librispeech(librispeech_dir: Path) -> None:
    items = by_id(list(read_corpus(librispeech_dir)))
    assert sorted(items) == ["174-50561-0000", "174-50561-0001", "84-121123-0000", "84-121123-0001"]
    item = items["84-121123-0001"]
    assert item.text == "SENTENCE NUMBER 1 OF 84"
    assert item.speaker == "84"
    assert item.audio_path == librispeech_dir / "dev-clean" / "84" / "121123" / "84-121123-0001.flac"
    assert item.audio_path.is_file()
    assert item.extra == {"chapter": "121123", "split": "dev-clean", "gender": "F"}
    assert items["174-50561-0000"].extra["gender"] == "M"
    # a split directory as root, or picked with split=
    assert len(list(read_corpus(librispeech_dir / "dev-clean"))) == 4
    assert len(list(read_corpus(librispeech_dir, split="dev-clean"))) == 4
    with pytest.raises(CorpusError, match="split directory not found"):
        list(read_corpus(librispeech_dir, split="test-other"))


def test_librispeech_errors(librispeech_dir: Path) -> None:
    trans = librispeech_dir / "dev-clean" / "84" / "121123" / "84-121123.trans.txt"
    good = trans.read_text(encoding="utf-8")
    trans.write_text(good + "garbage line here\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"84-121123\.trans\.txt:3: field 'id' is 'garbage'"):
        list(read_corpus(librispeech_dir))
    trans.write_text(good + "174-50561-0000 COPIED\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"84-121123\.trans\.txt:3: duplicate utterance id '174-50561-0000' "
                                          r"\(first seen at .*174-50561\.trans\.txt:1\)"):
        list(read_corpus(librispeech_dir))
    trans.write_text(good + "84-121123-0009\n", encoding="utf-8")  # id without text: an empty transcript
    assert by_id(list(read_corpus(librispeech_dir)))["84-121123-0009"].text == ""


def test_mls(mls_dir: Path) -> None:
    items = by_id(list(read_corpus(mls_dir)))
    assert sorted(items) == ["10_100_000001", "10_100_000002", "10_100_000003", "20_200_000001"]
    one, two, three = items["10_100_000001"], items["10_100_000002"], items["10_100_000003"]
    assert (one.text, one.speaker, one.extra) == ("hola mundo", "10", {"book": "100", "split": "train", "gender": "F"})
    assert one.audio_path == mls_dir / "train" / "audio" / "10" / "100" / "10_100_000001.flac"
    assert two.audio_path.suffix == ".wav" and two.audio_path.is_file()  # whichever exists
    assert three.audio_path.suffix == ".flac" and not three.audio_path.exists()  # missing: still yielded
    assert items["20_200_000001"].extra == {"book": "200", "split": "test", "gender": "M"}
    assert [i.id for i in read_corpus(mls_dir, split="test")] == ["20_200_000001"]
    with pytest.raises(CorpusError, match="dev"):
        list(read_corpus(mls_dir, split="dev"))
    path = mls_dir / "test" / "transcripts.txt"
    path.write_text("20_200_000001 prueba sin tabulador\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"test/transcripts\.txt:1: expected 'ID<TAB>TEXT'"):
        list(read_corpus(mls_dir, split="test"))


# ------------------------------------------------------------------ Kaldi


def test_kaldi_paths_pipes_and_metadata(kaldi_dir: Path, tmp_path: Path) -> None:
    if shutil.which("sox") is None:
        pytest.skip("sox not installed")
    items = by_id(list(read_corpus(kaldi_dir)))
    assert sorted(items) == ["u1", "u2", "u3", "u4"]
    assert items["u1"].audio_path == tmp_path / "audio" / "u1.wav"
    assert items["u1"].text == "hola mundo" and items["u1"].speaker == "spkA"
    assert items["u1"].extra == {"gender": "f"}
    assert items["u3"].audio_path == kaldi_dir / "../../audio/u3.wav"  # relative to the data dir
    assert items["u3"].audio_path.is_file()
    assert items["u3"].text == "" and "transcript_missing" not in items["u3"].extra  # empty, but present
    piped = items["u2"]
    assert piped.audio_path is None and piped.sample_rate == SR
    expected, _ = sf.read(str(tmp_path / "audio" / "u2.wav"), dtype="float32")
    np.testing.assert_allclose(piped.samples[:, 0], expected, atol=1e-4)
    assert piped.extra["wav_scp_command"].startswith("sox ")
    cat = items["u4"]
    expected, _ = sf.read(str(tmp_path / "audio" / "u1.wav"), dtype="float32")
    np.testing.assert_allclose(cat.samples[:, 0], expected, atol=1e-4)
    assert cat.extra["wav_scp_command"] == f"cat {tmp_path / 'audio' / 'u1.wav'}"


def test_kaldi_segments(kaldi_dir: Path, tmp_path: Path) -> None:
    tone(tmp_path / "audio" / "rec.wav", seconds=1.0)
    rec = tmp_path / "audio" / "rec.wav"
    write(kaldi_dir / "wav.scp", f"recA {rec}\nrecB cat {rec} |\n")
    write(kaldi_dir / "segments", "s1 recA 0.0 0.5\ns2 recA 0.5 -1\ns3 recB 0.25 0.75\n")
    write(kaldi_dir / "text", "s1 uno\ns2 dos\n")
    write(kaldi_dir / "utt2spk", "s1 spkA\ns2 spkA\ns3 spkB\n")
    items = by_id(list(read_corpus(kaldi_dir)))
    s1, s2, s3 = items["s1"], items["s2"], items["s3"]
    assert (s1.audio_path, s1.offset_s, s1.duration_s) == (tmp_path / "audio" / "rec.wav", 0.0, 0.5)
    assert (s2.offset_s, s2.duration_s) == (0.5, None)
    assert s1.extra["recording"] == "recA"
    assert s3.samples is not None and len(s3.samples) == SR // 2  # sliced from the piped recording
    assert s3.text == "" and s3.extra["transcript_missing"] is True  # not in text: yielded, flagged
    assert s3.extra["gender"] == "m"


def test_kaldi_inconsistent_dirs_are_errors(kaldi_dir: Path) -> None:
    write(kaldi_dir / "text", "u1 hola\nu9 sin audio\n")
    with pytest.raises(CorpusError, match=r"text:2: id 'u9' is not an utterance of .*wav\.scp"):
        list(read_corpus(kaldi_dir))
    write(kaldi_dir / "text", "u1 hola\nu1 repetido\n")
    with pytest.raises(CorpusError, match=r"text:2: duplicate id 'u1' \(first at .*text:1\)"):
        list(read_corpus(kaldi_dir))
    write(kaldi_dir / "text", "u1 hola\n")
    write(kaldi_dir / "wav.scp", "u1 /a.wav\nu2\n")
    with pytest.raises(CorpusError, match=r"wav\.scp:2: id 'u2' has no field 'path'"):
        list(read_corpus(kaldi_dir))
    write(kaldi_dir / "wav.scp", "u1 /a.wav\n")
    write(kaldi_dir / "segments", "s1 recX 0 1\n")
    write(kaldi_dir / "utt2spk", "s1 a\n")
    write(kaldi_dir / "text", "s1 hola\n")
    with pytest.raises(CorpusError, match=r"segments:1: id 's1': recording 'recX' is not in"):
        list(read_corpus(kaldi_dir))
    write(kaldi_dir / "segments", "s1 u1 0.5 0.2\n")
    with pytest.raises(CorpusError, match=r"segments:1: id 's1': field 'end' is 0.2"):
        list(read_corpus(kaldi_dir))


def test_kaldi_failing_command_still_yields_the_item(kaldi_dir: Path) -> None:
    write(kaldi_dir / "wav.scp", "u1 false |\nu2 echo notaudio |\n")
    write(kaldi_dir / "text", "u1 uno\nu2 dos\n")
    write(kaldi_dir / "utt2spk", "u1 a\nu2 a\n")
    items = by_id(list(read_corpus(kaldi_dir)))
    assert items["u1"].samples is None and items["u1"].audio_path is None
    assert "exited with status 1" in items["u1"].extra["wav_scp_error"]
    assert "not decodable" in items["u2"].extra["wav_scp_error"]


# ------------------------------------------------------------------ NeMo


def test_nemo_manifest(nemo_file: Path) -> None:
    items = list(read_corpus(nemo_file))
    assert [i.id for i in items] == ["a", "a-0000100-0000500", "a-0000600-0000900", "b-id", "missing"]
    whole, seg1, seg2, b, missing = items
    base = nemo_file.parent.resolve()
    assert whole.audio_path == base / "wavs" / "a.wav"
    assert (whole.offset_s, whole.duration_s) == (0.0, None)  # no offset: the whole file
    assert whole.extra == {"snr": 30, "lang": "es", "manifest": "train_manifest.json"}
    assert (seg1.offset_s, seg1.duration_s, seg1.text, seg1.speaker) == (0.1, 0.4, "segmento uno", "s1")
    assert "offset" not in seg1.extra
    assert seg2.offset_s == 0.6
    assert b.speaker == "s2" and b.text == "segunda"
    assert missing.speaker is None and not missing.audio_path.exists()  # still yielded


def test_nemo_directory_and_errors(nemo_file: Path) -> None:
    root = nemo_file.parent
    write(root / "dev_manifest.jsonl", json.dumps({"id": "d1", "audio_filepath": "wavs/b.wav", "text": "x"}) + "\n")
    assert [i.id for i in read_corpus(root, manifest="dev_manifest.jsonl")] == ["d1"]
    assert len(list(read_corpus(root))) == 6
    with pytest.raises(CorpusError, match="manifest not found"):
        list(read_corpus(root, manifest="nope.json"))
    bad = write(root / "bad.jsonl", json.dumps({"audio_filepath": "wavs/b.wav", "text": "x"}) + "\n\n{oops\n")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:3: not valid JSON"):
        list(read_corpus(bad, format="nemo"))
    dup = write(root / "dup.jsonl", json.dumps({"id": "x", "audio_filepath": "wavs/b.wav", "text": "x"}) + "\n"
                + json.dumps({"id": "x", "audio_filepath": "wavs/a.wav", "text": "y"}) + "\n")
    with pytest.raises(CorpusError, match=r"dup\.jsonl:2: duplicate utterance id 'x' \(first seen at .*dup\.jsonl:1\)"):
        list(read_corpus(dup))
    notext = write(root / "notext.jsonl", json.dumps({"audio_filepath": "wavs/b.wav"}) + "\n")
    with pytest.raises(CorpusError, match=r"notext\.jsonl:1: missing required field 'text'"):
        list(read_corpus(notext, format="nemo"))


# ------------------------------------------------------------------ folder


def test_folder(folder_dir: Path) -> None:
    items = by_id(list(read_corpus(folder_dir)))
    assert sorted(items) == ["spk1__a", "spk1__sub__b", "spk2__c", "spk2__d", "top"]
    a = items["spk1__a"]
    assert (a.text, a.speaker, a.audio_path, a.extra) == ("hola  mundo", "spk1", folder_dir / "spk1" / "a.wav", {})
    assert items["spk1__sub__b"].speaker == "spk1"
    assert items["spk1__sub__b"].audio_path.suffix == ".flac"
    c = items["spk2__c"]
    assert (c.text, c.extra) == ("", {"transcript_missing": True})
    d = items["spk2__d"]
    assert d.audio_path is None and d.text == "sin audio"
    assert d.extra == {"audio_missing": True, "source": str(folder_dir / "spk2" / "d.txt")}
    assert items["top"].speaker is None and items["top"].text == "en la raíz"


def test_folder_duplicate_stems(folder_dir: Path) -> None:
    shutil.copy(folder_dir / "spk1" / "a.wav", folder_dir / "spk1" / "a.mp3")
    with pytest.raises(CorpusError, match=r"duplicate utterance id 'spk1__a' \(also .*spk1/a\.(wav|mp3)\)"):
        list(read_corpus(folder_dir))


# ------------------------------------------------------------------ Hugging Face


def test_hf_dataset_dict(hf_dir: Path) -> None:
    items = list(read_corpus(hf_dir))
    assert [i.id for i in items] == ["clip_1", "clip_2", "clip_3", "clip_4"]  # audio path stems
    first = items[0]
    assert (first.text, first.speaker, first.audio_path) == ("uno", "sA", None)
    assert first.sample_rate == SR
    expected, _ = sf.read(io.BytesIO(wav_bytes(300)), dtype="float32")
    np.testing.assert_allclose(first.samples[:, 0], expected, atol=1e-4)
    assert first.extra == {"source": "clip_1.wav", "split": "train", "age": "thirties"}
    assert items[3].extra["split"] == "test" and items[3].speaker == "sB"
    assert [i.id for i in read_corpus(hf_dir, split="test")] == ["clip_4"]
    streamed = list(read_corpus(hf_dir, streaming=True))
    assert [i.id for i in streamed] == [i.id for i in items]
    np.testing.assert_allclose(streamed[0].samples, first.samples)
    by_row = list(read_corpus(hf_dir, split="train", id_column="__row_index__"))
    assert [i.id for i in by_row] == ["train-0000000", "train-0000001", "train-0000002"]
    with pytest.raises(CorpusError, match="no split 'dev'; splits: train, test"):
        list(read_corpus(hf_dir, split="dev"))
    with pytest.raises(CorpusError, match="no text column 'words'"):
        list(read_corpus(hf_dir, text_column="words"))


def test_hf_single_dataset_with_ids_and_bad_audio(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    tone(tmp_path / "src" / "x.wav")
    ds = datasets.Dataset.from_dict({
        "id": ["r1", "r2", "r3"],
        "audio": [
            {"bytes": wav_bytes(440), "path": None},
            {"bytes": b"not audio at all", "path": None},
            {"bytes": None, "path": str(tmp_path / "src" / "x.wav")},
        ],
        "transcription": ["a", "b", None],
        "speaker_id": [1, 2, 2],
    }).cast_column("audio", datasets.Audio(decode=False))
    root = tmp_path / "single"
    ds.save_to_disk(str(root))
    assert detect_format(root) == "hf"
    items = by_id(list(read_corpus(root)))
    assert sorted(items) == ["r1", "r2", "r3"]
    assert items["r1"].samples is not None and items["r1"].speaker == "1"
    bad = items["r2"]  # undecodable bytes: yielded without audio, with the reason
    assert bad.samples is None and bad.audio_path is None and "audio_error" in bad.extra
    assert items["r3"].text == ""
    assert items["r3"].samples is not None or items["r3"].audio_path is not None
    ds.remove_columns(["transcription"]).save_to_disk(str(tmp_path / "notext"))
    with pytest.raises(CorpusError, match="no transcript column"):
        list(read_corpus(tmp_path / "notext"))


def test_hf_rejects_a_path_that_is_neither_a_directory_nor_a_hub_id(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    with pytest.raises(CorpusError, match="neither a local dataset directory nor a hub id"):
        list(read_corpus(tmp_path / "no" / "such" / "dir", format="hf"))
