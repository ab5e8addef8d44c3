"""Export an adapted model: a transformers directory and a CTranslate2 (faster-whisper) directory."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

HF_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")


@contextlib.contextmanager
def _staged_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` that replaces it when the block succeeds (and vanishes if not)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_hf(model_dir: Path | str, out: Path | str) -> Path:
    """Copy a transformers model directory (weights, config, processor, generation config)."""
    model_dir, out = Path(model_dir), Path(out)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"export: {model_dir} holds no config.json; not a transformers model directory")
    with _staged_dir(out) as tmp:
        copied = 0
        for pattern in HF_FILES:
            for path in model_dir.glob(pattern):
                shutil.copy2(path, tmp / path.name)
                copied += 1
    log.info("export: transformers model (%d files) -> %s", copied, out)
    return out


def export_ct2(hf_dir: Path | str, out: Path | str, quantization: str = "float16") -> Path:
    """Convert a transformers Whisper directory with CTranslate2's own converter."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise ImportError("CTranslate2 export needs ctranslate2: pip install 'speechtl[bundled]'") from exc
    hf_dir, out = Path(hf_dir), Path(out)
    keep = [f for f in ("tokenizer.json", "preprocessor_config.json") if (hf_dir / f).is_file()]
    with _staged_dir(out) as tmp:
        converter = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=keep)
        converter.convert(str(tmp), quantization=quantization, force=True)
    log.info("export: CTranslate2 model (%s) -> %s", quantization, out)
    return out
