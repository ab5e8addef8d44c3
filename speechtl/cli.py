"""The ``speechtl`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from speechtl.adapt.run import adapt
from speechtl.audio import AudioConfig, decode, process
from speechtl.config import load_recipe
from speechtl.data.importers import detect_format, read_corpus
from speechtl.data.manifest import read_manifest, summarize, validate
from speechtl.data.prepare import PrepareConfig, prepare, write_splits
from speechtl.data.splits import SplitConfig
from speechtl.data.synth.channel import ChannelConfig
from speechtl.data.synth.corpus import SynthConfig, read_sentences, synthesize_corpus
from speechtl.evaluate.decode import evaluate_manifest
from speechtl.evaluate.scoring import read_terms
from speechtl.export.parity import export
from speechtl.fsio import atomic_write_text
from speechtl.models.registry import resolve
from speechtl.report.compare import compare, markdown_table
from speechtl.runtimes import load_runtime
from speechtl.runtimes.transformers import Transformers
from speechtl.serve import app as serve_app
from speechtl.serve.app import serve

log = logging.getLogger("speechtl")
QUIET_LOGGERS = ("faster_whisper", "accelerate", "httpx", "urllib3")


def _key_values(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> dict; values parsed as YAML scalars (numbers, booleans, lists)."""

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"error: expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _progress(total: int | None, desc: str):
    return tqdm(total=total, desc=desc, unit="utt", disable=None, file=sys.stderr)


def _print_summary(summary: dict[str, Any], out_dir: Path, splits: dict[str, Any] | None) -> None:
    print(
        f"prepared {summary['utterances']} utterances, {summary['hours']:.3f} h, "
        f"{summary['speakers']} speakers, {summary['sentences']} distinct sentences"
    )
    print(f"rejected {summary['rejected']} of {summary['items']} items")
    for reason, count in summary["rejected_by_reason"].items():
        print(f"  {reason:<32} {count}")
    if splits:
        for name in ("train", "dev", "test"):
            s = splits[name]
            print(f"split {name:<5} {s['utterances']:>6} utts {s['hours']:.3f} h {s['speakers']} speakers")
        if splits["leftovers"]:
            print(f"split leftovers (speaker and sentence in different splits): {splits['leftovers']}")
    print(f"manifest:   {out_dir / 'manifest.jsonl'}")
    print(f"quarantine: {out_dir / 'quarantine.jsonl'}")


def _split_config(args: argparse.Namespace):
    return SplitConfig(
        dev_share=args.dev_share,
        test_share=args.test_share,
        by_speaker=not args.no_speaker_split,
        by_sentence=not args.no_sentence_split,
        seed=args.seed,
    )


def _prepare_config(args: argparse.Namespace):
    audio = AudioConfig(
        max_duration_s=args.max_duration_s, min_duration_s=args.min_duration_s, output_format=args.audio_format
    )
    return PrepareConfig(lang=args.lang, audio=audio, max_reject_share=args.max_reject_share,
                         num_workers=args.num_workers, max_chars_per_s=args.max_chars_per_s)


def cmd_prepare(args: argparse.Namespace) -> int:
    source = args.source
    fmt = args.format or detect_format(Path(source))
    items = list(read_corpus(source, format=fmt, **_key_values(args.opt)))
    out_dir = Path(args.out)
    with _progress(len(items), f"prepare {fmt}") as bar:
        result = prepare(
            items, out_dir, _prepare_config(args), progress=bar.update,
            extra_summary={"format": fmt, "source": str(source)}
        )
    splits = write_splits(result.utterances, out_dir, _split_config(args)) if args.split else None
    _print_summary(result.summary, out_dir, splits)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    sentences = [s for path in args.sentences for s in read_sentences(Path(path))]
    channel = None
    if args.codec != "none" or args.snr_db or args.level_jitter_db:
        snr = tuple(float(x) for x in args.snr_db.split(":")) if args.snr_db else None
        if snr is not None and len(snr) == 1:
            snr = (snr[0], snr[0])
        channel = ChannelConfig(codec=args.codec, snr_db=snr, level_jitter_db=args.level_jitter_db, seed=args.seed)
    config = SynthConfig(
        engine=args.engine,
        lang=args.lang,
        num_voices=args.num_voices,
        voices_per_sentence=args.voices_per_sentence,
        seed=args.seed,
        num_workers=args.num_workers,
        channel=channel,
    )
    out_dir = Path(args.out)
    total = len(sentences) * (args.voices_per_sentence or args.num_voices)
    with _progress(total, f"synth {args.engine}") as bar:
        holdout = _split_config(args) if args.split else None
        items = synthesize_corpus(sentences, out_dir / "raw", config, progress=bar.update, holdout=holdout)
    with _progress(len(items), "prepare") as bar:
        result = prepare(
            items,
            out_dir,
            _prepare_config(args),
            progress=bar.update,
            extra_summary={"format": "synth", "synth": {"engine": args.engine, "num_voices": args.num_voices}},
        )
    splits = write_splits(result.utterances, out_dir, _split_config(args)) if args.split else None
    _print_summary(result.summary, out_dir, splits)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.manifests:
        utts = read_manifest(path)
        problems = validate(utts, check_files=not args.no_files)
        print(f"{path}: {json.dumps(summarize(utts))}")
        for problem in problems:
            print(f"  {problem}")
        status = status or (1 if problems else 0)
    return status


