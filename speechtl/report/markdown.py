"""Run report: ``report.json`` (everything, machine-readable), ``report.md`` (tables for a pull request)
and ``report.html`` (self-contained, with plots; :mod:`speechtl.report.html`).

The payload is described in :mod:`speechtl.report.data`. :func:`speechtl.report.write.write_report`
writes the three files from a payload; :func:`speechtl.report.write.regenerate`
rebuilds them from a run folder's saved ``report.json`` and its ``eval/`` and
``checkpoints/`` folders, without decoding or training again.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from speechtl.evaluate.timestamps import timestamp_line
from speechtl.report.data import (
    comparison,
    set_label,
    sets_of,
    summary_rows,
    systems_of,
)
from speechtl.text.repetition import COMPRESSION_RATIO_LIMIT

log = logging.getLogger(__name__)

DASH = "—"


def pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{100 * value:.{digits}f}%"


def ci_text(ci: list[float] | tuple[float, float] | None) -> str:
    return DASH if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def points(value: float) -> str:
    """A WER difference in percentage points, signed."""
    return f"{100 * value:+.1f} pts"


def diff_text(c: dict[str, Any] | None) -> str:
    if c is None:
        return DASH
    return f"{points(c['diff'])} [{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}]"


def verdict(c: dict[str, Any]) -> str:
    """What a paired comparison says about ``b`` against ``a`` at its level."""
    lo, hi = c["ci"]
    if hi < 0:
        return f"{c['b']} is better"
    if lo > 0:
        return f"{c['b']} is worse"
    return "no significant difference"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines; ``|`` inside a cell is escaped."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)]


RESULTS_HEADER = ["test set", "system", "utts", "WER", "95% CI", "raw WER", "CER", "S / D / I", "term recall",
                  "÷ baseline", "Δ WER vs baseline [95% CI]", "P(better than baseline)"]
COMPARISONS_HEADER = ["test set", "b vs a", "WER a → b", "Δ WER [95% CI]", "P(b better)", "verdict"]


def results_rows(payload: dict[str, Any]) -> list[list[str]]:
    """The cells of the results table (plain text; report.md and report.html share them)."""
    rows = []
    for r in summary_rows(payload):
        diff = r["diff"]
        rows.append([
            r["label"], r["system"], str(r["num_utts"]), pct(r["wer"]), ci_text(r["wer_ci95"]), pct(r["raw_wer"]),
            pct(r["cer"]), " / ".join(DASH if v is None else str(v) for v in r["sdi"]), pct(r["term_recall"]),
            DASH if r["ratio"] is None else f"{r['ratio']:.2f}", diff_text(diff),
            DASH if diff is None else pct(diff["prob_b_better"], 0),
        ])
    return rows


def comparison_rows(payload: dict[str, Any]) -> list[list[str]]:
    """The cells of the paired-comparison table (plain text)."""
    return [[ref, f"{c['b']} vs {c['a']}", f"{pct(c['wer_a'])} → {pct(c['wer_b'])}", diff_text(c),
             pct(c["prob_b_better"], 1), verdict(c)]
            for ref in sets_of(payload) for c in payload.get("comparisons", {}).get(ref, [])]


def _results(payload: dict[str, Any]) -> list[str]:
    return ["## Results", "", *table(RESULTS_HEADER, results_rows(payload))]


def _comparisons(payload: dict[str, Any]) -> list[str]:
    rows = comparison_rows(payload)
    errors = [f"- {e['b']} vs {e['a']} on {e['set']}: not compared ({e['error']})"
              for e in payload.get("comparison_errors", [])]
    if not rows and not errors:
        return []
    boot = payload.get("bootstrap", {})
    return ["", "## Is the gain real? Paired bootstrap", "", *errors, *([""] if errors else []),
            f"Both systems resampled on the same utterances ({boot.get('num_samples')} resamples, seed "
            f"{boot.get('seed')}); Δ = WER(b) − WER(a), negative means b makes fewer errors; P = share of "
            "resamples where b's WER is lower.", "",
            *table(COMPARISONS_HEADER, rows)]


def _search(payload: dict[str, Any]) -> list[str]:
    """Whisper route: how every system was decoded (eval.num_beams)."""
    if payload.get("train", {}).get("route", "seq2seq") != "seq2seq":
        return []
    beams = payload["recipe"].get("eval", {}).get("num_beams", 1)
    step = payload["recipe"].get("train", {}).get("window_step_s")
    window = ("" if step is None else
              f" Every system is decoded on Whisper's 30-s windows; training encoded each clip in a window of its "
              f"length rounded up to {step:g} s (train.window_step_s).")
    if beams == 1:
        return ["", "Decoding: greedy, the same for every system." + window]
    return ["", f"Decoding: beam search of width {beams}, the same for every system; a transcript that repeats "
            f"itself (compression ratio over {COMPRESSION_RATIO_LIMIT}) is decoded greedily instead." + window]


def _decoding(payload: dict[str, Any]) -> list[str]:
    """CTC route: what the LM beam search (system adapted+lm) was built from and how its weights were chosen."""
    dec = payload.get("decoding")
    if not dec:
        return []
    text, chosen, st = dec["lm_text"], dec["chosen"], dec["settings"]
    return ["", f"CTC route: `adapted` decodes greedily; `adapted+lm` runs a lexicon beam search (beam "
            f"{st['beam_size']}) with a {st['order']}-gram LM of {text['sentences']} sentences (train transcripts "
            f"and the recipe's LM text; {text['held_out_removed']} dev/test sentences removed first), "
            f"{st['lexicon_words']} lexicon words, {st['num_terms'] - st['terms_skipped']} boosted terms. "
            f"LM weight {chosen['lm_weight']} and word score {chosen['word_score']} chosen on dev "
            f"(dev WER {pct(dec['tuning'][0]['dev_wer'])} greedy, {pct(chosen['dev_wer'])} with the LM)."]


INTERPOLATION_SYSTEMS = (("baseline", "0 (base)"), ("fine-tuned", "1 (trained checkpoint)"))


def interpolation_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Dev table of the WiSE-FT choice: one row per alpha, a column per dev set, the joined WER; the kept row marked."""
    choice = payload.get("interpolation")
    if not choice:
        return [], []
    header = ["alpha", *(f"{ref} (clips with words)" if ref.startswith("nonspeech/") else ref
                         for ref in choice["dev_sets"]), "dev sets joined: WER", ""]
    rows = [[f"{c['alpha']:.2f}", *(pct(c["dev_wer"][ref]) for ref in choice["dev_sets"]), pct(c["pooled_dev_wer"]),
             "**kept**" if c["alpha"] == choice["alpha"] else ""] for c in choice["candidates"]]
    for alpha in choice.get("skipped", []):  # the descending search stopped before them
        rows.append([f"{alpha:.2f}", *("not decoded" for _ in choice["dev_sets"]), "not decoded", ""])
    rows.sort(key=lambda row: float(row[0]))
    return header, rows


