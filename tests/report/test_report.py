"""Tests for the run report (report.json/md/html from a payload), its rebuild, and `speechtl compare`."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest

from speechtl.cli import main
from speechtl.data.manifest import Utterance
from speechtl.evaluate.decode import evaluate_manifest
from speechtl.report.compare import compare, markdown_table
from speechtl.report.data import enrich, sets_of, summary_rows
from speechtl.report.markdown import markdown
from speechtl.report.write import regenerate, write_report

pytest.importorskip("matplotlib")

SPEAKER = r"<b>ana&co</b> $\nomath$"  # escaped in report.html, drawn literally (not as mathtext) in the plots
PRIMARY, FORGETTING = "med/test", "gen/test"
MED = [  # id, reference, baseline, baseline+prompt, adapted
    ("m1", "toma amoxicilina cada ocho horas", "toma a mostrar cilina cada ocho horas",
     "toma amoxicilina cada ocho horas", "toma amoxicilina cada ocho horas"),
    ("m2", "tiene insuficiencia renal", "tiene insuficiencia real", "tiene insuficiencia real",
     "tiene insuficiencia renal"),
    ("m3", "el hemograma salió bien", "el enograma salió bien", "el hemograma salió bien",
     "el hemograma salió bien"),
    ("m4", "pida cita en cardiología", "pida cita en cardio logía", "pida cita en cardio logía",
     "pida cita en cardiología"),
    ("m5", "buenos días doctora", "buenos días doctora", "buenos días doctora", "buenos días doctora"),
    ("m6", "me duele la cabeza", "me duele la cabeza gracias por ver el video", "me duele la cabeza",
     "me duele la cabeza"),
]
GEN = [  # id, reference, baseline, adapted
    ("g1", "marque uno para ventas", "marque uno para ventas", "marque uno para ventas"),
    ("g2", "gracias por llamar", "gracias por llamar", "gracias por llamar"),
    ("g3", "su llamada es importante", "su llamada es importante", "su llamada es muy importante"),
]
TERMS = ["amoxicilina", "insuficiencia renal", "hemograma", "cardiología"]


class DictTranscriber:
    """Answers per utterance id (through transcribe_utterances: no audio is read)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def transcribe_utterances(self, utts, lang, *, prompt=None, batch_size=8):
        return [self.answers[u.id] for u in utts]


def _utts(rows, speaker: str) -> list[Utterance]:
    return [Utterance(id=r[0], audio_filepath=f"/nowhere/{r[0]}.wav", text=r[1], duration=1.0, speaker=speaker)
            for r in rows]


def _payload(run_dir: Path, *, synth: bool = True) -> dict:
    evaluations: dict = {"baseline": {}, "baseline+prompt": {}, "adapted": {}}
    jobs = [("baseline", PRIMARY, MED, 2), ("baseline+prompt", PRIMARY, MED, 3), ("adapted", PRIMARY, MED, 4),
            ("baseline", FORGETTING, GEN, 2), ("adapted", FORGETTING, GEN, 3)]  # the prompt decodes the primary only
    for system, ref, rows, col in jobs:
        utts = _utts(rows, SPEAKER if ref == PRIMARY else "bob")
        evaluations[system][ref] = evaluate_manifest(
            DictTranscriber({r[0]: r[col] for r in rows}), utts, run_dir / "eval" / system / ref.replace("/", "-"),
            lang="es", terms=TERMS, model_name=system, extra={"system": system},
        )
    history = [{"step": 0, "loss": None, "dev_wer": 0.3}, {"step": 5, "loss": 1.2, "dev_wer": None},
               {"step": 10, "loss": 0.7, "dev_wer": 0.2}]
    return {
        "recipe": {"name": "tiny<run>", "seed": 0, "data": {"sources": [
            {"name": "med", "kind": "synth" if synth else "corpus", "engine": "kokoro"},
            {"name": "gen", "kind": "corpus"}]}},
        "model": {"name": "whisper-tiny", "hf_dir": "/m", "source": "test"},
        "data": {}, "normalizer": evaluations["baseline"][PRIMARY]["normalizer"],
        "primary": PRIMARY, "forgetting": FORGETTING, "evaluations": evaluations,
        "train": {"strategy": "head", "steps": 10, "wall_time_s": 3.0, "trainable_params": 10, "best_dev_wer": 0.2,
                  "best_step": 10},
        "train_history": history, "exports": {}, "timings_s": {"train_s": 3.0},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    payload = enrich(_payload(run_dir), run_dir, num_samples=1000, seed=0)
    write_report(run_dir, payload)
    return run_dir, payload


def _png_images(html: str) -> list[bytes]:
    return [base64.b64decode(src) for src in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html)]