def cmd_adapt(args: argparse.Namespace) -> int:
    overrides = _key_values(args.overrides)
    if args.data:
        overrides.update(_data_override(args.recipe, args.data))
    recipe, resolved = load_recipe(args.recipe, overrides)
    adapt(recipe, resolved, Path(args.runs), resume=args.resume, notify=print)
    run_dir = Path(args.runs) / recipe.name
    print(f"run folder: {run_dir}")
    return 0


def _data_override(recipe_path: str, data: str) -> dict[str, Any]:
    """``--data DIR``: the recipe's first corpus source reads DIR instead, format detected."""

    raw = yaml.safe_load(Path(recipe_path).read_text(encoding="utf-8"))
    corpora = [s["name"] for s in raw.get("data", {}).get("sources", []) if s.get("kind", "corpus") == "corpus"]
    if not corpora:
        raise SystemExit(f"error: {recipe_path} has no corpus source for --data to replace")
    return {f"data.sources.{corpora[0]}.path": data, f"data.sources.{corpora[0]}.format": None}


def _load_asr(model: str, lang: str) -> Transformers:
    """Whisper, or a CTC model (a speechtl CTC run's output, a wav2vec2-family checkpoint with its head), by name,
    hub id or directory (:func:`speechtl.models.registry.resolve`), on the transformers runtime."""
    return Transformers.load(resolve(model).hf_dir, language=lang)


def cmd_eval(args: argparse.Namespace) -> int:
    asr = _load_asr(args.model, args.lang)
    metrics = evaluate_manifest(
        asr, args.manifest, args.out, lang=args.lang, prompt=args.prompt,
        terms=read_terms(args.terms) if args.terms else None, batch_size=args.batch_size, model_name=args.model,
    )  # fmt: skip
    print(
        f"{args.manifest}: {metrics['num_utts']} utts  WER {metrics['wer']:.2%}  CER {metrics['cer']:.2%}  "
        f"(S {metrics['substitutions']} D {metrics['deletions']} I {metrics['insertions']}; "
        f"normalizer {metrics['normalizer']['name']})"
    )
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    table = markdown_table(compare([Path(d) for d in args.dirs]))
    print(table, end="")
    if args.out:
        atomic_write_text(Path(args.out), table)
        print(f"written: {args.out}")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    """Audio of any length: one line per file, then (long audio, or --timestamps) a line per segment."""
    model_dir = Path(args.model)
    runtime = (load_runtime(model_dir, lang=args.lang, compute_type=args.compute_type) if model_dir.is_dir()
               else _load_asr(args.model, args.lang))
    config = AudioConfig(trim=False, min_duration_s=0.0, segmentation=True)
    for path in args.audio:
        samples, rate = decode(path)
        result = runtime.transcript(process(samples, rate, config), language=args.lang, prompt=args.prompt)
        print(f"{path}\t{result.text.strip()}")
        if args.timestamps or len(result.segments) > 1:
            for seg in result.segments:
                print(f"  [{_clock(seg.start)} -> {_clock(seg.end)}]\t{seg.text.strip()}")
    return 0


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{rest:05.2f}"


