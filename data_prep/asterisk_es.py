"""Asterisk's Spanish prompts -> manifests with sentence-disjoint train/dev/test splits.

The core prompts (Debian ``asterisk-core-sounds-es-g722``, one Mexican speaker) are the real Spanish speech
the ``es`` recipes train on and test on; ``--voice es-co`` takes the Colombian speaker of
``asterisk-prompt-es-co`` (texts by prompt id), whom the recipes keep for testing only. ``make setup``
installs both (scripts/system-deps.sh).

    python data_prep/asterisk_es.py runs/data/asterisk-es [--voice es-co]
"""

import argparse
import sys

from speechtl.cli import main
from speechtl.data.importers.asterisk import DEFAULT_VOICE, VOICES, default_root


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder: manifest.jsonl, quarantine.jsonl, train/dev/test.jsonl")
    parser.add_argument("--voice", default=DEFAULT_VOICE, choices=sorted(VOICES))
    args = parser.parse_args(argv)
    return main(["prepare", str(default_root(args.voice)), "--format", "asterisk", "--opt", f"voice={args.voice}",
                 "--lang", "es", "--out", args.out, "--split", "--no-speaker-split", "--max-reject-share", "0.25"])


if __name__ == "__main__":
    sys.exit(run())