def tradeoff_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Test WER of each candidate model: the domain (primary) set against the forgetting check's unseen speech."""
    choice = payload.get("interpolation")
    if not choice:
        return [], []
    refs = [r for r in (payload.get("primary"), payload.get("forgetting")) if r]
    header = ["system", "alpha", *(set_label(payload, r) for r in refs)]
    names = dict(INTERPOLATION_SYSTEMS, adapted=f"{choice['alpha']:.2f} (kept, chosen on dev)")
    if "adapted+prompt" in payload["evaluations"]:
        names["adapted+prompt"] = f"{choice['alpha']:.2f}, term list as prompt"
    rows = []
    for system, alpha in names.items():
        sets = payload["evaluations"].get(system, {})
        if system == "fine-tuned" and not sets:  # alpha 1 was kept: the adapted row is the checkpoint
            continue
        rows.append([system, alpha, *(f"{pct(sets[r]['wer'])} {ci_text(sets[r].get('wer_ci95'))}"
                                       if r in sets else "—" for r in refs)])
    return header, rows


def _interpolation(payload: dict[str, Any]) -> list[str]:
    header, rows = interpolation_rows(payload)
    if not rows:
        return []
    choice = payload["interpolation"]
    t_header, t_rows = tradeoff_rows(payload)
    return ["", "## Weight interpolation (WiSE-FT): alpha chosen on dev", "",
            f"θ = (1 − α)·θ_base + α·θ_trained. Every α was decoded on the dev sets only; the lowest WER of the "
            f"dev sets joined (errors over reference words of all of them; a no-speech clip's words count as "
            f"insertions) chose α = {choice['alpha']:.2f} (`adapted`). No test figure took part in the choice.",
            "", *table(header, rows), "",
            "The trade-off on the test sets (reported, not used to choose):", "", *table(t_header, t_rows)]


