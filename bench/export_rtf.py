"""Real-time factor and WER of an adapted Whisper on its runtimes, against the transformers model.

Baseline (named, measured in the same run): the transformers model of the run
(``runs/<name>/export/hf``) decoding the test manifest from audio, greedy,
float32, batch 8, through speechtl's ``WhisperASR``. Against it: the
CTranslate2 export (``runs/<name>/export/ct2``) on faster-whisper with each
``--compute-types`` (int8 is what a CPU voice-agent service runs), greedy,
one clip at a time as a service would, on audio padded to 30-s windows as
``speechtl serve`` does, and once more unpadded (faster-whisper called
as-is). Audio decoding is outside the timed decode in both. Prints WER (same normalizer), RTF (decode seconds / audio
seconds) and the speed-up over the baseline.

Run: ``python bench/export_rtf.py runs/es-medical`` after ``make adapt LANG=es DOMAIN=medical``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from speechtl.evaluate.decode import evaluate_manifest
from speechtl.models.whisper import WhisperASR
from speechtl.runtimes import FasterWhisper


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder with export/hf, export/ct2 and report.json")
    p.add_argument("--manifest", type=Path, help="default: the run's primary test manifest")
    p.add_argument("--compute-types", nargs="+", default=["int8", "float32"])
    p.add_argument("--threads", type=int, default=0, help="CTranslate2 CPU threads (0 = its default)")
    args = p.parse_args(argv)
    payload = json.loads((args.run / "report.json").read_text(encoding="utf-8"))
    lang = payload["recipe"]["lang"]
    source, _, split = payload["primary"].partition("/")
    manifest = args.manifest or Path(payload["data"][source][split])
    systems = [("transformers float32 (baseline)", lambda: WhisperASR.load(args.run / "export" / "hf"))]
    systems += [(f"faster-whisper {ct}", lambda ct=ct: FasterWhisper(args.run / "export" / "ct2",
                                                                             compute_type=ct, num_threads=args.threads))
                for ct in args.compute_types]
    systems.append((f"faster-whisper {args.compute_types[0]}, unpadded",  # as a caller of faster-whisper gets it
                    lambda: FasterWhisper(args.run / "export" / "ct2", compute_type=args.compute_types[0],
                                                     num_threads=args.threads, pad=False)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, load) in enumerate(systems):
            m = evaluate_manifest(load(), manifest, Path(tmp) / str(i), lang=lang, model_name=name)
            rows.append((name, m["wer"], m["rtf"], m["num_utts"], m["audio_duration_s"]))
    base_rtf = rows[0][2]
    print(f"manifest: {manifest} ({rows[0][3]} utterances, {rows[0][4]:.0f} s of audio)")
    print(f"{'system':<42} {'WER':>7} {'RTF':>7} {'speed-up':>9}")
    for name, wer, rtf, _, _ in rows:
        print(f"{name:<42} {100 * wer:6.2f}% {rtf:7.3f} {base_rtf / rtf:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
