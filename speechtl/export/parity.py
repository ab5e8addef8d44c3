"""``speechtl export``: write a format, check it against the PyTorch model, write its model card.

The parity check decodes the run's primary test manifest with the exported
model on its own runtime (faster-whisper for ``ct2``, the export loaded afresh
on the transformers runtime for ``hf``, onnxruntime for ``onnx``) and compares the WER with that
of the PyTorch model on the same manifest and normalizer: from the run's
``adapted`` evaluation when there is one, else decoded here. The result
(both WERs, the difference, both real-time factors) is written to
``<export>/parity.json`` with the export's hypotheses in ``<export>/parity/``;
an export whose WER differs by more than ``margin_points`` points, in either
direction, raises :class:`ExportParityError` (the files stay, for inspection):
an export far *better* than the PyTorch model means one of the two was not the
model it should be (e.g. a PyTorch evaluation read from a corrupt cache).
"""

from __future__ import annotations

import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from speechtl import faults
from speechtl.data.manifest import read_manifest
from speechtl.evaluate.cached_decodes import DecodeCache, folder_key
from speechtl.evaluate.decode import evaluate_manifest
from speechtl.export.card import write_card
from speechtl.export.formats import export_ct2, export_hf, export_onnx
from speechtl.fsio import atomic_write_text, file_sha256, remove_stale
from speechtl.runtimes import Transformers, load_runtime

log = logging.getLogger(__name__)

FORMATS = ("hf", "ct2", "onnx")
DEFAULT_MARGIN_POINTS = 1.0


class ExportParityError(RuntimeError):
    """The exported model's WER differs from the PyTorch model's by more than the margin, either way
    (``result``: the check)."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


def _run_paths(source: Path) -> dict[str, Any] | None:
    """For a run folder: its adapted model (the interpolated one, else the best checkpoint), language, primary
    test manifest and report payload."""
    report = source / "report.json"
    if not report.is_file():
        return None
    payload = json.loads(report.read_text(encoding="utf-8"))
    best = Path(payload.get("adapted_dir") or source / "checkpoints" / "best")
    if not best.is_dir():
        return None
    primary = payload["primary"]
    name, _, split = primary.partition("/")
    return {"model_dir": best, "lang": payload["recipe"]["lang"], "manifest": Path(payload["data"][name][split]),
            "primary": primary, "payload": payload}


def weight_files_identical(model_dir: Path, export_dir: Path) -> bool:
    """Whether the export holds byte-identical copies of every weight file of ``model_dir`` (sha256)."""
    names = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if not names or names != sorted(p.name for p in export_dir.glob("*.safetensors")):
        return False
    return all(file_sha256(model_dir / n) == file_sha256(export_dir / n) for n in names)


def _with_beams(runtime: Any, num_beams: int) -> Any:
    """``runtime`` set to decode with beams of ``num_beams``: faster-whisper's ``clip_beams``, a transformers
    Whisper's own width (a runtime with neither, e.g. a CTC model, is returned as it is)."""
    if hasattr(runtime, "clip_beams"):
        runtime.clip_beams = num_beams
    elif hasattr(getattr(runtime, "asr", None), "num_beams"):
        runtime.asr.num_beams = num_beams
    return runtime


