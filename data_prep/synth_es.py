"""Spanish speech synthesized for the project's sentence files -> manifests, voices and sentences held out.

Kokoro voices (the natural-sounding engine the recipes train on) speak ``recipes/es/*.txt``; ``--engine
espeak`` gives the second engine the recipes test on. Synthetic speech: WER measured on it is WER on
synthesized voices, not on people.

    python data_prep/synth_es.py runs/data/synth-es [--engine espeak] [--num-voices 8]
"""

import argparse
import sys
from pathlib import Path

from speechtl.cli import main

SENTENCES = ("everyday.txt", "customer_service.txt", "medical.txt")


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder: raw/, manifest.jsonl, quarantine.jsonl, train/dev/test.jsonl")
    parser.add_argument("--engine", choices=["kokoro", "espeak"], default="kokoro")
    parser.add_argument("--num-voices", type=int, default=8)
    parser.add_argument("--voices-per-sentence", type=int, default=2)
    args = parser.parse_args(argv)
    texts = [str(Path(__file__).resolve().parents[1] / "recipes" / "es" / name) for name in SENTENCES]
    return main(["synth", *texts, "--lang", "es", "--engine", args.engine, "--num-voices", str(args.num_voices),
                 "--voices-per-sentence", str(args.voices_per_sentence), "--out", args.out, "--split"])


if __name__ == "__main__":
    sys.exit(run())
