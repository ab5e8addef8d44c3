"""The report's plots, drawn with matplotlib's Agg backend and returned as base64 PNG.

Every function takes the report payload (see :mod:`speechtl.report.data`) and
returns ``(title, base64 PNG)`` or ``None`` when the payload has nothing to
draw. Figures are built with :class:`matplotlib.figure.Figure` and an Agg
canvas, never pyplot, so no global state or display is touched.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from speechtl.report.data import sets_of, systems_of

Plot = tuple[str, str]  # (title, base64 PNG)
COLORS = {"baseline": "#8c8c8c", "baseline+prompt": "#e3a33b", "fine-tuned": "#7a5ab8", "adapted": "#2a7ab8",
          "adapted+prompt": "#2f9e6e"}
FALLBACK_COLORS = ("#5aa05a", "#b84f4f", "#7a5ab8", "#4fb8b0")
MAX_TERMS = 60  # terms drawn in the per-term plot


def _figure(width_in: float, height_in: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("report.html plots need matplotlib: pip install 'speechtl[report]'") from exc
    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _text(value: str) -> str:
    """Text drawn literally: matplotlib would read ``$...$`` as math (and fail on an odd ``$``)."""
    return str(value).replace("$", r"\$")


def _color(system: str, k: int) -> str:
    return COLORS.get(system, FALLBACK_COLORS[k % len(FALLBACK_COLORS)])


def _grouped_bars(ax, groups: list[str], systems: list[str], value, error=None) -> None:
    """Bars of ``value(system, group)`` (None = no bar) per group, one color per system."""
    width = 0.8 / max(len(systems), 1)
    for k, system in enumerate(systems):
        xs, ys, errs = [], [], [[], []]
        for g, group in enumerate(groups):
            v = value(system, group)
            if v is None:
                continue
            xs.append(g - 0.4 + width * (k + 0.5))
            ys.append(100 * v)
            lo, hi = (error(system, group) if error else None) or (v, v)
            errs[0].append(100 * max(v - lo, 0.0))
            errs[1].append(100 * max(hi - v, 0.0))
        if xs:
            bars = ax.bar(xs, ys, width=width * 0.95, color=_color(system, k), label=_text(system),
                          yerr=errs if error else None, capsize=3, error_kw={"elinewidth": 1})
            if len(xs) <= 12:  # values on the bars (a 0% bar is otherwise invisible)
                ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), [_text(g) for g in groups])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def wer_per_system(payload: dict[str, Any]) -> Plot | None:
    sets, systems = sets_of(payload), systems_of(payload)
    if not sets:
        return None
    evaluations = payload["evaluations"]
    fig = _figure(max(5.0, 1.8 * len(sets) + 2), 3.6)
    ax = fig.add_subplot()

    def value(system: str, ref: str) -> float | None:
        return evaluations[system].get(ref, {}).get("wer")

    def error(system: str, ref: str):
        ci = evaluations[system].get(ref, {}).get("wer_ci95")
        return tuple(ci) if ci else None

    _grouped_bars(ax, sets, systems, value, error)
    ax.set_ylabel("WER (%)")
    ax.set_title("WER per system and test set (bars: 95% bootstrap CI)", fontsize=10)
    return "WER per system with 95% confidence intervals", _png(fig)


def wer_per_speaker(payload: dict[str, Any]) -> Plot | None:
    evaluations, systems = payload["evaluations"], systems_of(payload)
    panels = []
    for ref in sets_of(payload):
        speakers = sorted({spk for s in systems for spk in evaluations[s].get(ref, {}).get("per_speaker", {})})
        if speakers:
            panels.append((ref, speakers))
    if not panels:
        return None
    widest = max(len(spk) for _, spk in panels)
    fig = _figure(max(6.0, 0.55 * widest * max(len(systems), 1) / 2 + 3), 3.2 * len(panels))
    for k, (ref, speakers) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)

        def value(system: str, spk: str, ref: str = ref) -> float | None:
            return evaluations[system].get(ref, {}).get("per_speaker", {}).get(spk, {}).get("wer")

        _grouped_bars(ax, speakers, systems, value)
        ax.set_ylabel("WER (%)")
        ax.set_title(_text(f"{ref}: WER per speaker (voice)"), fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    return "WER per speaker", _png(fig)


def term_recall(payload: dict[str, Any]) -> Plot | None:
    ref = payload.get("primary")
    evaluations = payload["evaluations"]
    systems = [s for s in systems_of(payload) if (evaluations[s].get(ref) or {}).get("terms")]
    if not systems:
        return None
    per = {s: evaluations[s][ref]["terms"]["per_term"] for s in systems}
    first = per[systems[0]]
    terms = [t for t, v in first.items() if v["occurrences"]]
    if not terms:
        return None
    terms = sorted(terms, key=lambda t: (first[t]["recall"], t))[:MAX_TERMS]
    fig = _figure(7.5, 1.2 + 0.22 * len(terms) * max(1, len(systems) / 2))
    ax = fig.add_subplot()
    height = 0.8 / len(systems)
    for k, system in enumerate(systems):
        ys = [i - 0.4 + height * (k + 0.5) for i in range(len(terms))]
        xs = [100 * (per[system].get(t, {}).get("recall") or 0.0) for t in terms]
        ax.barh(ys, xs, height=height * 0.95, color=_color(system, k), label=_text(system))
        for y, x in zip(ys, xs):
            if x == 0:  # a 0% bar is invisible: say it
                ax.text(0.5, y, "0", va="center", fontsize=6, color=_color(system, k))
    ax.set_yticks(range(len(terms)), [_text(f"{t} ({first[t]['occurrences']})") for t in terms], fontsize=7)
    ax.set_ylim(len(terms) - 0.5, -0.5)  # first term on top, no empty margin
    ax.set_xlim(0, 100)
    ax.set_xlabel("recall (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(_text(f"{ref}: recall per domain term (occurrences in brackets)"), fontsize=10)
    return "Term recall per term", _png(fig)


def training_curves(payload: dict[str, Any]) -> Plot | None:
    history = payload.get("train_history") or []
    loss = [(r["step"], r["loss"]) for r in history if r.get("loss") is not None]
    dev = [(r["step"], r["dev_wer"]) for r in history if r.get("dev_wer") is not None]
    if not loss and not dev:
        return None
    fig = _figure(9.0, 3.2)
    ax_loss, ax_dev = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if loss:
        ax_loss.plot(*zip(*loss), marker=".", color="#2a7ab8")
    ax_loss.set_title("training loss (logged steps)", fontsize=10)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.grid(alpha=0.3)
    if dev:
        steps, wers = zip(*dev)
        ax_dev.plot(steps, [100 * w for w in wers], marker="o", color="#c0504d")
    best = (payload.get("train") or {}).get("best_step")
    if best is not None:
        ax_dev.axvline(best, color="#888", linestyle="--", linewidth=1, label=f"best (step {best})")
        ax_dev.legend(fontsize=8)
    ax_dev.set_title("dev WER (%)", fontsize=10)
    ax_dev.set_xlabel("optimizer step")
    ax_dev.grid(alpha=0.3)
    return "Training loss and dev WER", _png(fig)


def tradeoff(payload: dict[str, Any]) -> Plot | None:
    """WiSE-FT: dev WER per set against alpha (left); domain test WER against the forgetting check's (right)."""
    choice = payload.get("interpolation")
    if not choice:
        return None
    fig = _figure(9.5, 3.4)
    ax_dev, ax_test = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    alphas = [c["alpha"] for c in choice["candidates"]]
    for k, ref in enumerate(choice["dev_sets"]):
        ax_dev.plot(alphas, [100 * c["dev_wer"][ref] for c in choice["candidates"]], marker="o", label=_text(ref),
                    color=FALLBACK_COLORS[k % len(FALLBACK_COLORS)])
    ax_dev.plot(alphas, [100 * c["pooled_dev_wer"] for c in choice["candidates"]], marker="s", color="black",
                linewidth=2, label="joined (chooses)")
    ax_dev.axvline(choice["alpha"], color="#888", linestyle="--", linewidth=1)
    ax_dev.set_xlabel("alpha (0 = base, 1 = trained)")
    ax_dev.set_title("dev WER (%) per alpha", fontsize=10)
    ax_dev.legend(fontsize=7)
    ax_dev.grid(alpha=0.3)
    primary, forgetting = payload.get("primary"), payload.get("forgetting")
    for k, system in enumerate(("baseline", "fine-tuned", "adapted")):
        sets = payload["evaluations"].get(system, {})
        if primary in sets and forgetting in sets:
            x, y = 100 * sets[forgetting]["wer"], 100 * sets[primary]["wer"]
            ax_test.scatter([x], [y], color=_color(system, k), s=40, zorder=3)
            ax_test.annotate(system, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax_test.set_xlabel(_text(f"{forgetting} WER (%)"))
    ax_test.set_ylabel(_text(f"{primary} WER (%)"))
    ax_test.set_title("test trade-off (lower left is better)", fontsize=10)
    ax_test.grid(alpha=0.3)
    return "Weight interpolation: dev choice and test trade-off", _png(fig)


def all_plots(payload: dict[str, Any]) -> dict[str, Plot | None]:
    """Every plot of the report by key (None where the payload has no data for it)."""
    return {"wer": wer_per_system(payload), "speakers": wer_per_speaker(payload), "terms": term_recall(payload),
            "training": training_curves(payload), "tradeoff": tradeoff(payload)}
