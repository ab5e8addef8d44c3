"""A Mozilla Common Voice language folder (``*.tsv`` + ``clips/``) -> manifests with speaker- and
sentence-disjoint train/dev/test splits (speakers are ``client_id``).

    python data_prep/commonvoice.py /corpora/cv-corpus-17.0/es runs/data/cv-es --lang es [--tsv validated.tsv]
"""

import argparse
import sys

from speechtl.cli import main


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="the language folder of a Common Voice release")
    parser.add_argument("out", help="output folder: manifest.jsonl, quarantine.jsonl, train/dev/test.jsonl")
    parser.add_argument("--lang", required=True, help="language of the transcripts (ISO 639-1)")
    parser.add_argument("--tsv", action="append", default=[], help="tsv file(s) to read (default: the importer's)")
    args = parser.parse_args(argv)
    options = ["--opt", "tsv=[" + ", ".join(args.tsv) + "]"] if args.tsv else []
    return main(["prepare", args.corpus, "--format", "commonvoice", *options, "--lang", args.lang,
                 "--out", args.out, "--split"])


if __name__ == "__main__":
    sys.exit(run())
