"""Import a CTranslate2 (faster-whisper) Whisper model directory as a transformers model.

``model.bin`` is CTranslate2's own binary format: a little-endian header
(binary version, spec name, spec revision), then named arrays (name, rank,
dims, dtype id, byte count, raw bytes), then aliases (a name that shares
another variable's array). :func:`read_model_bin` maps it read-only into
numpy without copying; :func:`ct2_to_hf` maps every Whisper variable onto a
``WhisperForConditionalGeneration`` weight and writes a complete transformers
directory (float32 safetensors, processor, generation config);
:func:`verify` (from :mod:`speechtl.models.ct2.whisper`) checks that both
runtimes decode the same tokens.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechtl.fsio import honour_umask

# the parity check lives next to the runtime it checks against (ct2_whisper); importable from here too
from speechtl.models.ct2.whisper import (
    MAX_TARGET_LENGTH,
    MULTILINGUAL_VOCAB_SIZE,
    ClipCheck,
    Clips,
    Ct2FormatError,
    CT2Whisper,
    SpecialTokens,
    VerifyResult,
    generation_settings,
    read_ct2_config,
    speech_clips,
    verify,
)

log = logging.getLogger(__name__)

SUPPORTED_BINARY_VERSIONS = (4, 5, 6)  # same layout; 5 rounds before int casts, 6 is what ctranslate2 4.x writes
WHISPER_SPEC = "WhisperSpec"
# CTranslate2 DataType ids (include/ctranslate2/types.h). bfloat16 is kept as its raw uint16 bits.
_DTYPES: dict[int, tuple[str, type]] = {0: ("float32", np.float32), 1: ("int8", np.int8), 2: ("int16", np.int16),
                                         3: ("int32", np.int32), 4: ("float16", np.float16), 5: ("bfloat16", np.uint16)}
# Scalar flags the Whisper spec stores next to the weights: name -> value transformers' Whisper implies
# (None: any value; only informative). Activation 3 is exact GELU.
_WHISPER_FLAGS: dict[str, int | None] = {
    "encoder/num_heads": None, "decoder/num_heads": None, "decoder/pre_norm": 1, "decoder/activation": 3,
    "decoder/scale_embeddings": 0, "decoder/alignment_layer": None, "decoder/alignment_heads": None,
    "decoder/alibi": 0, "decoder/alibi_use_positive_positions": None, "decoder/scale_alibi": None,
    "decoder/start_from_zero_embedding": 0,
}


@dataclass(frozen=True)
class Ct2Model:
    path: Path  # the model.bin that was read
    version: int  # binary format version of the file
    spec_name: str  # model specification, e.g. "WhisperSpec"
    revision: int | None  # revision of the spec's weight layout (None when the file has none)
    variables: dict[str, np.ndarray] = field(repr=False)  # name -> array as stored (read-only view on the file)
    dtypes: dict[str, str] = field(repr=False)  # name -> stored dtype name ("float16", "int8", "bfloat16", ...)
    aliases: dict[str, str] = field(repr=False)  # alias name -> name of the variable whose array it shares

    def target(self, name: str) -> str:
        """The stored variable behind ``name`` (an alias or a variable)."""
        real = self.aliases.get(name, name)
        if real not in self.variables:
            where = f"alias {name!r} -> {real!r}" if name != real else repr(name)
            raise Ct2FormatError(f"{self.path}: missing variable {where}")
        return real

    def array(self, name: str) -> np.ndarray:
        """Variable ``name`` as a new float32 array: aliases followed, int8/int16 dequantized with ``<name>_scale``."""
        real = self.target(name)
        raw, dtype = self.variables[real], self.dtypes[real]
        if dtype == "bfloat16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        if dtype in ("int8", "int16") and f"{real}_scale" in self.variables:
            scale = self.array(f"{real}_scale")
            if dtype == "int8":  # one scale per output row (conv weights flattened to rows)
                if scale.shape != raw.shape[:1]:
                    raise Ct2FormatError(f"{self.path}: {real}_scale has shape {scale.shape}, expected {raw.shape[:1]}")
                scale = scale.reshape((-1,) + (1,) * (raw.ndim - 1))
            return raw.astype(np.float32) / scale
        return raw.astype(np.float32)

    def weight_dtypes(self) -> list[str]:
        """The stored dtypes of the arrays (scalar flags left out), e.g. ["float16"] or ["float32", "int8"]."""
        return sorted({self.dtypes[n] for n, v in self.variables.items() if v.ndim > 0})

    def scalar(self, name: str) -> int | float:
        value = self.variables[self.target(name)]
        if value.size != 1:
            raise Ct2FormatError(f"{self.path}: {name} should be a scalar, has shape {value.shape}")
        return value.reshape(()).item()


class _Cursor:
    """Bounds-checked little-endian reads over a buffer; errors name the file, the item and the offset."""

    def __init__(self, buf, path: Path):
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, num_bytes: int, what: str) -> int:
        start = self.pos
        if num_bytes < 0 or start + num_bytes > len(self.buf):
            raise Ct2FormatError(
                f"{self.path}: truncated or corrupt while reading {what} at byte {start} "
                f"(needs {num_bytes} bytes, file has {len(self.buf)})"
            )
        self.pos += num_bytes
        return start

    def unpack(self, fmt: str, what: str):
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buf, start)[0]

    def string(self, what: str) -> str:
        length = self.unpack("<H", f"the length of {what}")
        start = self.take(length, what)
        raw = bytes(self.buf[start : start + length])
        if length == 0 or raw[-1] != 0:
            raise Ct2FormatError(f"{self.path}: {what} at byte {start} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Ct2FormatError(f"{self.path}: {what} at byte {start} is not UTF-8 ({exc})") from None


def read_model_bin(path: Path | str) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (or the directory holding it) without copying the weights."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise Ct2FormatError(f"{path}: empty file")
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(buf, path)
    version = cur.unpack("<I", "the binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise Ct2FormatError(
            f"{path}: binary version {version} is not supported (supported: "
            f"{', '.join(map(str, SUPPORTED_BINARY_VERSIONS))}); is this a CTranslate2 model.bin?"
        )
    spec_name = cur.string("the spec name")
    revision = cur.unpack("<I", "the spec revision")
    count = cur.unpack("<I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for index in range(count):
        name = cur.string(f"the name of variable #{index}")
        rank = cur.unpack("<B", f"the rank of {name}")
        shape = tuple(cur.unpack("<I", f"dimension {d} of {name}") for d in range(rank))
        type_id = cur.unpack("<B", f"the dtype of {name}")
        if type_id not in _DTYPES:
            raise Ct2FormatError(f"{path}: variable {name} has unknown dtype id {type_id}")
        dtype_name, np_dtype = _DTYPES[type_id]
        num_bytes = cur.unpack("<I", f"the byte count of {name}")
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(np_dtype).itemsize
        if num_bytes != expected:
            raise Ct2FormatError(
                f"{path}: variable {name} declares {num_bytes} bytes but shape {shape} of {dtype_name} "
                f"needs {expected}"
            )
        if name in variables:
            raise Ct2FormatError(f"{path}: variable {name} appears twice")
        start = cur.take(num_bytes, f"the data of {name}")
        variables[name] = np.frombuffer(buf, dtype=np_dtype, count=num_bytes // np.dtype(np_dtype).itemsize,
                                        offset=start).reshape(shape)
        dtypes[name] = dtype_name
    aliases: dict[str, str] = {}
    for index in range(cur.unpack("<I", "the alias count")):
        alias = cur.string(f"the name of alias #{index}")
        aliases[alias] = cur.string(f"the target of alias {alias}")
        if aliases[alias] not in variables:
            raise Ct2FormatError(f"{path}: alias {alias} points to a missing variable {aliases[alias]}")
    if cur.pos != len(buf):
        raise Ct2FormatError(f"{path}: {len(buf) - cur.pos} unexpected bytes after the last alias (corrupt file?)")
    log.debug("read %s: %s rev %s, %d variables, %d aliases", path, spec_name, revision, count, len(aliases))
    return Ct2Model(path, version, spec_name, revision, variables, dtypes, aliases)


# ---------------------------------------------------------------------------------------------- weights


class _Weights:
    """Takes float32 arrays out of a Ct2Model, remembering what was used, into a state dict checked for doubles."""

    def __init__(self, model: Ct2Model):
        self.model, self.used, self.state = model, set(), {}

    def take(self, name: str) -> np.ndarray:
        self.used.add(name)
        real = self.model.target(name)
        self.used.add(real)
        if f"{real}_scale" in self.model.variables:
            self.used.add(f"{real}_scale")
        return self.model.array(name)

    def has(self, name: str) -> bool:
        return name in self.model.variables or name in self.model.aliases

    def put(self, key: str, value: np.ndarray) -> None:
        if key in self.state:
            raise Ct2FormatError(f"{self.model.path}: transformers weight {key} assigned twice")
        self.state[key] = np.ascontiguousarray(value, dtype=np.float32)

    def linear(self, key: str, name: str, *, bias: bool = True) -> None:
        self.put(f"{key}.weight", self.take(f"{name}/weight"))
        if bias:
            self.put(f"{key}.bias", self.take(f"{name}/bias"))

    def norm(self, key: str, name: str) -> None:
        self.put(f"{key}.weight", self.take(f"{name}/gamma"))
        self.put(f"{key}.bias", self.take(f"{name}/beta"))

    def fused(self, keys: Sequence[str], name: str, d_model: int) -> None:
        """Split a fused projection (q/k/v rows stacked) into separate linears; k has no bias in Whisper."""
        weight, bias = self.take(f"{name}/weight"), self.take(f"{name}/bias")
        if weight.shape != (len(keys) * d_model, d_model):
            raise Ct2FormatError(f"{self.model.path}: {name}/weight has shape {weight.shape}, "
                                 f"expected {(len(keys) * d_model, d_model)}")
        for i, key in enumerate(keys):
            self.put(f"{key}.weight", weight[i * d_model : (i + 1) * d_model])
            if not key.endswith("k_proj"):  # a key bias shifts every score of a query equally: softmax drops it
                self.put(f"{key}.bias", bias[i * d_model : (i + 1) * d_model])


def _num_layers(model: Ct2Model, stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    found = {int(m.group(1)) for n in [*model.variables, *model.aliases] if (m := pattern.match(n))}
    if not found or found != set(range(len(found))):
        raise Ct2FormatError(f"{model.path}: {stack} layers are {sorted(found)}, expected 0..N-1")
    return len(found)


def _heads(model: Ct2Model, name: str, d_model: int) -> int:
    if name in model.variables or name in model.aliases:
        return int(model.scalar(name))
    log.warning("%s: no %s variable (old spec revision); assuming Whisper's 64-dim heads", model.path, name)
    return d_model // 64


def whisper_state_dict(model: Ct2Model) -> tuple[dict, dict[str, np.ndarray]]:
    """Dimensions (WhisperConfig kwargs) and a float32 transformers state dict for a Whisper Ct2Model.

    Every CT2 variable must be used and every weight assigned once; anything else raises
    :class:`Ct2FormatError` naming the variables.
    """
    if model.spec_name != WHISPER_SPEC:
        raise Ct2FormatError(f"{model.path}: spec is {model.spec_name!r}, not a Whisper model ({WHISPER_SPEC})")
    w = _Weights(model)
    conv1 = w.take("encoder/conv1/weight")
    d_model, n_mels = conv1.shape[0], conv1.shape[1]
    dims = dict(
        d_model=d_model,
        num_mel_bins=n_mels,
        encoder_layers=_num_layers(model, "encoder"),
        decoder_layers=_num_layers(model, "decoder"),
        encoder_attention_heads=_heads(model, "encoder/num_heads", d_model),
        decoder_attention_heads=_heads(model, "decoder/num_heads", d_model),
        encoder_ffn_dim=model.variables[model.target("encoder/layer_0/ffn/linear_0/weight")].shape[0],
        decoder_ffn_dim=model.variables[model.target("decoder/layer_0/ffn/linear_0/weight")].shape[0],
        vocab_size=model.variables[model.target("decoder/embeddings/weight")].shape[0],
        max_source_positions=model.variables[model.target("encoder/position_encodings/encodings")].shape[0],
        max_target_positions=model.variables[model.target("decoder/position_encodings/encodings")].shape[0],
    )
    for flag, expected in _WHISPER_FLAGS.items():
        if w.has(flag):
            w.used.add(flag)
            if expected is not None and int(model.scalar(flag)) != expected:
                raise Ct2FormatError(f"{model.path}: {flag} is {model.scalar(flag)}, transformers' Whisper needs "
                                     f"{expected}")

    enc, dec = "model.encoder", "model.decoder"
    w.put(f"{enc}.conv1.weight", conv1)
    w.put(f"{enc}.conv1.bias", w.take("encoder/conv1/bias"))
    w.linear(f"{enc}.conv2", "encoder/conv2")
    w.put(f"{enc}.embed_positions.weight", w.take("encoder/position_encodings/encodings"))
    w.norm(f"{enc}.layer_norm", "encoder/layer_norm")
    for i in range(dims["encoder_layers"]):
        key, name = f"{enc}.layers.{i}", f"encoder/layer_{i}"
        w.fused([f"{key}.self_attn.{p}_proj" for p in "qkv"], f"{name}/self_attention/linear_0", d_model)
        w.linear(f"{key}.self_attn.out_proj", f"{name}/self_attention/linear_1")
        w.norm(f"{key}.self_attn_layer_norm", f"{name}/self_attention/layer_norm")
        w.linear(f"{key}.fc1", f"{name}/ffn/linear_0")
        w.linear(f"{key}.fc2", f"{name}/ffn/linear_1")
        w.norm(f"{key}.final_layer_norm", f"{name}/ffn/layer_norm")

    embeddings = w.take("decoder/embeddings/weight")
    w.put(f"{dec}.embed_tokens.weight", embeddings)
    w.put(f"{dec}.embed_positions.weight", w.take("decoder/position_encodings/encodings"))
    w.norm(f"{dec}.layer_norm", "decoder/layer_norm")
    for i in range(dims["decoder_layers"]):
        key, name = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        w.fused([f"{key}.self_attn.{p}_proj" for p in "qkv"], f"{name}/self_attention/linear_0", d_model)
        w.linear(f"{key}.self_attn.out_proj", f"{name}/self_attention/linear_1")
        w.norm(f"{key}.self_attn_layer_norm", f"{name}/self_attention/layer_norm")
        w.linear(f"{key}.encoder_attn.q_proj", f"{name}/attention/linear_0")
        w.fused([f"{key}.encoder_attn.{p}_proj" for p in "kv"], f"{name}/attention/linear_1", d_model)
        w.linear(f"{key}.encoder_attn.out_proj", f"{name}/attention/linear_2")
        w.norm(f"{key}.encoder_attn_layer_norm", f"{name}/attention/layer_norm")
        w.linear(f"{key}.fc1", f"{name}/ffn/linear_0")
        w.linear(f"{key}.fc2", f"{name}/ffn/linear_1")
        w.norm(f"{key}.final_layer_norm", f"{name}/ffn/layer_norm")

    projection = w.take("decoder/projection/weight")
    if w.has("decoder/projection/bias") and np.any(w.take("decoder/projection/bias")):
        raise Ct2FormatError(f"{model.path}: decoder/projection/bias is non-zero; transformers' Whisper has no "
                             "output bias")
    tied = model.target("decoder/projection/weight") == model.target("decoder/embeddings/weight") or (
        projection.shape == embeddings.shape and np.array_equal(projection, embeddings)
    )
    dims["tie_word_embeddings"] = bool(tied)
    w.put("proj_out.weight", embeddings if tied else projection)

    leftovers = sorted((set(model.variables) | set(model.aliases)) - w.used)
    if leftovers:
        shown = ", ".join(leftovers[:10]) + (f" (+{len(leftovers) - 10} more)" if len(leftovers) > 10 else "")
        raise Ct2FormatError(f"{model.path}: {len(leftovers)} CTranslate2 variables have no transformers "
                             f"counterpart: {shown}")
    return dims, w.state


# ---------------------------------------------------------------------------------------- config and save


def _write_processor(out: Path, tokenizer_file: Path, n_mels: int) -> None:
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    added = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("added_tokens") or []
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"])
                if t.get("special") and not re.fullmatch(r"<\|\d+\.\d+\|>", t["content"])]
    # the fast (tokenizers) Whisper tokenizer; the special tokens listed so that timestamp ids start after them
    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_file), pad_token="<|endoftext|>",
                                 additional_special_tokens=specials, model_max_length=MAX_TARGET_LENGTH)
    features = WhisperFeatureExtractor(feature_size=n_mels)
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)


def ct2_to_hf(ct2_dir: Path | str, out_dir: Path | str) -> Path:
    """Write a transformers Whisper directory equivalent to CTranslate2 model dir ``ct2_dir``; returns ``out_dir``.

    ``out_dir`` must not exist (or be empty); it is written under a temporary name and renamed.
    """
    try:
        import tokenizers
        import torch
        from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration
    except ImportError as exc:
        raise ImportError(f"importing a CTranslate2 model needs {exc.name}: pip install 'speechtl[train]'") from exc

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    tokenizer_file = ct2_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"{ct2_dir}: no tokenizer.json (copy the tokenizer.json of the same Whisper model "
                                "into the directory)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: already exists and is not empty")
    ct2 = read_model_bin(ct2_dir / "model.bin")
    dims, state = whisper_state_dict(ct2)
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    settings = generation_settings(ct2_dir, tokenizer, dims["vocab_size"])
    if max(settings["eos_token_id"], settings["decoder_start_token_id"]) >= dims["vocab_size"]:
        raise Ct2FormatError(f"{ct2_dir}: tokenizer special ids are beyond the model's {dims['vocab_size']} tokens")
    config = WhisperConfig(
        **dims,
        activation_function="gelu",
        scale_embedding=False,
        bos_token_id=settings["bos_token_id"],
        eos_token_id=settings["eos_token_id"],
        pad_token_id=settings["pad_token_id"],
        decoder_start_token_id=settings["decoder_start_token_id"],
        suppress_tokens=None,  # generation settings live in the GenerationConfig only
        begin_suppress_tokens=None,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise Ct2FormatError(f"{ct2_dir}: weights do not match WhisperForConditionalGeneration: "
                             f"missing {missing[:10]}, unexpected {extra[:10]}")
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches, named by torch
        raise Ct2FormatError(f"{ct2_dir}: weights do not fit WhisperForConditionalGeneration: {exc}") from None
    if dims["tie_word_embeddings"]:
        model.tie_weights()
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise Ct2FormatError(f"{ct2_dir}: no value for {still_meta[:10]}")
    model.generation_config = GenerationConfig(**settings)
    model.eval()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _write_processor(tmp, tokenizer_file, dims["num_mel_bins"])
        honour_umask(tmp)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("imported %s (%s, binary v%d, %s) into %s", ct2_dir, ct2.spec_name, ct2.version,
             "/".join(ct2.weight_dtypes()), out_dir)
    return out_dir


__all__ = [
    "Ct2FormatError", "Ct2Model", "read_model_bin", "whisper_state_dict", "ct2_to_hf",
    "MULTILINGUAL_VOCAB_SIZE", "SpecialTokens", "read_ct2_config", "generation_settings",
    "ClipCheck", "Clips", "CT2Whisper", "VerifyResult", "speech_clips", "verify",
]
