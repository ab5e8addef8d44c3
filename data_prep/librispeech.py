"""A LibriSpeech or Multilingual LibriSpeech (MLS) folder -> manifests with speaker- and sentence-disjoint
train/dev/test splits (speakers are the reader ids of the folder layout).

    python data_prep/librispeech.py /corpora/mls_spanish runs/data/mls-es --lang es
"""

import argparse
import sys

from speechtl.cli import main


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="a LibriSpeech subset folder or an MLS language folder")
    parser.add_argument("out", help="output folder: manifest.jsonl, quarantine.jsonl, train/dev/test.jsonl")
    parser.add_argument("--lang", required=True, help="language of the transcripts (ISO 639-1)")
    args = parser.parse_args(argv)
    return main(["prepare", args.corpus, "--format", "librispeech", "--lang", args.lang, "--out", args.out,
                 "--split"])


if __name__ == "__main__":
    sys.exit(run())
