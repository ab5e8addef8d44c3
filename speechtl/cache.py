"""Where speechtl keeps what it builds once per machine: ``$SPEECHTL_CACHE``, else ``~/.cache/speechtl``.

Imported models (``hf/``, ``ct2/``), the joined Kokoro model (``kokoro/``) and
the Debian packages extracted by ``scripts/system-deps.sh`` (``debian/``) live
there; the script follows the same rule.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$SPEECHTL_CACHE`` (when set and not empty), else ``~/.cache/speechtl``; resolved at each call."""
    return Path(os.environ.get("SPEECHTL_CACHE") or Path.home() / ".cache" / "speechtl")
