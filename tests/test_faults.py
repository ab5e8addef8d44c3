"""Fault injection: ``kill -9`` of a tiny ``speechtl adapt`` inside each stage, then a rerun (``--resume`` after
a kill in training) that must end with the report of an uninterrupted run, no orphan process and no temporary
left behind. The kill is ``SPEECHTL_KILL_AT=<point>`` (speechtl.faults): the process SIGKILLs itself there.

Each case runs in its own subprocess with its own caches, so the stage it kills is really computed (a warm
cache would skip it). CPU, fp32: the uninterrupted run is the reference, compared figure for figure.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")

from tone_corpus import folder_corpus  # noqa: E402

from speechtl.faults import ENV, POINTS  # noqa: E402
from speechtl.models.random_whisper import save_random_whisper  # noqa: E402

SENTENCES = ["hola qué tal", "buenos días", "muchas gracias", "hasta luego", "por favor", "buenas noches",
             "sí señor", "de nada", "perdone usted", "hasta mañana"]
SPOKEN = ["el médico llega mañana", "tome una pastilla al día", "la cita es el martes", "llame a la enfermera",
          "el análisis salió bien", "vuelva en una semana"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    sentences = root / "spoken.txt"
    sentences.write_text("\n".join(SPOKEN) + "\n", encoding="utf-8")
    recipe = {
        "name": "faults", "lang": "es", "model": str(save_random_whisper(root / "tiny", seed=1)), "num_workers": 2,
        "data": {"sources": [
            {"name": "corpus", "kind": "corpus", "format": "folder", "path": str(folder_corpus(root / "corpus",
                                                                                               SENTENCES)),
             "split": {"dev_share": 0.2, "test_share": 0.2, "by_speaker": False, "seed": 1}},
            {"name": "spoken", "kind": "synth", "sentences": [str(sentences)], "engine": "espeak", "num_voices": 2,
             "use": ["train"], "split": {"dev_share": 0.0, "test_share": 0.0, "by_speaker": False, "seed": 1}},
        ]},
        "train": {"strategy": "head", "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 1,
                  "eval_every_steps": 2, "eval_max_new_tokens": 8, "mixed_precision": "no"},
        "interpolate": {"alphas": [0.0, 1.0]},
        "eval": {"primary": "corpus/test", "batch_size": 4, "max_wer": None},  # random weights
        "export": {"formats": ["hf"], "parity_margin_points": 1e6},
    }
    path = root / "faults.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return root, path


def _adapt(root: Path, recipe: Path, case: str, *, kill_at: str | None = None, resume: bool = False):
    """``speechtl adapt`` in a subprocess with the case's own runs folder and caches."""
    env = {**os.environ, "SPEECHTL_CACHE": str(root / case / "cache"), "PYTHONHASHSEED": "0"}
    for name, sub in (("SPEECHTL_SYNTH_STORE", "synth"), ("SPEECHTL_DECODE_CACHE", "decodes"),
                      ("SPEECHTL_ENCODER_CACHE", "encoder")):
        env[name] = str(root / case / "cache" / sub)
    env.pop(ENV, None)
    if kill_at:
        env[ENV] = kill_at
    args = [sys.executable, "-c", "import sys; from speechtl.cli import main; sys.exit(main(sys.argv[1:]))",
            "adapt", str(recipe), "--runs", str(root / case / "runs")] + (["--resume"] if resume else [])
    # stderr to a file, not a pipe: an orphaned worker holding the pipe would block the wait instead of failing
    log = root / case / ("rerun.log" if (root / case / "first.log").exists() else "first.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as err:
        done = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=600)
    return subprocess.CompletedProcess(args, done.returncode, "", log.read_text(encoding="utf-8"))


def _figures(report: dict) -> dict:
    """What a run concluded: every evaluation's WER and CER, the alpha kept, the steps trained and the hash of
    the trained weights (fp32 on CPU: bit for bit)."""
    out = {f"{system} {ref}": (m["wer"], m["cer"]) for system, sets in report["evaluations"].items()
           for ref, m in sets.items()}
    train = report["train"]
    return {**out, "alpha": report["interpolation"]["alpha"], "steps": train["steps"],
            "weights": train["weights_sha256"]}


def _survivors(marker: str) -> list[str]:
    """Processes whose command line names ``marker`` (fork workers keep their parent's command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def _temporaries(*folders: Path) -> list[str]:
    return [str(p) for folder in folders if folder.exists() for p in folder.rglob("*.tmp")]


@pytest.fixture(scope="module")
def reference(tiny):
    root, recipe = tiny
    done = _adapt(root, recipe, "reference")
    assert done.returncode == 0, done.stderr[-3000:]
    return _figures(json.loads((root / "reference/runs/faults/report.json").read_text()))


@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_inside_a_stage_reruns_to_the_uninterrupted_report(tiny, reference, point):
    root, recipe = tiny
    killed = _adapt(root, recipe, point, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, f"not killed at {point}: {killed.stderr[-3000:]}"
    time.sleep(0.5)  # the workers' parent-death signal
    assert not _survivors(str(root / point)), "orphans of the killed run"
    rerun = _adapt(root, recipe, point, resume=point == "training")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    run = root / point / "runs" / "faults"
    assert _figures(json.loads((run / "report.json").read_text())) == reference
    assert not _temporaries(run, root / point / "cache")
    if point == "training":
        assert "resumed" in rerun.stderr and "at step 2" in rerun.stderr


def test_a_fault_point_outside_the_list_is_an_error():
    from speechtl.faults import point

    with pytest.raises(ValueError, match="not one of"):
        point("nowhere")