def _runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in ("faster-whisper", "ctranslate2", "transformers", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _behind_store(runtime: Any, model_key: str | None, **settings: Any) -> Any:
    """``runtime`` behind the decode store of ``model_key`` (:func:`folder_key` of the model's files; None: no
    store) and the runtime's settings and package versions: the same export checked again reads its transcripts
    back."""
    if model_key is None:
        return runtime
    settings.update(runtime=type(runtime).__name__, pad=getattr(runtime, "pad", None), versions=_runtime_versions())
    return DecodeCache(runtime, model_key, settings)


def _rtf(metrics: dict[str, Any], decoder: Any) -> float | None:
    """The real-time factor of an evaluation, None where the decode store answered (no decoding was timed)."""
    return None if getattr(decoder, "hits", 0) else metrics.get("rtf")


def parity(model_dir: Path, export_dir: Path, fmt: str, manifest: Path, *, lang: str, compute_type: str | None,
           reference: dict[str, Any] | None, margin_points: float, hf_check_utts: int | None = None,
           check_unpadded: bool = True, num_beams: int = 1, decode_cache: bool = True) -> dict[str, Any]:
    """Score the export on ``manifest`` against ``reference`` (metrics of the PyTorch model, or None: decode),
    decoding with beams of ``num_beams`` as the reference did.

    An ``hf`` export is a copy of the weights: with ``hf_check_utts``, the check is that every weight file is
    byte-identical, plus a decode of the first ``hf_check_utts`` utterances of the export loaded afresh
    (``from_pretrained``) against the PyTorch model on the same utterances. With ``decode_cache`` the
    transcripts of a model folder whose files are byte for byte those of an earlier check are read back
    (:func:`speechtl.evaluate.cached_decodes.folder_key`); the real-time factors are then None.
    """

    utts: Path | list = manifest
    identical = None
    if fmt == "hf" and hf_check_utts:
        identical = weight_files_identical(model_dir, export_dir)
        utts, reference = read_manifest(manifest)[:hf_check_utts], None
    workers = min(4, os.cpu_count() or 1)  # clips decoded side by side: 1.4x on 2 cores against one 2-thread worker
    runtime = load_runtime(export_dir, lang=lang, compute_type=compute_type or "int8", num_workers=workers,
                           cpu_threads=max(1, (os.cpu_count() or 1) // workers))
    export_key = folder_key(export_dir) if decode_cache else None  # the format's files, before parity writes any
    decoder = _behind_store(_with_beams(runtime, num_beams), export_key, compute_type=compute_type, num_beams=num_beams)
    exported = evaluate_manifest(decoder, utts, export_dir / "parity", lang=lang, model_name=f"{fmt} export")
    exported["rtf"] = _rtf(exported, decoder)
    if reference is None:
        torch_decoder = _behind_store(_with_beams(Transformers.load(model_dir, language=lang), num_beams),
                                      folder_key(model_dir) if decode_cache else None, num_beams=num_beams)
        reference = evaluate_manifest(torch_decoder, utts, export_dir / "parity" / "torch", lang=lang,
                                      model_name=str(model_dir))
        reference["rtf"] = _rtf(reference, torch_decoder)
    diff = 100 * (exported["wer"] - reference["wer"])
    result = {"format": fmt, "compute_type": compute_type, "manifest": str(manifest), "num_utts": exported["num_utts"],
              "torch_wer": reference["wer"], "export_wer": exported["wer"], "diff_points": round(diff, 3),
              "margin_points": margin_points, "passed": abs(diff) <= margin_points and identical is not False,
              "weight_files_identical": identical,
              "torch_rtf": reference.get("rtf"), "export_rtf": exported.get("rtf"),
              "torch_model": reference.get("model"), "normalizer": exported["normalizer"]["name"]}
    if fmt == "ct2" and check_unpadded:  # also as a caller of faster-whisper gets it unpadded (Pipecat's service)
        runtime.pad = False
        as_is = evaluate_manifest(_behind_store(runtime, export_key, compute_type=compute_type, num_beams=num_beams),
                                  manifest, export_dir / "parity" / "unpadded", lang=lang,
                                  model_name=f"{fmt} export, unpadded")
        result["unpadded_wer"] = as_is["wer"]
        result["unpadded_diff_points"] = round(100 * (as_is["wer"] - reference["wer"]), 3)
        if result["unpadded_diff_points"] > margin_points:
            log.warning("parity ct2: faster-whisper on unpadded audio gives WER %.2f%% (%+.2f points); pad audio "
                        "to 30 s windows (speechtl.models.ct2.whisper.pad_to_window, as speechtl serve does)",
                        100 * as_is["wer"], result["unpadded_diff_points"])
    atomic_write_text(export_dir / "parity.json", json.dumps(result, indent=2) + "\n")
    log.info("parity %s: WER %.2f%% (export) vs %.2f%% (PyTorch), %+.2f points (margin %.2f)", fmt,
             100 * exported["wer"], 100 * reference["wer"], diff, margin_points)
    if identical is False:
        raise ExportParityError(f"export hf at {export_dir}: its weight files differ from {model_dir}", result)
    if not result["passed"]:
        raise ExportParityError(f"export {fmt} at {export_dir}: WER {exported['wer']:.2%} is {diff:+.2f} points "
                                f"from the PyTorch model's {reference['wer']:.2%} on {manifest} (margin "
                                f"{margin_points} points); see {export_dir / 'parity.json'}", result)
    return result


def write_format(model_dir: Path, out: Path, fmt: str, *, lang: str, quantization: str | None) -> Path:
    remove_stale(out.parent)  # the staged folders of a killed export
    if fmt == "hf":
        return export_hf(model_dir, out)
    if fmt == "ct2":
        return export_ct2(model_dir, out, quantization or "float16")
    if fmt == "onnx":
        return export_onnx(model_dir, out, lang=lang)
    raise ValueError(f"export format {fmt!r} is not one of {FORMATS}")


def export(source: Path | str, fmt: str, *, out: Path | str | None = None, quantization: str | None = None,
           compute_type: str | None = None, manifest: Path | str | None = None, lang: str | None = None,
           margin_points: float = DEFAULT_MARGIN_POINTS, payload: dict[str, Any] | None = None,
           hf_check_utts: int | None = None, check_unpadded: bool = True, decode_cache: bool = True) -> dict[str, Any]:
    """Export a run (``runs/<name>``: its best checkpoint to ``runs/<name>/export/<fmt>``) or a model directory
    (``out`` required); check parity on the run's primary test manifest (or ``manifest``) and write the card.

    ``compute_type`` is the CTranslate2 runtime type of the check (default int8, what a CPU service uses).
    Returns the parity result (``None`` values when there was no manifest to check on).
    """

    source = Path(source)
    run = _run_paths(source)
    if run is not None:
        model_dir, lang = run["model_dir"], lang or run["lang"]
        manifest = Path(manifest) if manifest else run["manifest"]
        payload = payload or run["payload"]
        out = Path(out) if out else source / "export" / fmt
    else:
        if out is None or lang is None:
            raise ValueError(f"export: {source} is not a run folder (report.json + checkpoints/best); "
                             "a model directory needs --out and --lang")
        model_dir, out = source, Path(out)
    write_format(model_dir, out, fmt, lang=lang, quantization=quantization)
    faults.point("export")  # a format written, its parity and card not
    result: dict[str, Any] = {"format": fmt, "passed": None}
    if manifest is not None:
        reference, num_beams = None, 1
        if payload is not None:  # the run's adapted evaluation on this manifest, if any, and its beam width
            num_beams = payload.get("recipe", {}).get("eval", {}).get("num_beams", 1)
            primary = payload.get("primary")
            reference = payload.get("evaluations", {}).get("adapted", {}).get(primary)
            if reference is not None and Path(reference.get("manifest") or "") != Path(manifest):
                reference = None
        result = parity(model_dir, out, fmt, Path(manifest), lang=lang,
                        compute_type=(compute_type or "int8") if fmt == "ct2" else None, reference=reference,
                        margin_points=margin_points, hf_check_utts=hf_check_utts, check_unpadded=check_unpadded,
                        num_beams=num_beams, decode_cache=decode_cache)
    write_card(out, fmt, payload=payload, parity=result, quantization=quantization, lang=lang)
    return result
