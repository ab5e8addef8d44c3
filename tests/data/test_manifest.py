import json

import pytest

from speechtl.data.manifest import ManifestError, Utterance, read_manifest, sentence_key, validate, write_jsonl
from speechtl.data.splits import SplitConfig, split


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_minimal_jsonl_is_accepted_with_defaults(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    path = _write(tmp_path / "m.jsonl", [{"audio_filepath": "a.wav", "text": "hola"}])
    [utt] = read_manifest(path)
    assert utt.id == "a"
    assert utt.audio_filepath == str(tmp_path / "a.wav")  # relative to the manifest's folder
    assert (utt.duration, utt.speaker, utt.lang) == (None, None, None)


def test_round_trip_keeps_unknown_keys(tmp_path):
    row = {"id": "u1", "audio_filepath": "/x/u1.wav", "duration": 1.5, "text": "hola", "speaker": "s1",
           "lang": "es", "gender": "female", "offset": 0.0}
    path = _write(tmp_path / "m.jsonl", [row])
    utts = read_manifest(path)
    write_jsonl(tmp_path / "out.jsonl", utts)
    assert json.loads((tmp_path / "out.jsonl").read_text()) == row


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "m.jsonl:1: not valid JSON"),
        ("[1, 2]", "m.jsonl:1: a manifest line must be a JSON object"),
        ('{"text": "hola"}', "m.jsonl:1: missing required field 'audio_filepath'"),
        ('{"audio_filepath": "a.wav"}', "m.jsonl:1: missing required field 'text'"),
        ('{"audio_filepath": "a.wav", "text": 3}', "field 'text' must be a string"),
        ('{"audio_filepath": "", "text": "x"}', "field 'audio_filepath' is empty"),
        ('{"id": "u9", "audio_filepath": "a.wav", "text": "x", "duration": "long"}', "id=u9: field 'duration'"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    path = _write(tmp_path / "m.jsonl", [line])
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_manifest(path)


def test_validate_reports_each_problem(tmp_path):
    utts = [
        Utterance(id="a", audio_filepath=str(tmp_path / "missing.wav"), text="hola", duration=1.0),
        Utterance(id="a", audio_filepath=str(tmp_path / "missing.wav"), text=" ", duration=0.0),
    ]
    problems = validate(utts)
    assert "id=a: duplicate id" in problems
    assert "id=a: field 'text' is empty" in problems
    assert any("field 'duration' is 0.0" in p for p in problems)
    assert any("does not exist" in p for p in problems)
    assert validate(utts[:1], check_files=False) == []


def _grid(num_speakers, num_sentences):
    return [
        Utterance(id=f"s{s}-t{t}", audio_filepath=f"/a/s{s}-t{t}.wav", text=f"Frase número {t}.", speaker=f"s{s}")
        for s in range(num_speakers)
        for t in range(num_sentences)
    ]


def test_split_is_speaker_and_sentence_disjoint_and_loses_nothing():
    utts = _grid(10, 40)
    parts, leftovers = split(utts, SplitConfig(dev_share=0.1, test_share=0.2, seed=3))
    assert sum(len(p) for p in parts.values()) + len(leftovers) == len(utts)
    assert all(parts[name] for name in ("train", "dev", "test"))
    for a in ("train", "dev", "test"):
        for b in ("train", "dev", "test"):
            if a < b:
                assert not {u.speaker for u in parts[a]} & {u.speaker for u in parts[b]}
                assert not {sentence_key(u.text) for u in parts[a]} & {sentence_key(u.text) for u in parts[b]}
    assert {r.reason for r in leftovers} == {"cross_split"}


def test_split_is_seeded():
    utts = _grid(6, 20)
    first, _ = split(utts, SplitConfig(seed=1))
    again, _ = split(utts, SplitConfig(seed=1))
    other, _ = split(utts, SplitConfig(seed=2))
    ids = lambda parts: {k: [u.id for u in v] for k, v in parts.items()}  # noqa: E731
    assert ids(first) == ids(again)
    assert ids(first) != ids(other)


def test_single_speaker_falls_back_to_sentence_split():
    utts = _grid(1, 50)
    parts, leftovers = split(utts, SplitConfig(seed=0))
    assert not leftovers
    train_sentences = {sentence_key(u.text) for u in parts["train"]}
    assert train_sentences and not train_sentences & {sentence_key(u.text) for u in parts["test"]}


def test_sentence_key_ignores_case_punctuation_and_accents():
    assert sentence_key("¿Cuál es su NÚMERO?") == sentence_key("cual es su numero")


@pytest.mark.parametrize("dev, test", [(-0.1, 0.2), (0.5, 0.5), (0.1, 1.0)])
def test_split_config_rejects_bad_shares(dev, test):
    with pytest.raises(ValueError, match="dev_share"):
        SplitConfig(dev_share=dev, test_share=test)
