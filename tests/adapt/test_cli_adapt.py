"""`speechtl adapt`, `eval` and `transcribe` end to end on a tiny random Whisper (flow, files, report)."""

import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
import yaml

pytest.importorskip("torch")
pytest.importorskip("ctranslate2")

from tone_corpus import folder_corpus  # noqa: E402

from speechtl.cli import main  # noqa: E402
from speechtl.data.manifest import read_manifest  # noqa: E402
from speechtl.models.random_whisper import save_random_whisper  # noqa: E402

SENTENCES = ["hola qué tal", "buenos días", "muchas gracias", "hasta luego", "por favor", "buenas noches",
             "sí señor", "de nada", "perdone usted", "hasta mañana", "con permiso", "claro que sí"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    corpus = root / "corpus"
    folder_corpus(corpus, SENTENCES)
    model = save_random_whisper(root / "tiny", seed=1)
    terms = root / "terms.txt"
    terms.write_text("gracias\nbuenas noches\n", encoding="utf-8")
    recipe = {
        "name": "tiny",
        "lang": "es",
        "model": str(model),
        "data": {"sources": [{
            "name": "corpus", "kind": "corpus", "format": "folder", "path": str(corpus),
            "split": {"dev_share": 0.2, "test_share": 0.2, "by_speaker": False, "seed": 1},
        }]},
        "train": {"strategy": "head", "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 1,
                  "eval_every_steps": 2, "eval_max_new_tokens": 8, "mixed_precision": "no"},
        "eval": {"primary": "corpus/test", "terms": str(terms), "batch_size": 4, "max_wer": None},  # random weights
        # random weights decode to garbage whose length differs between runtimes: parity is checked in test_export
        "export": {"formats": ["hf", "ct2"], "ct2_quantization": "float32", "parity_margin_points": 1e6,
                   "check_unpadded": True},
        "nonspeech": {"train_clips": 3, "dev_clips": 2, "test_clips": 4, "min_s": 0.5, "max_s": 1.0},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return {"root": root, "recipe": path, "model": model, "corpus": corpus}


def test_adapt_writes_the_whole_run(setup, capsys):
    runs = setup["root"] / "runs"
    previous = os.umask(0o022)
    try:
        assert main(["adapt", str(setup["recipe"]), "train.max_steps=4", "--runs", str(runs)]) == 0
    finally:
        os.umask(previous)
    run = runs / "tiny"
    # every file honours the umask: a service running as another user can load the export
    private = [str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and not p.stat().st_mode & 0o044]
    assert not private, private
    for name in ("config.yaml", "report.json", "report.md", "export/hf/config.json", "export/ct2/model.bin",
                 "data/train.jsonl", "data/dev.jsonl", "data/corpus/test.jsonl",
                 "eval/baseline/corpus-test/metrics.json", "eval/adapted/corpus-test/hypotheses.jsonl"):
        assert (run / name).exists(), name
    report = json.loads((run / "report.json").read_text())
    assert report["recipe"]["train"]["max_steps"] == 4  # the override is in the resolved config
    # WiSE-FT: alpha chosen on the dev split only (no test set decoded under interpolate/); the kept model is
    # what the adapted evaluation and the exports used
    choice = report["interpolation"]
    assert choice["dev_sets"] == ["corpus/dev", "nonspeech/dev"] and len(choice["candidates"]) == 5
    assert {p.name for p in (run / "interpolate").glob("alpha-*/*")} == {"corpus_dev", "nonspeech_dev"}
    assert all(0 <= c["dev_wer"]["nonspeech/dev"] <= 1 for c in choice["candidates"])  # a share of 2 clips
    assert report["adapted_dir"] == str(run / "checkpoints/interpolated") == choice["model_dir"]
    assert report["evaluations"]["adapted"]["corpus/test"]["model"] == report["adapted_dir"]
    systems = {"baseline", "adapted"} | ({"fine-tuned"} if choice["alpha"] < 1 else set())
    assert set(report["evaluations"]) == systems
    assert "## Weight interpolation (WiSE-FT): alpha chosen on dev" in (run / "report.md").read_text()
    assert report["relations"]["corpus/test"]["speech"] == "real"
    # clips without speech: their empty target in training, their own held-out set scored for every system
    train_utts = read_manifest(run / "data/train.jsonl")
    assert sum(1 for u in train_utts if u.extra.get("nonspeech") and u.text == "") == 3
    ns = report["nonspeech"]
    assert set(ns["systems"]) == {"baseline", "adapted"} and ns["systems"]["adapted"]["num_clips"] == 4
    assert (run / "eval/adapted/nonspeech-test/hypotheses.jsonl").is_file()
    assert "## No speech in: words out" in (run / "report.md").read_text()
    assert "No speech in: words out</h2><p" in (run / "report.html").read_text()
    # long recordings: the primary set joined and decoded whole, for both systems, next to clip by clip
    lf = report["longform"]
    assert set(lf) == {"baseline", "adapted"} and lf["adapted"]["set"] == "corpus/test"
    joined = read_manifest(lf["adapted"]["manifest"])
    assert sorted(i for r in joined for i in r.extra["joined_ids"]) == sorted(
        u.id for u in read_manifest(run / "data/corpus/test.jsonl"))
    assert "## Long recordings: corpus/test joined" in (run / "report.md").read_text()
    # segment timestamps of the ct2 export on the first long-form recordings: this local base model has no
    # CTranslate2 copy (no baseline row), and faster-whisper takes the tiny vocabulary for English-only, so the
    # check says why it did not run and the run goes on
    ts = report["timestamps"]
    assert set(ts["systems"]) == {"adapted"} and "Unsupported language" in ts["systems"]["adapted"]["error"]
    assert "| adapted | — | — | not checked: Unsupported language" in (run / "report.md").read_text()
    base = report["evaluations"]["baseline"]["corpus/test"]
    assert base["num_utts"] == len(read_manifest(run / "data/corpus/test.jsonl"))
    assert base["normalizer"]["name"] == "speechtl-text-es-v1" and base["normalizer"]["settings"]["strip_accents"]
    train_texts = {u.text for u in read_manifest(run / "data/train.jsonl")}
    assert not train_texts & {u.text for u in read_manifest(run / "data/corpus/test.jsonl")}
    md = (run / "report.md").read_text()
    assert "| corpus/test (primary; real speech, seen speaker" in md and "## Exports: parity with the PyTorch model" in md
    langid = report["language_id"]
    assert set(langid) == {"baseline", "adapted"} and langid["adapted"]["corpus/test"]["clips"] == base["num_utts"]
    assert "## Language identification" in md and "| adapted | corpus/test |" in md
    assert "<h2>Language identification</h2>" in (run / "report.html").read_text()
    assert report["exports"]["ct2"]["parity"]["unpadded_wer"] >= 0 and "called as-is on unpadded audio" in md
    out = capsys.readouterr().out
    assert "eval baseline" in out and "export ct2" in out
    assert "read back" not in re.search(r"eval baseline .* long-form .*", out)[0]  # a first run decodes them

    # a second run reuses the prepared data (taking a seeded sample of its train split) and the encoder cache,
    # and trains afresh (no --resume)
    assert len(read_manifest(run / "data/train.jsonl")) > 5
    assert main(["adapt", str(setup["recipe"]), "train.max_steps=2", "data.sources.corpus.max_train_utterances=5",
                 "eval.term_prompt=dev", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "data corpus: reusing" in out and "0 computed" in out and "removing the earlier run" in out
    hits = re.search(r"decode cache: (\d+) of (\d+) baseline decodes read back, 0 decoded", out)
    assert hits and hits[1] == hits[2] != "0"  # the unadapted model's transcripts are read back, not decoded
    recordings = len(read_manifest(lf["baseline"]["manifest"]))  # ... its long-form ones too
    assert f"over {recordings} recordings" in out and f"{recordings} of {recordings} decodes read back" in out
    report = json.loads((run / "report.json").read_text())
    assert report["train"]["steps"] == 2
    # the term list as the adapted model's prompt: decoded on the dev sets only, the decodes without it are the
    # kept alpha's; scored on the test sets as "adapted+prompt" only when kept
    prompting = report["prompting"]
    assert prompting["prompt"] == "gracias, buenas noches"
    assert set(prompting["dev_wer"]["with"]) == set(choice["dev_sets"])
    alpha = report["interpolation"]["alpha"]
    kept_alpha = next(c for c in report["interpolation"]["candidates"] if c["alpha"] == alpha)
    assert prompting["dev_wer"]["without"] == kept_alpha["dev_wer"]
    assert {p.name for p in (run / "prompt").glob("*/*")} == {"corpus_dev", "nonspeech_dev"}
    assert ("adapted+prompt" in report["evaluations"]) == prompting["kept"]
    assert ("adapted+prompt" in report["nonspeech"]["systems"]) == prompting["kept"]
    assert "## Term list as the prompt: chosen on dev" in (run / "report.md").read_text()
    assert "Term list as the prompt: chosen on dev</h3>" in (run / "report.html").read_text()
    assert json.loads((run / "export/ct2/speechtl_run.json").read_text())["prompting"]["kept"] == prompting["kept"]
    sample = [u for u in read_manifest(run / "data/train.jsonl") if not u.extra.get("nonspeech")]
    assert len(sample) == 5 and {u.id for u in sample} <= {u.id for u in read_manifest(run / "data/corpus/train.jsonl")}

    # the same run again, resumed: its training has nothing left to do and gives the same weights, so every
    # system's transcripts are read back from the decode store and every figure is the earlier run's
    assert main(["adapt", str(setup["recipe"]), "train.max_steps=2", "data.sources.corpus.max_train_utterances=5",
                 "eval.term_prompt=dev", "--runs", str(runs), "--resume"]) == 0
    out = capsys.readouterr().out
    for what in ("baseline", "interpolation and fine-tuned", "adapted"):
        found = re.search(rf"decode cache: (\d+) of (\d+) {what} decodes read back, 0 decoded", out)
        assert found and found[1] == found[2] != "0", what
    assert re.search(r"eval adapted .* long-form .* (\d+) of \1 decodes read back", out)
    again = json.loads((run / "report.json").read_text())
    assert again["train"]["weights_sha256"] == report["train"]["weights_sha256"]
    assert again["interpolation"]["candidates"] == report["interpolation"]["candidates"]
    assert {system: {ref: m["wer"] for ref, m in sets.items()} for system, sets in again["evaluations"].items()} == \
        {system: {ref: m["wer"] for ref, m in sets.items()} for system, sets in report["evaluations"].items()}


def test_eval_num_beams_decodes_every_system_with_beams(setup, capsys):
    runs = setup["root"] / "runs-beams"
    assert main(["adapt", str(setup["recipe"]), "train.max_steps=2", "eval.num_beams=2", "export.formats=[hf]",
                 "--runs", str(runs)]) == 0
    run = runs / "tiny"
    report = json.loads((run / "report.json").read_text())
    assert report["recipe"]["eval"]["num_beams"] == 2
    assert "Decoding: beam search of width 2, the same for every system" in (run / "report.md").read_text()
    for system in ("baseline", "adapted"):
        assert json.loads((run / "eval" / system / "corpus-test" / "metrics.json").read_text())["num_utts"] > 0


def test_prompted_training_takes_the_baselines_term_prompt(setup, capsys):
    runs = setup["root"] / "runs-prompted"
    assert main(["adapt", str(setup["recipe"]), "train.max_steps=2", "train.prompt_share=1.0", "export.formats=[hf]",
                 "--runs", str(runs)]) == 0
    assert "100% of the targets conditioned on the term prompt (2 terms)" in capsys.readouterr().out


def test_a_failed_parity_check_keeps_the_report_and_the_other_exports(setup, monkeypatch, capsys):
    import speechtl.export.parity as parity_module

    real_parity = parity_module.parity

    def strict_for_ct2(*args, **kwargs):
        if args[2] == "ct2":
            kwargs["margin_points"] = 0.0
            kwargs["reference"] = {"wer": -1.0, "model": "impossible reference"}  # any export is 100 points worse
        return real_parity(*args, **kwargs)

    monkeypatch.setattr(parity_module, "parity", strict_for_ct2)
    runs = setup["root"] / "runs-parity"
    assert main(["adapt", str(setup["recipe"]), "train.max_steps=2", "--runs", str(runs)]) == 1
    run = runs / "tiny"
    report = json.loads((run / "report.json").read_text())
    assert report["exports"]["hf"]["parity"]["passed"] and "error" not in report["exports"]["hf"]
    ct2 = report["exports"]["ct2"]
    assert ct2["parity"]["passed"] is False and "points from the PyTorch model" in ct2["error"]
    assert (run / "export/hf/README.md").is_file() and not (run / "export/ct2/README.md").exists()
    assert "**FAILED**" in (run / "report.md").read_text()
    assert "points from the PyTorch model" in capsys.readouterr().err


def test_eval_and_transcribe(setup, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    wavs = sorted(setup["corpus"].glob("spk0/*.wav"))[:3]
    manifest.write_text("".join(json.dumps({"audio_filepath": str(w), "text": w.with_suffix(".txt").read_text()})
                                + "\n" for w in wavs), encoding="utf-8")
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(setup["model"]), "--manifest", str(manifest), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("wer", "cer", "num_utts", "substitutions", "deletions", "insertions", "normalizer"):
        assert key in metrics
    assert metrics["num_utts"] == 3 and metrics["wer"] >= 0
    assert len((out / "hypotheses.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["transcribe", "--model", str(setup["model"]), *map(str, wavs[:2])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(w) for w in wavs[:2]]

    # long audio: the clips joined with pauses into 75 s, transcribed whole, a timestamped line per window
    clips = [sf.read(w, dtype="float32")[0] for w in sorted(setup["corpus"].rglob("*.wav"))]
    joined, pause = [], np.zeros(8000, np.float32)
    while sum(len(c) for c in joined) < 75 * 16000:
        joined += [clips[len(joined) // 2 % len(clips)], pause]
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, np.concatenate(joined), 16000)
    assert main(["transcribe", "--model", str(setup["model"]), str(long_wav)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    spans = [re.match(r"  \[(\d+):([\d.]+) -> (\d+):([\d.]+)\]", line) for line in lines[1:]]
    assert lines[0].startswith(str(long_wav)) and len(spans) == 3 and all(spans)
    ends = [60 * int(m[3]) + float(m[4]) for m in spans]
    starts = [60 * int(m[1]) + float(m[2]) for m in spans]
    assert starts[0] == 0 and all(e - s <= 30 for s, e in zip(starts, ends)) and ends[-1] >= 75


def test_an_absurd_wer_fails_the_run(setup, capsys):
    runs = setup["root"] / "runs-absurd"
    assert main(["adapt", str(setup["recipe"]), "eval.max_wer=0.01", "--runs", str(runs)]) == 1
    err = capsys.readouterr().err
    assert "eval baseline on corpus/test: WER" in err and "over eval.max_wer 1%" in err
    assert "hypotheses.jsonl" in err and not (runs / "tiny" / "report.json").exists()


def test_adapt_with_a_bad_override_names_the_key(setup, capsys):
    assert main(["adapt", str(setup["recipe"]), "train.strategy=everything"]) == 1
    assert "strategy" in capsys.readouterr().err


def test_pick_sentences_keeps_each_term_and_is_seeded(tmp_path):
    from speechtl.adapt.data import pick_sentences
    from speechtl.config import ConfigError, SourceConfig

    terms = tmp_path / "terms.txt"
    terms.write_text("omeprazol\nInsulina lenta\n", encoding="utf-8")
    filler = [(f"s{i}", f"frase corriente número {i}") for i in range(40)]
    rare = [("t1", "tome el omeprazol"), ("t2", "la INSULINA lenta de noche"), ("t3", "Omeprazol, otra vez"),
            ("t4", "insulina rápida")]  # t4 holds a word of a term, not the term
    sentences = filler[:20] + rare + filler[20:]

    def source(**kw):
        return SourceConfig(name="med", kind="synth", sentences=("x",), terms=str(terms), **kw)

    picked = pick_sentences(sentences, source(max_sentences=6, min_term_sentences=2), seed=0)
    ids = [i for i, _ in picked]
    assert len(picked) == 6 and {"t1", "t2", "t3"} <= set(ids)  # both omeprazol sentences, the one insulina lenta
    assert ids == [i for i, _ in sentences if i in ids]  # file order
    assert picked == pick_sentences(sentences, source(max_sentences=6, min_term_sentences=2), seed=0)
    assert picked != pick_sentences(sentences, source(max_sentences=6, min_term_sentences=2), seed=1)
    plain = pick_sentences(sentences, source(max_sentences=6), seed=0)  # no minimum: a plain seeded sample
    assert len(plain) == 6
    with pytest.raises(ConfigError, match="max_sentences: 2 sentences cannot hold 2 sentences of each term"):
        pick_sentences(sentences, source(max_sentences=2, min_term_sentences=2), seed=0)
    with pytest.raises(ConfigError, match="min_term_sentences: needs a 'terms' file"):
        SourceConfig(name="med", kind="synth", sentences=("x",), min_term_sentences=2)
