"""Data-prep throughput, as a multiple of real time per CPU core.

Makes a small corpus of speech (espeak-ng, Spanish, resampled to 44.1 kHz
stereo like typical studio/crowd-sourced input), stores it as wav and as mp3,
and times on one core:

- speechtl: ``speechtl.data.prepare.prepare`` in this process (decode, downmix,
  resample, trim, level, checks, text normalization, 16-bit wav write);
- baseline: the common shell recipe, one ``ffmpeg -i IN -ac 1 -ar 16000 OUT.wav``
  process per file (resampling and downmix only: no trim, level or checks).

Prints audio seconds per CPU second for each and the ratio speechtl/baseline.
Run: ``python bench/prepare.py [--clips 40]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from speechtl.audio import resample
from speechtl.data.manifest import RawItem
from speechtl.data.prepare import PrepareConfig, prepare

SENTENCES = [
    "Buenos días, quisiera saber el estado de mi pedido.",
    "La reunión se ha cambiado al jueves por la tarde.",
    "Por favor, marque el número de su extensión seguido de la tecla almohadilla.",
    "El médico me recetó un antibiótico durante una semana.",
    "Mañana lloverá en el norte y hará sol en el resto del país.",
]


def make_corpus(root: Path, clips: int) -> list[tuple[Path, str, float]]:
    """Write ``clips`` wav files (44.1 kHz stereo) of espeak-ng speech; returns (path, text, seconds)."""
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(clips):
        text = SENTENCES[i % len(SENTENCES)]
        raw = root / f"raw{i}.wav"
        subprocess.run(["espeak-ng", "-v", "es", "-s", str(140 + 5 * (i % 8)), "-w", str(raw), text], check=True)
        x, sr = sf.read(raw, dtype="float32")
        x = resample(x, sr, 44100)
        pad = np.zeros(int(0.4 * 44100), dtype=np.float32)
        x = np.concatenate([pad, x, x, pad])  # two readings: ~6-8 s a clip
        stereo = np.stack([x, 0.8 * x], axis=1)
        path = root / f"clip{i:03d}.wav"
        sf.write(path, stereo, 44100, subtype="PCM_16")
        raw.unlink()
        out.append((path, text, len(x) / 44100))
    return out


def to_mp3(clips: list[tuple[Path, str, float]], root: Path) -> list[tuple[Path, str, float]]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for path, text, seconds in clips:
        mp3 = root / (path.stem + ".mp3")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-b:a", "128k", str(mp3)], check=True)
        out.append((mp3, text, seconds))
    return out


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg runs as a child)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_speechtl(clips, out: Path) -> tuple[float, float]:
    items = [RawItem(id=p.stem, text=t, speaker="s", audio_path=p) for p, t, _ in clips]
    config = PrepareConfig(lang="es", num_workers=0, max_reject_share=0.0)
    start_cpu, start_wall = cpu_seconds(), time.perf_counter()
    result = prepare(items, out, config)
    cpu, wall = cpu_seconds() - start_cpu, time.perf_counter() - start_wall
    assert len(result.utterances) == len(clips), result.rejected
    return cpu, wall


def time_ffmpeg(clips, out: Path) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)
    start_cpu, start_wall = cpu_seconds(), time.perf_counter()
    for path, _, _ in clips:
        cmd = ["ffmpeg", "-v", "error", "-y", "-threads", "1", "-i", str(path), "-ac", "1", "-ar", "16000",
               str(out / (path.stem + ".wav"))]
        subprocess.run(cmd, check=True)
    return cpu_seconds() - start_cpu, time.perf_counter() - start_wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40)
    args = parser.parse_args()
    if not shutil.which("espeak-ng") or not shutil.which("ffmpeg"):
        print("bench/prepare.py needs espeak-ng and ffmpeg (make setup installs them)", file=sys.stderr)
        return 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="speechtl-bench-") as tmp:
        tmp = Path(tmp)
        wavs = make_corpus(tmp / "wav", args.clips)
        mp3s = to_mp3(wavs, tmp / "mp3")
        audio_s = sum(s for _, _, s in wavs)
        print(f"corpus: {len(wavs)} clips, {audio_s:.1f} s of 44.1 kHz stereo speech (espeak-ng, Spanish)")
        print(f"{'input':<6} {'system':<30} {'cpu s':>7} {'wall s':>7} {'x real time / core':>19}")
        for name, clips in (("wav", wavs), ("mp3", mp3s)):
            rows = {
                "speechtl prepare": time_speechtl(clips, tmp / f"out-speechtl-{name}"),
                "baseline: ffmpeg per file": time_ffmpeg(clips, tmp / f"out-ffmpeg-{name}"),
            }
            speed = {}
            for system, (cpu, wall) in rows.items():
                speed[system] = audio_s / cpu
                print(f"{name:<6} {system:<30} {cpu:>7.2f} {wall:>7.2f} {speed[system]:>19.0f}")
            ratio = speed["speechtl prepare"] / speed["baseline: ffmpeg per file"]
            print(f"{name:<6} speechtl / baseline: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