def test_enrich_adds_comparisons_examples_and_sets(run):
    _, payload = run
    assert sets_of(payload) == [PRIMARY, FORGETTING]
    pairs = {ref: [(c["a"], c["b"]) for c in cs] for ref, cs in payload["comparisons"].items()}
    assert pairs == {PRIMARY: [("baseline", "adapted"), ("baseline+prompt", "adapted"),
                               ("baseline", "baseline+prompt")],
                     FORGETTING: [("baseline", "adapted")]}
    primary = payload["comparisons"][PRIMARY][0]
    base, adapted = (payload["evaluations"][s][PRIMARY]["wer"] for s in ("baseline", "adapted"))
    assert primary["diff"] == pytest.approx(adapted - base) and primary["diff"] < 0
    assert primary["ci"][0] <= primary["diff"] <= primary["ci"][1]
    assert payload["bootstrap"] == {"num_samples": 1000, "seed": 0, "level": 0.95}
    assert payload["sets"][PRIMARY]["kind"] == "synth" and payload["sets"][FORGETTING]["kind"] == "corpus"
    assert payload["eval_dirs"]["baseline+prompt"] == {PRIMARY: "eval/baseline+prompt/med-test"}
    examples = payload["examples"][PRIMARY]
    assert examples and set(examples[0]["systems"]) == {"baseline", "baseline+prompt", "adapted"}
    assert payload["evaluations"]["baseline"][PRIMARY]["hallucinations"]["ids"]["insertion_run"] == ["m6"]


def test_report_md_rows_per_set_and_system(run):
    run_dir, payload = run
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert md == markdown(payload)
    label = f"{PRIMARY} (primary; synthetic speech: kokoro)"
    rows = {(r["set"], r["system"]) for r in summary_rows(payload)}
    assert rows == {(PRIMARY, "baseline"), (PRIMARY, "baseline+prompt"), (PRIMARY, "adapted"),
                    (FORGETTING, "baseline"), (FORGETTING, "adapted")}
    for system in ("baseline", "baseline+prompt", "adapted"):
        m = payload["evaluations"][system][PRIMARY]
        lo, hi = m["wer_ci95"]
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} | {system} |"))
        assert f"{100 * m['wer']:.1f}%" in line and f"{100 * lo:.1f}–{100 * hi:.1f}%" in line
        assert f"{100 * m['terms']['recall']:.1f}%" in line
    assert f"| {FORGETTING} (forgetting check) | adapted |" in md
    assert f"| {FORGETTING} (forgetting check) | baseline+prompt |" not in md
    assert "## Forgetting check: gen/test" in md and "adapted vs baseline+prompt" in md
    assert "synthetic (TTS) speech" in md


def test_report_html_is_self_contained_with_every_plot(run):
    run_dir, _ = run
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    images = _png_images(html)
    assert len(images) == 4  # WER with CIs, per speaker, per term, training curves
    from PIL import Image

    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<b>ana&co</b>" not in html and r"&lt;b&gt;ana&amp;co&lt;/b&gt; $\nomath$" in html
    assert "tiny&lt;run&gt;" in html and "tiny<run>" not in html
    assert '<ins title="insertion">gracias por ver el video</ins>' in html
    assert "<del>renal</del> → <ins>real</ins>" in html
    for section in ("Is the gain real?", "Forgetting check", "Hallucinations", "Most frequent confusions",
                    "Aligned examples"):
        assert f"<h2>{section}</h2>" in html


