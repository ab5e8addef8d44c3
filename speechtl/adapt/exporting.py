"""The export stage of ``speechtl adapt``: every format of ``export.formats`` the route supports, each with
its parity check on the primary test set and its model card. A format whose parity check fails is recorded
with its error; the others and the report are still written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechtl.config import RecipeConfig
from speechtl.export.parity import ExportParityError, export

Notify = Callable[[str], None]


def export_all(recipe: RecipeConfig, run_dir: Path, manifest: Path, route: str, model_dir: Path,
               payload: dict[str, Any], notify: Notify) -> dict[str, Any]:
    """Every format of ``recipe.export.formats`` the route supports -> ``{"path", "parity"[, "error"]}``."""
    exports: dict[str, Any] = {}
    for fmt in recipe.export.formats:
        if (fmt, route) in (("ct2", "ctc"), ("onnx", "seq2seq")):
            notify(f"export {fmt}: skipped, not a format of the {route} route (ct2: Whisper; onnx: CTC)")
            continue
        out = run_dir / "export" / fmt
        exports[fmt] = {"path": str(out), **_export_one(recipe, fmt, model_dir, out, manifest, payload, notify)}
    return exports


def _export_one(recipe: RecipeConfig, fmt: str, model_dir: Path, out: Path, manifest: Path, payload: dict[str, Any],
                notify: Notify) -> dict[str, Any]:
    settings = recipe.export
    entry: dict[str, Any] = {}
    try:
        check = export(model_dir, fmt, out=out, lang=recipe.lang, manifest=manifest, payload=payload,
                       quantization=settings.ct2_quantization if fmt == "ct2" else None,
                       compute_type=settings.ct2_compute_type, margin_points=settings.parity_margin_points,
                       hf_check_utts=settings.hf_check_utts, check_unpadded=settings.check_unpadded,
                       decode_cache=recipe.eval.decode_cache)
    except ExportParityError as exc:  # the other formats and the report still get written
        check = exc.result
        entry["error"] = str(exc)
    entry["parity"] = check
    notify(f"export {fmt}: {out}; parity WER {check['export_wer']:.1%} vs PyTorch {check['torch_wer']:.1%} "
           f"({check['diff_points']:+.2f} points, margin {check['margin_points']}"
           f"{'' if check['passed'] else ': FAILED'}), "
           + (f"RTF {check['export_rtf']:.3f}" if check["export_rtf"] is not None else "read back from the decode cache")
           + (f"; unpadded audio {check['unpadded_wer']:.1%}" if check.get("unpadded_wer") is not None else ""))
    return entry
