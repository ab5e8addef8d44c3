"""data_prep/: each corpus script runs (its --help) and prepares a corpus through the speechtl CLI."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tone_corpus import write_tone

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "data_prep").glob("*.py"))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_a_script_per_corpus():
    assert {p.stem for p in SCRIPTS} >= {"asterisk_es", "synth_es", "commonvoice", "librispeech"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_help(script):
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout and "out" in out.stdout


def test_commonvoice_script_prepares_and_splits(tmp_path, capsys):
    corpus = tmp_path / "cv-es"
    (corpus / "clips").mkdir(parents=True)
    rows = ["client_id\tpath\tsentence"]
    sentences = ["hola", "buenos días", "gracias", "adiós", "por favor", "hasta luego", "buenas noches", "sí"]
    for spk in range(4):
        for i, text in enumerate(sentences):
            name = f"c{spk}_{i}.wav"
            write_tone(corpus / "clips" / name, 200 + 40 * i + 10 * spk, 0.6)
            rows.append(f"spk{spk}\t{name}\t{text}")
    (corpus / "validated.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert _load(SCRIPTS[[p.stem for p in SCRIPTS].index("commonvoice")]).run(
        [str(corpus), str(out), "--lang", "es"]) == 0
    splits = json.loads((out / "splits.json").read_text())
    assert sum(splits[name]["utterances"] for name in ("train", "dev", "test")) + splits["leftovers"] == 32
    assert "prepared 32 utterances" in capsys.readouterr().out