def test_hand_made_payload_without_eval_dirs_renders(tmp_path):
    metrics = {"wer": 0.25, "cer": 0.1, "num_utts": 2, "wer_ci95": [0.1, 0.4], "substitutions": 1, "deletions": 0,
               "insertions": 0, "raw": {"wer": 0.5}, "per_speaker": {"x<y": {"wer": 0.25}}}
    payload = {"recipe": {"name": "r&d"}, "model": {"name": "m", "source": "s"}, "primary": "a/test",
               "normalizer": {"name": "n", "settings": {}}, "evaluations": {"baseline": {"a/test": metrics}},
               "train": {}, "timings_s": {}}
    paths = write_report(tmp_path, payload)
    html = paths["html"].read_text(encoding="utf-8")
    assert len(_png_images(html)) == 2  # WER and per speaker; no terms, no history
    assert "r&amp;d" in html and "No training history" in html and "No term list" in html
    assert "| a/test (primary) | baseline | 2 | 25.0% | 10.0–40.0% |" in paths["md"].read_text(encoding="utf-8")


def test_regenerate_from_report_json_matches(run, tmp_path):
    run_dir, _ = run
    paths = regenerate(run_dir, tmp_path)
    assert paths["md"].read_text(encoding="utf-8") == (run_dir / "report.md").read_text(encoding="utf-8")
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == json.loads(
        (run_dir / "report.json").read_text(encoding="utf-8"))
    with pytest.raises(FileNotFoundError, match="no report.json"):
        regenerate(tmp_path / "nothing")


