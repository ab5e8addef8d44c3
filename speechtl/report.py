"""Run report: ``report.json`` (everything, machine-readable) and ``report.md`` (a table for a pull request)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from speechtl.manifest import atomic_write_text

log = logging.getLogger(__name__)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _term_recall(metrics: dict[str, Any]) -> float | None:
    terms = metrics.get("terms")
    return terms.get("recall") if isinstance(terms, dict) else None


def markdown(payload: dict[str, Any]) -> str:
    evaluations: dict[str, dict[str, dict[str, Any]]] = payload["evaluations"]
    systems = list(evaluations)
    sets = list(next(iter(evaluations.values())))
    lines = [
        f"# speechtl run: {payload['recipe'].get('name')}",
        "",
        f"Model: `{payload['model']['name']}` ({payload['model']['source']}); strategy "
        f"`{payload['train'].get('strategy')}`; scoring normalizer `{payload['normalizer']['name']}` "
        f"(settings: {json.dumps(payload['normalizer']['settings'], ensure_ascii=False)}), the same for every system.",
        "",
        "| test set | utts | " + " | ".join(f"{s} WER" for s in systems) + " | adapted / baseline |",
        "|---|---|" + "---|" * len(systems) + "---|",
    ]
    for ref in sets:
        base = evaluations["baseline"][ref]["wer"]
        adapted = evaluations.get("adapted", {}).get(ref, {}).get("wer")
        ratio = f"{adapted / base:.2f}" if adapted is not None and base else "—"
        tag = " (primary)" if ref == payload.get("primary") else " (forgetting check)" if ref == payload.get(
            "forgetting") else ""
        cells = " | ".join(_pct(evaluations[s][ref]["wer"]) for s in systems)
        lines.append(f"| {ref}{tag} | {evaluations['baseline'][ref]['num_utts']} | {cells} | {ratio} |")
    recalls = {s: {ref: _term_recall(m) for ref, m in sets_.items()} for s, sets_ in evaluations.items()}
    if any(r is not None for per in recalls.values() for r in per.values()):
        lines += ["", "| test set | " + " | ".join(f"{s} term recall" for s in systems) + " |",
                  "|---|" + "---|" * len(systems)]
        for ref in sets:
            lines.append(f"| {ref} | " + " | ".join(_pct(recalls[s][ref]) for s in systems) + " |")
    train = payload["train"]
    lines += [
        "",
        f"Training: {train.get('steps')} steps, {train.get('wall_time_s', 0):.0f} s, "
        f"{train.get('trainable_params', 0):,} trainable parameters, best dev WER {_pct(train.get('best_dev_wer'))}.",
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in payload.get("timings_s", {}).items()),
        "",
    ]
    return "\n".join(lines)


def write_report(run_dir: Path | str, payload: dict[str, Any]) -> dict[str, Path]:
    run_dir = Path(run_dir)
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    atomic_write_text(paths["json"], json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n")
    atomic_write_text(paths["md"], markdown(payload))
    return paths
