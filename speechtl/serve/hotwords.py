"""The served model's term list: the words a domain run taught it, passed with every request.

Where the list comes from, first found wins: ``--terms FILE`` (one term a line), else the run a model
was exported from, through the ``speechtl_run.json`` its export carries, when that run's dev data kept
the term prompt (``prompting.kept``; its ``text`` is the prompt the run evaluated). faster-whisper gets
it as ``hotwords`` (the prompt of every 30-s window in place of the previous window's text, cut to what a
request's own prompt leaves: :meth:`FasterWhisper.fit_hotwords`), the transformers runtime as the prompt
of each window. A request's own ``prompt`` still goes in as the initial prompt; a request
with the form field ``hotwords=false``, or a server started with ``--no-hotwords``, decodes without.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from speechtl.evaluate.scoring import read_terms

log = logging.getLogger(__name__)
RUN_FILE = "speechtl_run.json"  # written next to an export by speechtl.export.card


def served_hotwords(model_dir: Path | str, terms: Path | str | None = None) -> str | None:
    """The hotwords text for ``model_dir``: ``terms`` joined by commas, else the run's kept term prompt."""
    if terms is not None:
        return ", ".join(read_terms(terms))
    run_file = Path(model_dir) / RUN_FILE
    if not run_file.is_file():
        return None
    prompting = json.loads(run_file.read_text(encoding="utf-8")).get("prompting") or {}
    if not prompting.get("kept"):
        return None
    text = prompting.get("text")
    if not text:
        log.warning("%s: the run kept its term prompt but the export does not carry it (exported before "
                    "speechtl wrote it); serve with --terms FILE to use the terms", run_file)
        return None
    return text