def test_compare_run_and_eval_dirs(run, tmp_path, capsys):
    run_dir, payload = run
    eval_dir = run_dir / "eval" / "adapted" / "gen-test"
    rows = compare([run_dir, eval_dir])
    assert [(r["set"], r["system"]) for r in rows][:3] == [(PRIMARY, "baseline"), (PRIMARY, "baseline+prompt"),
                                                          (PRIMARY, "adapted")]
    assert [r["from"] for r in rows if r["set"] == FORGETTING] == [str(run_dir)] * 2
    # an evaluation scored from in-memory utterances has no manifest path: its set is named after the folder
    assert (rows[-1]["set"], rows[-1]["system"], rows[-1]["from"]) == ("gen-test", "adapted", str(eval_dir))
    out = tmp_path / "table.md"
    assert main(["compare", str(run_dir), str(eval_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = out.read_text(encoding="utf-8")
    assert table in printed and table.startswith("| test set | system | from |")
    wer = payload["evaluations"]["adapted"][PRIMARY]["wer"]
    assert f"| {PRIMARY} | adapted | {run_dir} | 6 | {100 * wer:.1f}% |" in table
    assert "different normalizers" not in table


def test_compare_warns_on_different_normalizers_and_rejects_other_folders(tmp_path):
    for name, settings in (("a", {"strip_accents": True}), ("b", {"strip_accents": False})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({
            "wer": 0.1, "num_utts": 3, "cer": 0.05, "wer_ci95": [0.0, 0.2], "system": name,
            "manifest": "data/corpus/test.jsonl", "normalizer": {"name": "n", "settings": settings}}))
    table = markdown_table(compare([tmp_path / "a", tmp_path / "b"]))
    assert "| corpus/test | a |" in table and "| corpus/test | b |" in table
    assert "different normalizers" in table
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        compare([tmp_path / "empty"])
    assert main(["compare", str(tmp_path / "empty")]) == 1


def test_report_html_renders_in_headless_chromium(run, tmp_path):
    import importlib.util
    import shutil
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "bench" / "report_screenshot.py"
    spec = importlib.util.spec_from_file_location("report_screenshot", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    if not any(shutil.which(name) for name in bench.BROWSERS):
        pytest.skip("no headless Chromium (apt-get install chromium-headless-shell)")
    run_dir, _ = run
    out = subprocess.run([sys.executable, str(script), str(run_dir), "--regenerate", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "all 4 images rendered" in out.stdout
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")


def test_eval_folders_that_do_not_match_are_reported_not_compared(run, tmp_path):
    import shutil

    run_dir, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    rows = (copy / "eval/adapted/gen-test/hypotheses.jsonl").read_text(encoding="utf-8").splitlines()
    (copy / "eval/adapted/gen-test/hypotheses.jsonl").write_text("\n".join(rows[:-1]) + "\n", encoding="utf-8")
    regenerate(copy)
    regenerate(copy)  # again from the rebuilt report.json: errors are recomputed, not accumulated
    payload = json.loads((copy / "report.json").read_text(encoding="utf-8"))
    assert [(e["set"], e["a"], e["b"]) for e in payload["comparison_errors"]] == [(FORGETTING, "baseline", "adapted")]
    assert "utterance g3 is scored in a but not in b" in payload["comparison_errors"][0]["error"]
    assert FORGETTING not in payload["comparisons"] and PRIMARY in payload["comparisons"]
    assert "adapted vs baseline on gen/test: not compared" in (copy / "report.md").read_text(encoding="utf-8")


def test_the_no_speech_table_counts_speech_answered_with_nothing(tmp_path):
    from speechtl.report.markdown import nonspeech_rows

    utts = _utts(GEN, "bob")
    answers = {"g1": "marque uno para ventas", "g2": "", "g3": "  "}
    metrics = evaluate_manifest(DictTranscriber(answers), utts, tmp_path / "e", lang="es")
    assert metrics["empty_hypotheses"] == 2 and metrics["num_utts"] == 3
    clips = {"clips_with_words": 1, "num_clips": 8, "share_with_words": 0.125, "top_words": [["y", 1]]}
    payload = {"nonspeech": {"systems": {"baseline": clips, "adapted": {**clips, "clips_with_words": 0}}},
               "evaluations": {"baseline": {"gen/test": {"empty_hypotheses": 0, "num_utts": 3}},
                               "adapted": {"gen/test": metrics}}}
    rows, verdict = nonspeech_rows(payload)
    assert [r[-1] for r in rows] == ["0 of 3", "2 of 3"]
    assert verdict == "Regression: 2 more speech clips answered with no words than the baseline."
    payload["evaluations"]["adapted"]["gen/test"] = {"empty_hypotheses": 0, "num_utts": 3}
    assert nonspeech_rows(payload)[1].startswith("Adapted: no more clips with words, and no more silent")


def test_alphas_the_descending_search_skipped_are_shown_as_not_decoded():
    from speechtl.report.markdown import interpolation_rows

    cand = [{"alpha": a, "dev_wer": {"m/dev": w}, "pooled_dev_wer": w} for a, w in [(0.0, 0.35), (0.75, 0.24), (1.0, 0.22)]]
    payload = {"interpolation": {"alpha": 1.0, "candidates": cand, "dev_sets": ["m/dev"], "skipped": [0.25, 0.5]}}
    header, rows = interpolation_rows(payload)
    assert [r[0] for r in rows] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert rows[1][1:3] == ["not decoded", "not decoded"] and rows[4][-1] == "**kept**"


def test_the_long_form_section_shows_served_wer_next_to_clip_by_clip_and_errors_as_such():
    from speechtl.report.markdown import _timestamps

    ok = {"recordings": 2, "sane_recordings": 2, "segments": 9, "median_start_offset_s": 0.1,
          "starts_within_tolerance": 0.9, "tolerance_s": 1.0, "wer": 0.123, "clip_wer": 0.101}
    payload = {"timestamps": {"set": "m/test", "compute_type": "float32",
                              "systems": {"adapted": ok, "baseline": {"error": "English-only"}}}}
    lines = _timestamps(payload)
    adapted = next(line for line in lines if line.startswith("| adapted"))
    assert "12.3%" in adapted and "10.1%" in adapted and "2 of 2 recordings sane" in adapted
    assert "long-form WER 12.3%" not in adapted  # the WER has its own column
    assert any(line.startswith("| baseline") and "not checked: English-only" in line for line in lines)
    assert _timestamps({"timestamps": None}) == []


def test_the_report_says_how_every_system_was_decoded(run):
    _, payload = run
    assert "Decoding: greedy, the same for every system." in markdown(payload)
    beams = {**payload, "recipe": {**payload["recipe"], "eval": {"num_beams": 3}}}
    text = markdown(beams)
    assert "Decoding: beam search of width 3, the same for every system" in text and "decoded greedily" in text
    ctc = {**beams, "train": {**payload["train"], "route": "ctc"}}
    assert "Decoding: beam search" not in markdown(ctc)
