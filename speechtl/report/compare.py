"""``speechtl compare``: one side-by-side table of several runs and evaluations.

Each folder is a run folder (``report.json``: one row per scored set and
system) or an evaluation folder (``metrics.json``: one row). Rows are grouped
by test set, in the order the folders were given. WERs are comparable only
when scored with the same normalizer; the table says so when they are not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speechtl.report.data import sets_of, systems_of, term_recall_of
from speechtl.report.markdown import DASH, ci_text, pct, table

HEADER = ["test set", "system", "from", "utts", "WER", "95% CI", "CER", "term recall", "normalizer"]


def _row(ref: str, system: str, source: str, metrics: dict[str, Any]) -> dict[str, Any]:
    norm = metrics.get("normalizer") or {}
    return {"set": ref, "system": system, "from": source, "num_utts": metrics.get("num_utts"),
            "wer": metrics.get("wer"), "wer_ci95": metrics.get("wer_ci95"), "cer": metrics.get("cer"),
            "term_recall": term_recall_of(metrics), "normalizer": norm.get("name"),
            "normalizer_settings": norm.get("settings")}


def _eval_set_name(folder: Path, metrics: dict[str, Any]) -> str:
    """``source/split`` from a manifest path ``.../<source>/<split>.jsonl``, else the folder's name."""
    manifest = metrics.get("manifest")
    if manifest:
        path = Path(manifest)
        return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem
    return folder.name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def rows_of(folder: Path | str) -> list[dict[str, Any]]:
    """The comparison rows of one run folder or evaluation folder."""
    folder = Path(folder)
    if (folder / "report.json").is_file():
        payload = _read_json(folder / "report.json")
        if not isinstance(payload.get("evaluations"), dict):
            raise ValueError(f"{folder / 'report.json'}: field 'evaluations' is missing")
        return [_row(ref, system, str(folder), payload["evaluations"][system][ref])
                for ref in sets_of(payload) for system in systems_of(payload)
                if ref in payload["evaluations"][system]]
    if (folder / "metrics.json").is_file():
        metrics = _read_json(folder / "metrics.json")
        for key in ("wer", "num_utts"):
            if key not in metrics:
                raise ValueError(f"{folder / 'metrics.json'}: field {key!r} is missing")
        system = metrics.get("system") or metrics.get("model") or folder.name
        return [_row(_eval_set_name(folder, metrics), str(system), str(folder), metrics)]
    raise FileNotFoundError(f"{folder}: neither a run folder (report.json) nor an evaluation folder (metrics.json)")


def compare(folders: list[Path | str]) -> list[dict[str, Any]]:
    """Rows of every folder, grouped by test set (sets in order of first appearance)."""
    if not folders:
        raise ValueError("compare: no folders given")
    rows = [row for folder in folders for row in rows_of(folder)]
    order = {ref: k for k, ref in enumerate(dict.fromkeys(r["set"] for r in rows))}
    return sorted(rows, key=lambda r: order[r["set"]])  # stable: folder order within a set


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, with a warning line when the normalizers differ."""
    lines = table(HEADER, [
        [str(r["set"]), str(r["system"]), r["from"], DASH if r["num_utts"] is None else str(r["num_utts"]),
         pct(r["wer"]), ci_text(r["wer_ci95"]), pct(r["cer"]), pct(r["term_recall"]), str(r["normalizer"] or DASH)]
        for r in rows
    ])
    normalizers = {json.dumps([r["normalizer"], r["normalizer_settings"]], sort_keys=True) for r in rows}
    if len(normalizers) > 1:
        lines += ["", "Warning: these rows were scored with different normalizers (name or settings); "
                      "their WERs are not comparable."]
    return "\n".join(lines) + "\n"