def cmd_export(args: argparse.Namespace) -> int:
    result = export(args.source, args.format, out=args.out, quantization=args.quantization,
                    compute_type=args.compute_type, manifest=args.manifest, lang=args.lang,
                    margin_points=args.margin_points)
    if result.get("passed") is not None:
        print(f"parity {args.format}: WER {result['export_wer']:.2%} exported vs {result['torch_wer']:.2%} PyTorch "
              f"({result['diff_points']:+.2f} points, margin {result['margin_points']}); "
              + (f"RTF {result['export_rtf']:.3f} exported" if result["export_rtf"] is not None
                 else "transcripts of these very files read back from the decode cache"))
    print(f"export {args.format}: {args.out or Path(args.source) / 'export' / args.format}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    model_dir = Path(args.model)
    if not model_dir.is_dir():  # a model name: resolved as eval/transcribe resolve it

        model_dir = resolve(args.model).hf_dir
    api_key = args.api_key or os.environ.get("SPEECHTL_API_KEY") or None
    serve(
        model_dir, host=args.host, port=args.port, api_key=api_key, compute_type=args.compute_type,
        language=args.language, num_workers=args.workers, queue_size=args.queue_size,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_duration_s=args.max_duration_s,
        model_id=args.model_id, log_level="debug" if args.verbose else "info", body_timeout_s=args.body_timeout_s,
        upload_timeout_s=args.upload_timeout_s, header_timeout_s=args.header_timeout_s, terms=args.terms,
        use_hotwords=not args.no_hotwords,
    )  # fmt: skip
    return 0


def _add_prepare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", required=True, help="language of the transcripts (ISO 639-1), e.g. es")
    p.add_argument("--out", required=True, help="output folder: manifest.jsonl, quarantine.jsonl, audio/")
    p.add_argument("--max-reject-share", type=float, default=0.2, help="fail when more items are rejected")
    p.add_argument("--max-duration-s", type=float, default=30.0, help="longest accepted utterance")
    p.add_argument("--min-duration-s", type=float, default=0.3, help="shortest accepted utterance (after trim)")
    p.add_argument("--audio-format", choices=["wav", "flac"], default="wav")
    p.add_argument("--max-chars-per-s", type=float, default=50.0,
                   help="quarantine a transcript with more characters per second of audio (text_audio_mismatch)")
    p.add_argument("--num-workers", type=int, default=2, help="worker processes")
    p.add_argument("--split", action="store_true", help="also write train/dev/test.jsonl")
    p.add_argument("--dev-share", type=float, default=0.1)
    p.add_argument("--test-share", type=float, default=0.2)
    p.add_argument("--no-speaker-split", action="store_true", help="do not hold speakers out")
    p.add_argument("--no-sentence-split", action="store_true", help="do not hold sentences out")
    p.add_argument("--seed", type=int, default=0)


def _add_prepare_command(sub: Any) -> None:
    p = sub.add_parser("prepare", help="import a corpus and normalize it into manifests")
    p.add_argument("source", help="corpus folder, NeMo manifest, or HF dataset folder / hub id")
    p.add_argument(
        "--format", help="commonvoice, librispeech, kaldi, nemo, folder, hf, asterisk (default: detect)"
    )
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="importer option")
    _add_prepare_options(p)
    p.set_defaults(func=cmd_prepare)


def _add_synth_command(sub: Any) -> None:
    p = sub.add_parser("synth", help="synthesize speech for sentences files into manifests")
    p.add_argument("sentences", nargs="+", help="text files, one sentence a line")
    p.add_argument("--engine", choices=["kokoro", "espeak"], default="kokoro")
    p.add_argument("--num-voices", type=int, default=8)
    p.add_argument("--voices-per-sentence", type=int, default=None, help="default: every voice says every sentence")
    p.add_argument("--codec", choices=["none", "mulaw", "g722"], default="none", help="telephone channel")
    p.add_argument("--snr-db", help="additive noise SNR in dB, a value or MIN:MAX")
    p.add_argument("--level-jitter-db", type=float, default=0.0)
    _add_prepare_options(p)
    p.set_defaults(func=cmd_synth)


def _add_adapt_command(sub: Any) -> None:
    p = sub.add_parser("adapt", help="prepare data, evaluate the baseline, train, evaluate, report, export")
    p.add_argument("recipe", help="recipe YAML, e.g. recipes/es.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.strategy=lora")
    p.add_argument("--data", help="corpus folder replacing the recipe's first corpus source (format detected)")
    p.add_argument("--runs", default="runs", help="parent folder of run folders")
    p.add_argument("--resume", action="store_true", help="continue training from the last checkpoint")
    p.set_defaults(func=cmd_adapt)


def _add_eval_command(sub: Any) -> None:
    p = sub.add_parser("eval", help="score a model on a manifest")
    p.add_argument("--model", required=True, help="model name, hub id or directory")
    p.add_argument("--manifest", required=True, help="JSONL with at least audio_filepath and text")
    p.add_argument("--out", required=True, help="folder for metrics.json and hypotheses.jsonl")
    p.add_argument("--lang", default="es")
    p.add_argument("--prompt", help="text prompt for decoding (Whisper)")
    p.add_argument("--terms", help="term list file for per-term recall")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=cmd_eval)


