"""The model card (``README.md``) of an export: Hub ``model-index`` metadata, results, data, strategy, limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from speechtl.data.manifest import read_manifest
from speechtl.fsio import atomic_write_text
from speechtl.report.data import set_label, sets_of, summary_rows
from speechtl.report.markdown import synthetic_note

LIBRARY = {"hf": "transformers", "ct2": "ctranslate2", "onnx": "onnx"}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _model_index(payload: dict[str, Any], name: str) -> list[dict[str, Any]]:
    results = []
    for ref in sets_of(payload):
        m = payload["evaluations"].get("adapted", {}).get(ref)
        if m is None:
            continue
        source, _, split = ref.partition("/")
        metrics = [{"type": "wer", "value": round(100 * m["wer"], 2), "name": "WER"},
                   {"type": "cer", "value": round(100 * m["cer"], 2), "name": "CER"}]
        results.append({"task": {"type": "automatic-speech-recognition", "name": "Speech Recognition"},
                        "dataset": {"name": set_label(payload, ref), "type": source, "split": split},
                        "metrics": metrics})
    return [{"name": name, "results": results}]


def _data_rows(payload: dict[str, Any]) -> list[str]:
    rows = []
    sources = {s["name"]: s for s in payload.get("recipe", {}).get("data", {}).get("sources", [])}
    for name, paths in payload.get("data", {}).items():
        spec = sources.get(name, {})
        kind = (f"synthetic speech ({spec.get('engine')} TTS, {spec.get('num_voices')} voices)"
                if spec.get("kind") == "synth" else f"recorded speech ({spec.get('format') or 'corpus'})")
        counts = []
        for split in ("train", "dev", "test"):
            path = Path(paths.get(split, ""))
            if path.is_file():
                counts.append(f"{split} {len(read_manifest(path))}")
        rows.append(f"| {name} | {kind} | {', '.join(counts) or '—'} | {', '.join(spec.get('use', [])) or '—'} |")
    return rows


def _usage(fmt: str) -> list[str]:
    if fmt == "ct2":
        return ["```python", "from faster_whisper import WhisperModel", "from faster_whisper.audio import decode_audio",
                "from speechtl.models.ct2.whisper import pad_to_window", "",
                'model = WhisperModel("PATH/TO/THIS/DIR", device="cpu", compute_type="int8")',
                'segments, info = model.transcribe(pad_to_window(decode_audio("call.wav")), language="es")', "```",
                "", "Pad a clip shorter than 30 s with silence to one 30-s window (`pad_to_window`, or `numpy.pad` "
                "to 480,000 samples): faster-whisper pads its log-mel with zeros, the fine-tuned model was trained "
                "on padded audio. Longer audio goes in as it is (padding it adds silence where the model writes "
                "words).", "",
                "Serve it as an OpenAI-compatible endpoint (it pads): `speechtl serve --model PATH/TO/THIS/DIR`."]
    if fmt == "onnx":
        return ["`model.onnx` maps audio features to per-frame log-probabilities over `vocab.json`; "
                "`speechtl.runtimes.onnx.OnnxCtc` runs it on onnxruntime with greedy decoding."]
    return ["```python", "from transformers import pipeline", "",
            'asr = pipeline("automatic-speech-recognition", model="PATH/TO/THIS/DIR")', "```", "",
            "CTC models saved by speechtl (`speechtl_ctc.json`) load with "
            "`speechtl.models.wav2vec2.CtcASR.load(dir, lang=...)` or `speechtl transcribe --model DIR`."]


def card_text(fmt: str, *, payload: dict[str, Any] | None, parity: dict[str, Any] | None,
              quantization: str | None, lang: str) -> str:
    name = (payload or {}).get("recipe", {}).get("name", "speechtl-model")
    meta: dict[str, Any] = {"language": [lang], "library_name": LIBRARY[fmt],
                            "pipeline_tag": "automatic-speech-recognition", "tags": ["speechtl", fmt]}
    if payload:
        meta["model-index"] = _model_index(payload, name)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name} ({fmt} export)", ""]
    if payload:
        train = payload.get("train", {})
        model = payload.get("model", {})
        lines += [f"Adapted by speechtl from `{model.get('name')}` ({model.get('source')}): route "
                  f"`{train.get('route', 'seq2seq')}`, strategy `{train.get('strategy')}`, {train.get('steps')} "
                  f"steps, {train.get('trainable_params') or 0:,} of {train.get('total_params') or 0:,} parameters "
                  f"trained, best dev WER {_pct(train.get('best_dev_wer'))}."
                  + _interpolation_text(payload.get("interpolation")) + _prompt_text(payload.get("prompting")), "",
                  "## Results", "",
                  f"Held-out test sets, scored with `{payload['normalizer']['name']}` for every system "
                  "(95% bootstrap interval over utterances).", "",
                  "| test set | system | utts | WER | 95% CI | CER |", "|---|---|---|---|---|---|"]
        for row in summary_rows(payload):
            ci = row.get("wer_ci95") or [None, None]
            lines.append(f"| {row['label']} | {row['system']} | {row['num_utts']} | {_pct(row['wer'])} | "
                         f"{_pct(ci[0])}–{_pct(ci[1])} | {_pct(row['cer'])} |")
        lines += [*synthetic_note(payload), "", "## Training data", "",
                  "| source | speech | utterances | used for |", "|---|---|---|---|", *_data_rows(payload)]
    if parity and parity.get("passed") is not None:
        lines += ["", "## This export", "",
                  f"Format `{fmt}`" + (f", weights {quantization}" if quantization else "")
                  + (f", checked with compute type {parity['compute_type']}" if parity.get("compute_type") else "")
                  + f". Parity on `{parity['manifest']}` ({parity['num_utts']} utterances): WER "
                  f"{_pct(parity['export_wer'])} exported vs {_pct(parity['torch_wer'])} PyTorch "
                  f"({parity['diff_points']:+.2f} points; margin {parity['margin_points']})."]
        if parity.get("weight_files_identical"):
            lines[-1] += " The weight files are byte-identical to those of the evaluated model."
        if parity.get("unpadded_wer") is not None:
            lines[-1] += (f" That is faster-whisper on audio padded to 30-s windows; on unpadded audio (faster-whisper "
                          f"called as-is) WER is {_pct(parity['unpadded_wer'])} "
                          f"({parity['unpadded_diff_points']:+.2f} points).")
    lines += ["", "## Use", "", *_usage(fmt), "", "## Limits", "",
              "- Measured only on the test sets above; speakers, channels and vocabulary outside the training data "
              "may do worse.",
              "- Synthetic (TTS) test sets measure the model on synthesized voices, not on people.",
              "- See `report.md` of the run for per-speaker, per-term and error-type results."]
    return "\n".join(lines) + "\n"


def _interpolation_text(choice: dict[str, Any] | None) -> str:
    if not choice:
        return ""
    return (f" These weights are (1 − α)·base + α·trained with α = {choice['alpha']:.2f} (WiSE-FT), chosen by the "
            f"WER of the dev sets joined ({', '.join(choice['dev_sets'])}).")


def _prompt_text(prompting: dict[str, Any] | None) -> str:
    if not prompting:
        return ""
    pooled = prompting["pooled_dev_wer"]
    verdict = ("Decode it with the run's term list as the prompt (faster-whisper `hotwords`, `initial_prompt`, "
               "the OpenAI API's `prompt`)" if prompting["kept"] else "Decode it without a prompt")
    return (f" {verdict}: the term list as prompt gave a joined dev WER of {_pct(pooled['with'])}, against "
            f"{_pct(pooled['without'])} without (system `adapted+prompt` in the results).")


def write_card(out: Path, fmt: str, *, payload: dict[str, Any] | None, parity: dict[str, Any] | None,
               quantization: str | None, lang: str) -> Path:
    path = Path(out) / "README.md"
    atomic_write_text(path, card_text(fmt, payload=payload, parity=parity, quantization=quantization, lang=lang))
    if payload:
        atomic_write_text(Path(out) / "speechtl_run.json", json.dumps(
            {"recipe": payload.get("recipe"), "model": payload.get("model"), "train": payload.get("train"),
             "prompting": payload.get("prompting")},
            indent=2, ensure_ascii=False, default=str) + "\n")
    return path