def prompting_rows(payload: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """The term prompt's dev choice: a sentence saying what was kept and why, and its dev table."""
    prompting = payload.get("prompting")
    if not prompting:
        return "", [], []
    refs = list(prompting["dev_wer"]["with"])
    rows = [[label, *(pct(prompting["dev_wer"][key].get(ref)) for ref in refs), pct(prompting["pooled_dev_wer"][key])]
            for key, label in (("without", "adapted"), ("with", "adapted + term prompt"))]
    kept = ("kept: system `adapted+prompt` is scored on every test set, and the export's model card says to serve "
            "the terms as the prompt" if prompting["kept"] else "not kept: the adapted model is served without it")
    text = (f"The adapted model decoded the dev sets again with the term list as Whisper's text prompt; the prompt is "
            f"{kept} ({prompting.get('reason', '')}). It is kept only where the WER of the dev sets joined falls and "
            "no more no-speech dev clips get words. No test figure took part in the choice.")
    return text, ["decoding", *refs, "dev sets joined: WER"], rows


def _prompting(payload: dict[str, Any]) -> list[str]:
    text, header, rows = prompting_rows(payload)
    if not rows:
        return []
    return ["", "## Term list as the prompt: chosen on dev", "", text, "", *table(header, rows)]


def _forgetting(payload: dict[str, Any]) -> list[str]:
    ref = payload.get("forgetting")
    if not ref:
        return []
    lines = ["", f"## Forgetting check: {ref}", "",
             "General speech the training did not target; the adapted model should not get worse here.", ""]
    rows = [[system, pct(sets[ref]["wer"]), ci_text(sets[ref].get("wer_ci95"))]
            for system in systems_of(payload) if ref in (sets := payload["evaluations"][system])]
    lines += table(["system", "WER", "95% CI"], rows)
    c = comparison(payload, ref, "baseline", "adapted")
    if c is not None:
        lines += ["", f"adapted − baseline: {diff_text(c)}, P(adapted better) {pct(c['prob_b_better'], 1)}: "
                      + ("**WER went up: forgetting**" if c["ci"][0] > 0 else verdict(c)) + "."]
    return lines


NONSPEECH_HEADER = ["system", "clips with words", "share", "most written words", "speech clips with no words"]
NONSPEECH_NOTE = ("Held-out clips without speech (silence, noise, hum, tones, call-progress and keypad tones, babble, "
                  "music, a lossy line; synthetic, made in code). The right transcript is empty: every clip with a "
                  "word is a reply to nobody.")


def nonspeech_rows(payload: dict[str, Any]) -> tuple[list[list[str]], str | None]:
    """Rows of the no-speech table and the verdict on the adapted model (None without both systems).

    Each row also counts the other side of the rule: speech clips of the system's test sets answered with no
    word at all."""
    systems = (payload.get("nonspeech") or {}).get("systems") or {}
    silent = {system: _silent_speech(payload, system) for system in systems}
    rows = [[system, f"{m['clips_with_words']} of {m['num_clips']}", pct(m["share_with_words"]),
             ", ".join(f"{w} ({n})" for w, n in m["top_words"][:5]) or "—",
             f"{silent[system][0]} of {silent[system][1]}" if silent[system][1] else "—"]
            for system, m in systems.items()]
    base, adapted = systems.get("baseline"), systems.get("adapted")
    if not (base and adapted):
        return rows, None
    rise = adapted["clips_with_words"] - base["clips_with_words"]
    lost = silent["adapted"][0] - silent["baseline"][0]
    problems = ([f"{rise} more clips with words than the baseline"] if rise > 0 else []) + (
        [f"{lost} more speech clips answered with no words than the baseline"] if lost > 0 else [])
    return rows, ("Regression: " + "; ".join(problems) + "." if problems
                  else "Adapted: no more clips with words, and no more silent answers to speech, than the baseline.")


def _silent_speech(payload: dict[str, Any], system: str) -> tuple[int, int]:
    """(speech clips with an empty hypothesis, speech clips) over the system's evaluated sets."""
    sets = (payload.get("evaluations") or {}).get(system) or {}
    scored = [m for m in sets.values() if "empty_hypotheses" in m]
    return sum(m["empty_hypotheses"] for m in scored), sum(m["num_utts"] for m in scored)


def _nonspeech(payload: dict[str, Any]) -> list[str]:
    rows, verdict_text = nonspeech_rows(payload)
    if not rows:
        return []
    lines = ["", "## No speech in: words out", "", NONSPEECH_NOTE, "", *table(NONSPEECH_HEADER, rows)]
    if verdict_text:
        lines += ["", f"**{verdict_text}**" if verdict_text.startswith("Regression") else verdict_text]
    return lines


LONGFORM_HEADER = ["system", "clip by clip", "long-form", "long − clips", "recordings"]


def longform_rows(payload: dict[str, Any]) -> list[list[str]]:
    """One row per system: the primary set's WER clip by clip and joined into long recordings decoded whole."""
    rows = []
    for system, lf in (payload.get("longform") or {}).items():
        rows.append([system, pct(lf["clip_wer"]), f"{pct(lf['wer'])} {ci_text(lf.get('wer_ci95'))}",
                     points(lf["wer"] - lf["clip_wer"]), f"{lf['recordings']} ({lf['minutes']} min)"])
    return rows


def _longform(payload: dict[str, Any]) -> list[str]:
    rows = longform_rows(payload)
    if not rows:
        return []
    ref = next(iter(payload["longform"].values()))["set"]
    return ["", f"## Long recordings: {ref} joined into 1-3 min", "",
            "The same utterances, in a seeded order with 0.7-s pauses, decoded whole: windows of at most 30 s cut "
            "at the quietest point before each limit. The long-form CI is over recordings.", "",
            *table(LONGFORM_HEADER, rows)]


def language_id_table(payload: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """The note, header and rows of the language identification table (no rows: not measured)."""
    lang = payload.get("recipe", {}).get("lang", "")
    rows = [[system, ref, f"{m['correct']} of {m['clips']} ({pct(m['accuracy'])})",
             ", ".join(f"{code} {n}" for code, n in m["instead"].items()) or "—"]
            for system, sets in (payload.get("language_id") or {}).items() for ref, m in sets.items()]
    note = (f"Whisper's own detection, the language not forced (what a client that leaves `language` unset gets), "
            f"on the first clips of each set: how many it hears as `{lang}`.")
    return note, ["system", "set", f"detected as {lang}", "detected instead"], rows


def _language_id(payload: dict[str, Any]) -> list[str]:
    note, header, rows = language_id_table(payload)
    return ["", "## Language identification", "", note, "", *table(header, rows)] if rows else []


def _timestamps(payload: dict[str, Any]) -> list[str]:
    ts = payload.get("timestamps")
    if not ts or not ts["systems"]:
        return []
    rows = []
    for system, check in ts["systems"].items():
        if "error" in check:
            rows.append([system, "—", "—", f"not checked: {check['error']}"])
            continue
        wer = "—" if check.get("wer") is None else pct(check["wer"])
        clip = "—" if check.get("clip_wer") is None else pct(check["clip_wer"])
        rows.append([system, wer, clip, timestamp_line({**check, "wer": None})])
    return ["", f"## Long-form through faster-whisper: segment timestamps and WER ({ts['set']} recordings, "
            f"{ts['compute_type']})", "",
            "The served path: each joined recording decoded whole by faster-whisper (sequential long-form decoding, "
            "as `speechtl serve` and Pipecat's in-process service do). Whisper's long-form decoding moves its window "
            "by the timestamps it predicts; a recording is sane when every segment lies inside the audio, in order. "
            "Each segment start is compared with the nearest start of a joined utterance (known from the joining). "
            "The clip-by-clip WER is the same system's PyTorch evaluation on the utterances these recordings join.",
            "", *table(["system", "long-form WER", "clip by clip (PyTorch)", "timestamps"], rows)]


def _hallucinations(payload: dict[str, Any]) -> list[str]:
    rows = []
    for ref in sets_of(payload):
        for system in systems_of(payload):
            h = payload["evaluations"][system].get(ref, {}).get("hallucinations")
            if h:
                c = h["counts"]
                rows.append([ref, system, f"{c['any']} of {h['num_utts']}", str(c["insertion_run"]),
                             str(c["ngram_loop"]), str(c["long_hypothesis"])])
    if not rows:
        return []
    return ["", "## Hallucinations", "",
            *table(["test set", "system", "utterances flagged", "insertion runs (≥3 words)",
                     "n-gram loops (≥3 repeats)", "hypotheses > 2× reference"], rows)]


def _per_term(payload: dict[str, Any]) -> list[str]:
    ref = payload.get("primary")
    systems = [s for s in systems_of(payload) if (payload["evaluations"][s].get(ref) or {}).get("terms")]
    if not systems:
        return []
    per = {s: payload["evaluations"][s][ref]["terms"]["per_term"] for s in systems}
    terms = [t for t, v in per[systems[0]].items() if v["occurrences"]]
    rows = [[t, str(per[systems[0]][t]["occurrences"]), *(pct(per[s].get(t, {}).get("recall"), 0) for s in systems)]
            for t in terms]
    return ["", f"<details><summary>Term recall per term on {ref} ({len(terms)} terms occur)</summary>", "",
            *table(["term", "occurrences", *systems], rows), "", "</details>"]


def synthetic_note(payload: dict[str, Any]) -> list[str]:
    synth = [ref for ref in sets_of(payload) if "synthetic speech" in set_label(payload, ref)]
    if not synth:
        return []
    return ["", f"Note: {', '.join(synth)} {'is' if len(synth) == 1 else 'are'} synthetic (TTS) speech: the "
                "WER there measures the model on synthesized voices, not on recordings of people."]


def _exports(payload: dict[str, Any]) -> list[str]:
    """Each export's parity check: its WER on its own runtime against the PyTorch model's."""
    rows, notes = [], []
    for fmt, e in (payload.get("exports") or {}).items():
        p = e.get("parity") or {}
        if p.get("passed") is None:
            rows.append([fmt, f"`{e['path']}`", "—", "—", "—", "not checked"])
            continue
        runtime = f"{fmt}" + (f" ({p['compute_type']})" if p.get("compute_type") else "")
        rows.append([runtime, f"`{e['path']}`", pct(p["export_wer"], 2), pct(p["torch_wer"], 2),
                     f"{p['diff_points']:+.2f}", ("passed" if p["passed"] else "**FAILED**")
                     + f" (margin {p['margin_points']})"])
        if p.get("weight_files_identical") is not None:
            notes += ["", f"{fmt}: the weight files are byte-identical to the evaluated model's "
                      f"({'yes' if p['weight_files_identical'] else '**no**'}); its WERs are on the first "
                      f"{p['num_utts']} utterances, decoded through `from_pretrained` and the transformers pipeline."]
        if p.get("unpadded_wer") is not None:
            notes += ["", f"{fmt}: faster-whisper gets audio padded to 30-s windows (as `speechtl serve` does); "
                      f"called as-is on unpadded audio it gives WER {pct(p['unpadded_wer'], 2)} "
                      f"({p['unpadded_diff_points']:+.2f} points)."]
    if not rows:
        return []
    return ["", "## Exports: parity with the PyTorch model", "",
            *table(["format", "path", "export WER", "PyTorch WER", "points", "check"], rows), *notes]


def markdown(payload: dict[str, Any]) -> str:
    train = payload.get("train", {})
    norm = payload["normalizer"]
    lines = [
        f"# speechtl run: {payload['recipe'].get('name')}",
        "",
        f"Model: `{payload['model']['name']}` ({payload['model']['source']}); route "
        f"`{train.get('route', 'seq2seq')}`, strategy `{train.get('strategy')}`; scoring normalizer `{norm['name']}` "
        f"(settings: {json.dumps(norm['settings'], ensure_ascii=False)}), the same for every system. "
        "WER = (S + D + I) / reference words on normalized text; raw WER on the text as written. 95% CI: "
        "percentile bootstrap over utterances.",
        *_search(payload),
        *synthetic_note(payload),
        "",
        *_results(payload),
        *_comparisons(payload),
        *_forgetting(payload),
        *_nonspeech(payload),
        *_longform(payload),
        *_language_id(payload),
        *_timestamps(payload),
        *_interpolation(payload),
        *_prompting(payload),
        *_hallucinations(payload),
        *_per_term(payload),
        "",
        f"Training: {train.get('steps')} steps, {train.get('wall_time_s') or 0:.0f} s, "
        f"{train.get('trainable_params') or 0:,} trainable parameters, best dev WER {pct(train.get('best_dev_wer'))}.",
        *_decoding(payload),
        *_exports(payload),
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in payload.get("timings_s", {}).items()),
        "",
    ]
    return "\n".join(lines)
