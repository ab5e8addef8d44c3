"""Term recall and WER of a run's served model with and without hotwords, on the run's primary test set.

    python scripts/serve_hotwords.py runs/es-medical [--export ct2] [--compute-type int8] [--terms FILE]

Loads the export on the runtime `speechtl serve` uses (faster-whisper for ct2: padded to a 30-s window,
beams of 5, OpenAI's temperature fallback) and calls it as the server does for each clip of the primary
test set, once without and once with the hotwords the server would pass (the run's kept term prompt, or
`--terms`). Both are scored with the run's normalizer and term list.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from speechtl import audio
from speechtl.data.manifest import read_manifest
from speechtl.evaluate.scoring import read_terms, score, scoring_normalizer, term_recall
from speechtl.runtimes import load_runtime
from speechtl.serve.hotwords import served_hotwords


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--export", default="ct2")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--terms", help="term list for the hotwords (default: the run's kept term prompt)")
    args = parser.parse_args()
    report = json.loads((args.run_dir / "report.json").read_text(encoding="utf-8"))
    recipe = report["recipe"]
    model_dir = args.run_dir / "export" / args.export
    hotwords = served_hotwords(model_dir, args.terms)
    if not hotwords:
        sys.exit(f"{model_dir}: no hotwords (the run did not keep its term prompt); pass --terms FILE")
    terms = read_terms(args.terms or recipe["eval"]["terms"])
    primary = recipe["eval"]["primary"]
    utts = read_manifest(report["evaluations"]["adapted"][primary]["manifest"])
    runtime = load_runtime(model_dir, compute_type=args.compute_type, lang=recipe["lang"])
    normalizer = scoring_normalizer(recipe["lang"])
    refs = [u.text for u in utts]
    clips = [audio.load(u.audio_filepath) for u in utts]
    for label, words in (("without hotwords", None), ("with hotwords", hotwords)):
        hyps = [runtime.transcript(clip, language=recipe["lang"], hotwords=words).text for clip in clips]
        wer = score(refs, hyps, normalizer).wer
        recall = term_recall(refs, hyps, terms, normalizer).recall
        print(f"{primary} ({len(utts)} clips), {args.export} {args.compute_type}, {label}: WER {wer:.1%}, "
              f"term recall {recall:.1%}")


if __name__ == "__main__":
    main()
