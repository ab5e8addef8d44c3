"""The report files of a run: ``report.json``, ``report.md`` (:mod:`speechtl.report.markdown`) and
``report.html`` (:mod:`speechtl.report.html`), written from a payload or rebuilt from a run folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from speechtl.fsio import atomic_write_text
from speechtl.report.data import enrich, read_history
from speechtl.report.html import render_html
from speechtl.report.markdown import markdown

log = logging.getLogger(__name__)


def write_report(run_dir: Path | str, payload: dict[str, Any], *, html: bool = True) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and (with ``html``) ``report.html`` into ``run_dir``."""
    run_dir = Path(run_dir)
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    atomic_write_text(paths["json"], json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n")
    atomic_write_text(paths["md"], markdown(payload))
    if html:
        paths["html"] = run_dir / "report.html"
        atomic_write_text(paths["html"], render_html(payload))
    log.info("report: %s", ", ".join(str(p) for p in paths.values()))
    return paths


def regenerate(run_dir: Path | str, out_dir: Path | str | None = None, *, num_samples: int | None = None,
               seed: int | None = None) -> dict[str, Path]:
    """Rebuild the report of ``run_dir`` from its ``report.json``, ``eval/`` folders and training history,
    into ``out_dir`` (default ``run_dir``). Bootstrap settings default to the saved ones (else 1000, the
    recipe's seed)."""
    run_dir = Path(run_dir)
    path = run_dir / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no report.json to rebuild the report from")
    payload = json.loads(path.read_text(encoding="utf-8"))
    boot = payload.get("bootstrap", {})
    payload = enrich(payload, run_dir,
                     num_samples=num_samples or boot.get("num_samples", 1000),
                     seed=seed if seed is not None else boot.get("seed", payload.get("recipe", {}).get("seed", 0)))
    if not payload.get("train_history"):
        history = payload.get("train", {}).get("history_path")
        candidates = [Path(history)] if history else []
        candidates += [run_dir / "checkpoints" / "history.jsonl"]
        payload["train_history"] = next((read_history(p) for p in candidates if p.is_file()), [])
    return write_report(out_dir or run_dir, payload)