def _add_compare_command(sub: Any) -> None:
    p = sub.add_parser("compare", help="side-by-side WER table of run folders and evaluation folders")
    p.add_argument("dirs", nargs="+", metavar="RUN_OR_EVAL_DIR",
                   help="run folder (has report.json) or evaluation folder (has metrics.json)")
    p.add_argument("--out", help="also write the table as Markdown to this file")
    p.set_defaults(func=cmd_compare)


def _add_transcribe_command(sub: Any) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files of any length (timestamps per segment)")
    p.add_argument("--model", required=True)
    p.add_argument("audio", nargs="+")
    p.add_argument("--lang", default="es")
    p.add_argument("--prompt")
    p.add_argument("--timestamps", action="store_true", help="a line per segment even for short audio")
    p.add_argument("--compute-type", default="int8", help="CTranslate2 model: runtime type (int8, float32, ...)")
    p.set_defaults(func=cmd_transcribe)


def _add_export_command(sub: Any) -> None:
    p = sub.add_parser("export", help="export a run's best model (or a model dir) with a parity check and card")
    p.add_argument("source", help="a run folder (runs/<name>) or a model directory")
    p.add_argument("--format", required=True, choices=["hf", "ct2", "onnx"])
    p.add_argument("--out", help="output folder (default for a run: runs/<name>/export/<format>)")
    p.add_argument("--quantization", help="ct2 weight type: float16 (default), int8, int8_float16, float32")
    p.add_argument("--compute-type", help="ct2 runtime type of the parity check (default int8)")
    p.add_argument("--manifest", help="parity manifest (default for a run: its primary test set)")
    p.add_argument("--lang", help="language (default for a run: the recipe's)")
    p.add_argument("--margin-points", type=float, default=1.0, help="fail when the export loses more WER points")
    p.set_defaults(func=cmd_export)


def _add_serve_command(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model behind an OpenAI-compatible /v1/audio/transcriptions")
    p.add_argument("--model", required=True, help="CTranslate2 export dir (model.bin), transformers dir, or name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key",
                   help="require 'Authorization: Bearer KEY' (default: $SPEECHTL_API_KEY; none: open)")
    p.add_argument("--compute-type", default="int8", help="faster-whisper compute type (int8, float32, ...)")
    p.add_argument("--language", help="default language (ISO 639-1); Whisper detects it when unset; CTC: its language")
    p.add_argument("--workers", type=int, default=1, help="parallel transcriptions (faster-whisper only)")
    p.add_argument("--queue-size", type=int, default=8, help="requests that may wait; more get 503")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest accepted upload, MiB (413 above)")
    p.add_argument("--max-duration-s", type=float, default=600.0, help="longest accepted audio, seconds (413)")
    p.add_argument("--model-id", help="id in /v1/models (default: the model folder's name)")
    p.add_argument("--terms", help="term list file (one a line) passed as hotwords with every request (default: "
                   "the run's term prompt, where its dev data kept it)")
    p.add_argument("--no-hotwords", action="store_true", help="serve without the term list")
    p.add_argument("--body-timeout-s", type=float, default=serve_app.DEFAULT_BODY_TIMEOUT_S,
                   help="cut a request body that sends nothing for this long (408), seconds")
    p.add_argument("--upload-timeout-s", type=float, default=serve_app.DEFAULT_UPLOAD_TIMEOUT_S,
                   help="cut a request body not complete this long after its headers (408), seconds")
    p.add_argument("--header-timeout-s", type=float, default=serve_app.DEFAULT_HEADER_TIMEOUT_S,
                   help="close a connection whose request headers have not all come within this, seconds")
    p.set_defaults(func=cmd_serve)


def _add_validate_command(sub: Any) -> None:
    p = sub.add_parser("validate", help="check manifests (any JSONL with audio_filepath and text)")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--no-files", action="store_true", help="do not check that audio files exist")
    p.set_defaults(func=cmd_validate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechtl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare_command(sub)
    _add_synth_command(sub)
    _add_adapt_command(sub)
    _add_eval_command(sub)
    _add_compare_command(sub)
    _add_transcribe_command(sub)
    _add_export_command(sub)
    _add_serve_command(sub)
    _add_validate_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # one INFO line per faster-whisper call or accelerate save buries the run's own lines
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar per load
    try:
        return args.func(args)
    except Exception as exc:  # the CLI turns library errors into one clear line
        if args.verbose:
            raise
        print(f"speechtl {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
