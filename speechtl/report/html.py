"""``report.html``: one self-contained page (inline CSS, plots as embedded base64 PNG, no external URL).

:func:`render_html` turns a report payload (see :mod:`speechtl.report.data`)
into the page: the results table, WER per system with confidence bars, the
paired comparisons, the forgetting check, WER per speaker, recall per term,
training curves, hallucinations, the most frequent confusions and aligned
reference/hypothesis examples with the errors marked. Every piece of text from
the payload is escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from speechtl.report.data import comparison, set_label, sets_of, systems_of
from speechtl.report.markdown import (
    COMPARISONS_HEADER,
    LONGFORM_HEADER,
    NONSPEECH_HEADER,
    NONSPEECH_NOTE,
    RESULTS_HEADER,
    ci_text,
    comparison_rows,
    diff_text,
    interpolation_rows,
    language_id_table,
    longform_rows,
    nonspeech_rows,
    pct,
    prompting_rows,
    results_rows,
    tradeoff_rows,
    verdict,
)
from speechtl.report.plots import Plot, all_plots

TOP_CONFUSIONS = 15

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.note { color: #555; font-size: 0.9em; }
.warn { color: #a33; font-weight: bold; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; }
del { background: #fbdcdc; color: #a33; }
ins { background: #d8f0d8; color: #262; text-decoration: none; border-bottom: 2px solid #4a4; }
.sub { background: #fff0cc; padding: 0 2px; border-radius: 3px; }
.sub del, .sub ins { background: none; }
.ex td:first-child { white-space: nowrap; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _table(header: list[str], rows: list[list[str]], numeric: set[int] | frozenset[int] = frozenset()) -> str:
    """An HTML table; header and cells are given already escaped."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if k in numeric else f"<td>{c}</td>"
                                    for k, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(plot: Plot | None, missing: str) -> str:
    if plot is None:
        return f'<p class="note">{_e(missing)}</p>'
    title, png = plot
    return (f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{_e(title)}</figcaption></figure>")


def aligned_html(ops: list[list[str]] | list[tuple[str, str, str]]) -> str:
    """A hypothesis with its errors marked: <del> deleted reference words, <ins> inserted words,
    substitutions as reference (struck) then hypothesis inside a ``sub`` span."""
    parts = []
    for op, ref, hyp in ops:
        if op == "equal":
            parts.append(_e(hyp))
        elif op == "substitute":
            parts.append(f'<span class="sub" title="substitution"><del>{_e(ref)}</del> → <ins>{_e(hyp)}</ins></span>')
        elif op == "delete":
            parts.append(f'<del title="deletion">{_e(ref)}</del>')
        elif op == "insert":
            parts.append(f'<ins title="insertion">{_e(hyp)}</ins>')
        else:
            raise ValueError(f"aligned_html: unknown alignment op {op!r}")
    return " ".join(parts)


def _results(payload: dict[str, Any]) -> str:
    rows = [[_e(cell) for cell in row] for row in results_rows(payload)]
    return _table(RESULTS_HEADER, rows, numeric={2, 3, 4, 5, 6, 8, 9, 11})


def _comparisons(payload: dict[str, Any]) -> str:
    rows = [[_e(cell) for cell in row] for row in comparison_rows(payload)]
    errors = "".join(f'<p class="warn">{_e(e["b"])} vs {_e(e["a"])} on {_e(e["set"])}: not compared '
                     f'({_e(e["error"])})</p>' for e in payload.get("comparison_errors", []))
    if not rows:
        return errors or '<p class="note">No paired comparison (per-utterance rows were not available).</p>'
    boot = payload.get("bootstrap", {})
    return errors + (f'<p class="note">Paired bootstrap over the same utterances ({_e(boot.get("num_samples"))} resamples, '
            f'seed {_e(boot.get("seed"))}); Δ = WER(b) − WER(a), negative means b makes fewer errors.</p>'
            + _table(COMPARISONS_HEADER, rows))


def _forgetting(payload: dict[str, Any]) -> str:
    ref = payload.get("forgetting")
    if not ref:
        return '<p class="note">The recipe names no forgetting-check set (eval.forgetting).</p>'
    rows = [[_e(s), pct(sets[ref]["wer"]), ci_text(sets[ref].get("wer_ci95"))]
            for s in systems_of(payload) if ref in (sets := payload["evaluations"][s])]
    out = f'<p class="note">{_e(ref)}: general speech the training did not target.</p>'
    out += _table(["system", "WER", "95% CI"], rows, numeric={1, 2})
    c = comparison(payload, ref, "baseline", "adapted")
    if c is not None:
        text = "WER went up: forgetting" if c["ci"][0] > 0 else verdict(c)
        out += (f'<p class="{"warn" if c["ci"][0] > 0 else "note"}">adapted − baseline: {_e(diff_text(c))}, '
                f"P(adapted better) {pct(c['prob_b_better'], 1)}: {_e(text)}.</p>")
    return out


def _interpolation(payload: dict[str, Any]) -> str:
    header, rows = interpolation_rows(payload)
    if not rows:
        return '<p class="note">No weight interpolation ran (interpolate.enabled, Whisper route only).</p>'
    t_header, t_rows = tradeoff_rows(payload)
    alpha = payload["interpolation"]["alpha"]
    return (f'<p>θ = (1 − α)·θ<sub>base</sub> + α·θ<sub>trained</sub>; α = {alpha:.2f} chosen by the lowest WER '
            "of the dev sets joined. No test figure took part in the choice.</p>"
            + _table(header, [[c.replace("**", "") for c in r] for r in rows], set(range(1, len(header) - 1)))
            + "<p>The trade-off on the test sets (reported, not used to choose):</p>"
            + _table(t_header, t_rows, set(range(2, len(t_header)))))


def _prompting(payload: dict[str, Any]) -> str:
    text, header, rows = prompting_rows(payload)
    if not rows:
        return ""
    return (f"<h3>Term list as the prompt: chosen on dev</h3><p>{_e(text.replace('`', ''))}</p>"
            + _table(header, rows, set(range(1, len(header)))))


def _hallucinations(payload: dict[str, Any]) -> str:
    rows, examples = [], []
    for ref in sets_of(payload):
        for system in systems_of(payload):
            h = payload["evaluations"][system].get(ref, {}).get("hallucinations")
            if not h:
                continue
            c = h["counts"]
            rows.append([_e(ref), _e(system), f"{c['any']} of {h['num_utts']}", str(c["insertion_run"]),
                         str(c["ngram_loop"]), str(c["long_hypothesis"])])
            for ex in h.get("examples", []):
                pattern = (f"loop “{ex['loop']['ngram']}” ×{ex['loop']['repeats']}" if ex.get("loop")
                           else f"inserted “{ex['insertion_run']}”" if ex.get("insertion_run")
                           else f"{ex['hyp_words']} words for {ex['ref_words']}")
                examples.append([_e(ref), _e(system), _e(ex["id"]), _e(", ".join(ex["kinds"])), _e(pattern),
                                 _e(ex["reference"]), _e(ex["hypothesis"])])
    if not rows:
        return '<p class="note">No hallucination view in the evaluations.</p>'
    out = _table(["test set", "system", "utterances flagged", "insertion runs (≥3 words)", "n-gram loops (≥3)",
                  "hypotheses > 2× reference"], rows, numeric={3, 4, 5})
    if examples:
        out += ("<details><summary>Flagged utterances</summary>"
                + _table(["set", "system", "id", "kinds", "pattern", "reference", "hypothesis"], examples)
                + "</details>")
    return out


def _confusions(payload: dict[str, Any]) -> str:
    blocks = []
    for ref in sets_of(payload):
        tables = []
        for system in systems_of(payload):
            conf = payload["evaluations"][system].get(ref, {}).get("confusions")
            if not conf:
                continue
            rows = [[_e(r), _e(h), str(n)] for r, h, n in conf["substitutions"][:TOP_CONFUSIONS]]
            rows += [[_e(w), "<del>(deleted)</del>", str(n)] for w, n in conf["deletions"][:3]]
            rows += [["<ins>(inserted)</ins>", _e(w), str(n)] for w, n in conf["insertions"][:3]]
            tables.append(f"<div><h4>{_e(system)}</h4>"
                          + _table(["reference", "hypothesis", "count"], rows, numeric={2}) + "</div>")
        if tables:
            blocks.append(f"<h3>{_e(set_label(payload, ref))}</h3><div class=\"row\">{''.join(tables)}</div>")
    return "".join(blocks) or '<p class="note">No confusion counts in the evaluations.</p>'


def _examples(payload: dict[str, Any]) -> str:
    blocks = []
    for ref, examples in payload.get("examples", {}).items():
        rows = []
        for ex in examples:
            rows.append(["reference", f"<b>{_e(ex['id'])}</b> ({_e(ex.get('speaker'))})<br>{_e(ex['reference'])}"])
            for system, hyp in ex["systems"].items():
                rows.append([f"{_e(system)} ({_e(hyp['errors'])} errors)", aligned_html(hyp["ops"])])
        blocks.append(f"<h3>{_e(set_label(payload, ref))}</h3>"
                      + _table(["", "text"], rows).replace("<table>", '<table class="ex">', 1))
    if not blocks:
        return '<p class="note">No aligned examples (per-utterance rows were not available).</p>'
    legend = ('<p class="note">Marks: <del>deleted</del> reference words, <ins>inserted</ins> words, '
              '<span class="sub"><del>reference</del> → <ins>hypothesis</ins></span> substitutions.</p>')
    return legend + "".join(blocks)


def _nonspeech(payload: dict[str, Any]) -> str:
    rows, verdict_text = nonspeech_rows(payload)
    if not rows:
        return '<p class="note">No clips without speech were scored (nonspeech.test_clips: 0).</p>'
    out = f'<p class="note">{_e(NONSPEECH_NOTE)}</p>' + _table(NONSPEECH_HEADER, [[_e(c) for c in r] for r in rows])
    if verdict_text:
        out += f'<p class="{"warn" if verdict_text.startswith("Regression") else "note"}">{_e(verdict_text)}</p>'
    return out


def _longform(payload: dict[str, Any]) -> str:
    rows = longform_rows(payload)
    if not rows:
        return '<p class="note">No long-form evaluation (eval.longform: false, or not the Whisper route).</p>'
    return ('<p class="note">The primary set joined into 1-3 min recordings (seeded order, 0.7-s pauses), '
            "decoded whole in windows of at most 30 s cut at the quietest point before each limit.</p>"
            + _table(LONGFORM_HEADER, [[_e(c) for c in r] for r in rows]))


def _language_id(payload: dict[str, Any]) -> str:
    note, header, rows = language_id_table(payload)
    if not rows:
        return '<p class="note">No language identification (not a Whisper model with language tokens).</p>'
    return f'<p class="note">{_e(note)}</p>' + _table(header, [[_e(c) for c in r] for r in rows])


def _header(payload: dict[str, Any]) -> str:
    train, norm, model = payload.get("train", {}), payload["normalizer"], payload["model"]
    synth = [ref for ref in sets_of(payload) if "synthetic speech" in set_label(payload, ref)]
    out = (f"<h1>speechtl run: {_e(payload['recipe'].get('name'))}</h1>"
           f"<p>Model <code>{_e(model['name'])}</code> ({_e(model.get('source'))}); strategy "
           f"<code>{_e(train.get('strategy'))}</code>; {_e(train.get('steps'))} steps, "
           f"{train.get('wall_time_s') or 0:.0f} s; best dev WER {pct(train.get('best_dev_wer'))}.</p>"
           f"<p>Scoring normalizer <code>{_e(norm['name'])}</code> "
           f"(<code>{_e(json.dumps(norm['settings'], ensure_ascii=False))}</code>), the same for every system; "
           "WER = (S + D + I) / reference words on normalized text, raw WER on the text as written.</p>")
    if synth:
        out += (f'<p class="warn">{_e(", ".join(synth))}: synthetic (TTS) speech. The WER there measures '
                "synthesized voices, not recordings of people.</p>")
    return out


def render_html(payload: dict[str, Any]) -> str:
    """The whole page for ``payload``."""
    plots = all_plots(payload)
    sections = [
        ("Results", _results(payload) + _figure(plots["wer"], "No WER to plot.")),
        ("Is the gain real?", _comparisons(payload)),
        ("Forgetting check", _forgetting(payload)),
        ("No speech in: words out", _nonspeech(payload)),
        ("Long recordings", _longform(payload)),
        ("Language identification", _language_id(payload)),
        ("Weight interpolation (WiSE-FT)", _interpolation(payload) + _figure(plots["tradeoff"], "")
         + _prompting(payload)),
        ("Per speaker", _figure(plots["speakers"], "No per-speaker breakdown in the evaluations.")),
        ("Domain terms", _figure(plots["terms"], "No term list was scored (eval.terms).")),
        ("Training", _figure(plots["training"], "No training history (checkpoints/history.jsonl) in the payload.")),
        ("Hallucinations", _hallucinations(payload)),
        ("Most frequent confusions", _confusions(payload)),
        ("Aligned examples", _examples(payload)),
    ]
    body = _header(payload) + "".join(f"<h2>{_e(title)}</h2>{html}" for title, html in sections)
    config = json.dumps(payload.get("recipe", {}), ensure_ascii=False, indent=2)
    timings = ", ".join(f"{k} {v}" for k, v in payload.get("timings_s", {}).items())
    body += (f"<h2>Resolved config</h2><details><summary>recipe</summary><pre>{_e(config)}</pre></details>"
             f'<p class="note">Timings (s): {_e(timings)}</p>')
    title = f"speechtl report: {payload['recipe'].get('name')}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")
