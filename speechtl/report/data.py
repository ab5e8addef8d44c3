"""The report payload: what ``report.json`` holds, and the parts computed from per-utterance rows.

``speechtl adapt`` builds the payload (:meth:`speechtl.adapt.run.Run.report`);
:func:`enrich` adds everything that needs the evaluations' ``hypotheses.jsonl``
(paired bootstrap comparisons, aligned examples, and the hallucination and
confusion views of evaluations scored before ``metrics.json`` carried them),
so a saved ``report.json`` plus its run folder is enough to rebuild a report
(:func:`speechtl.report.write.regenerate`). Payload keys:

- ``recipe`` (the resolved config), ``model``, ``data``, ``normalizer``,
  ``primary``, ``forgetting``, ``train`` (TrainResult), ``exports``, ``timings_s``;
- ``evaluations``: system -> set -> the evaluation's ``metrics.json``. A system
  may lack sets (``baseline+prompt`` decodes only the primary set);
- ``train_history``: the rows of ``checkpoints/history.jsonl`` (step, loss, dev_wer...);
- ``sets``: set -> source, split, source kind (``corpus``/``synth``), TTS engine;
- ``relations``: set -> its relation to the training data (:func:`relation`): real or synthetic speech,
  speakers and TTS engines seen in training or not;
- ``interpolation``: the WiSE-FT alpha choice on dev (:mod:`speechtl.train.interpolate`), when it ran;
- ``bootstrap``: num_samples, seed, level of the paired comparisons;
- ``comparisons``: set -> list of paired bootstraps ``{a, b, diff, ci, prob_b_better, ...}``
  (``b - a``; negative = ``b`` better); ``comparison_errors`` lists pairs that could not be compared
  (the two evaluations do not hold the same utterances and references) and why;
- ``examples``: set -> aligned utterances ``{id, speaker, reference, systems: {system: {hypothesis, ops, errors}}}``;
- ``eval_dirs``: system -> set -> the evaluation folder, relative to the run folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from speechtl.evaluate.error_analysis import confusions, hallucinations
from speechtl.evaluate.significance import paired_bootstrap

log = logging.getLogger(__name__)

# report order; other systems follow. "fine-tuned" is the trained checkpoint itself when "adapted" is its
# interpolation with the base model (alpha < 1); "adapted+prompt" is the adapted model prompted with the term list
SYSTEM_ORDER = ("baseline", "baseline+prompt", "fine-tuned", "adapted", "adapted+prompt", "adapted+lm")
# (a, b) pairs compared with the paired bootstrap, b - a, when both scored the set
COMPARISONS = (("baseline", "adapted"), ("baseline+prompt", "adapted"), ("baseline", "baseline+prompt"),
               ("baseline", "fine-tuned"), ("fine-tuned", "adapted"), ("baseline", "adapted+prompt"),
               ("baseline+prompt", "adapted+prompt"), ("adapted", "adapted+prompt"), ("baseline", "adapted+lm"),
               ("adapted", "adapted+lm"))
NUM_EXAMPLES = 6  # aligned examples per set


def systems_of(payload: dict[str, Any]) -> list[str]:
    evaluations = payload["evaluations"]
    return [s for s in SYSTEM_ORDER if s in evaluations] + [s for s in evaluations if s not in SYSTEM_ORDER]


def sets_of(payload: dict[str, Any]) -> list[str]:
    """Every scored set: primary first, then in the order the systems list them, forgetting check last."""
    seen: dict[str, None] = {}
    if payload.get("primary"):
        seen[payload["primary"]] = None
    for system in systems_of(payload):
        seen.update(dict.fromkeys(payload["evaluations"][system]))
    forgetting = payload.get("forgetting")
    if forgetting in seen:
        seen.pop(forgetting)
        seen[forgetting] = None
    return [ref for ref in seen if any(ref in sets for sets in payload["evaluations"].values())]


def set_info(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """source/split -> {source, kind, engine} for every source of a resolved recipe (any split)."""
    out = {}
    for source in recipe.get("data", {}).get("sources", []):
        info = {"source": source.get("name"), "kind": source.get("kind", "corpus"), "engine": source.get("engine")}
        for split in ("train", "dev", "test"):
            out[f"{source.get('name')}/{split}"] = {**info, "split": split}
    return out


def eval_dir(run_dir: Path, system: str, ref: str) -> Path:
    """Where ``speechtl adapt`` writes the evaluation of ``system`` on set ``ref``."""
    return run_dir / "eval" / system / ref.replace("/", "-")


def subset_wer(eval_folder: Path, ids: set[str]) -> float:
    """WER of an evaluation (its folder: ``hypotheses.jsonl``) on the utterances ``ids`` only."""
    rows = [r for r in read_rows(eval_folder / "hypotheses.jsonl") if r["id"] in ids]
    words = sum(r["hits"] + r["substitutions"] + r["deletions"] for r in rows)
    return sum(r["substitutions"] + r["deletions"] + r["insertions"] for r in rows) / max(words, 1)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``hypotheses.jsonl``; a bad line is an error naming the file and line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
    return rows


def read_history(path: Path | str | None) -> list[dict[str, Any]]:
    """The rows of a training ``history.jsonl`` ([] when there is none)."""
    if path is None or not Path(path).is_file():
        return []
    return read_rows(Path(path))


def _errors(row: dict[str, Any]) -> int:
    return int(row["substitutions"]) + int(row["deletions"]) + int(row["insertions"])


def _examples(rows: dict[str, list[dict[str, Any]]], num: int) -> list[dict[str, Any]]:
    """Utterances where the first and the last system differ most (improvements first), then the
    last system's worst; each with every system's aligned hypothesis."""
    systems = list(rows)
    by_id = {s: {r["id"]: r for r in rows[s]} for s in systems}
    first, last = systems[0], systems[-1]
    ids = [r["id"] for r in rows[first] if all(r["id"] in by_id[s] for s in systems)]
    delta = {i: _errors(by_id[last][i]) - _errors(by_id[first][i]) for i in ids}
    improved = sorted((i for i in ids if delta[i] < 0), key=lambda i: (delta[i], i))
    worse = sorted((i for i in ids if delta[i] > 0), key=lambda i: (-delta[i], i))
    pick = improved[: num - min(len(worse), num // 3)]
    pick += worse[: num - len(pick)]
    rest = sorted((i for i in ids if i not in pick), key=lambda i: (-_errors(by_id[last][i]), i))
    pick += rest[: num - len(pick)]
    out = []
    for utt_id in pick:
        head = by_id[first][utt_id]
        out.append({
            "id": utt_id, "speaker": head.get("speaker"), "reference": head.get("reference_normalized"),
            "systems": {s: {"hypothesis": by_id[s][utt_id].get("hypothesis_normalized"),
                            "ops": by_id[s][utt_id].get("ops", []), "errors": _errors(by_id[s][utt_id])}
                        for s in systems},
        })
    return out


def enrich(payload: dict[str, Any], run_dir: Path | str, *, num_samples: int = 1000, seed: int = 0,
           level: float = 0.95) -> dict[str, Any]:
    """A copy of ``payload`` with ``sets``, ``comparisons``, ``examples``, ``eval_dirs`` and ``bootstrap``
    computed from ``run_dir/eval/<system>/<set>/hypotheses.jsonl`` (evaluations whose folder is missing are
    left out of those parts), and ``hallucinations``/``confusions`` added to metrics that lack them."""
    run_dir = Path(run_dir)
    out = dict(payload)
    out.pop("comparison_errors", None)  # recomputed below
    out["evaluations"] = {s: {ref: dict(m) for ref, m in sets.items()} for s, sets in payload["evaluations"].items()}
    out["sets"] = {ref: info for ref, info in set_info(payload.get("recipe", {})).items() if ref in sets_of(out)}
    out["bootstrap"] = {"num_samples": num_samples, "seed": seed, "level": level}
    out["comparisons"], out["examples"], out["eval_dirs"] = {}, {}, {}
    for ref in sets_of(out):
        rows: dict[str, list[dict[str, Any]]] = {}
        for system in systems_of(out):
            folder = eval_dir(run_dir, system, ref)
            if ref not in out["evaluations"][system] or not (folder / "hypotheses.jsonl").is_file():
                continue
            rows[system] = read_rows(folder / "hypotheses.jsonl")
            out["eval_dirs"].setdefault(system, {})[ref] = str(folder.relative_to(run_dir))
            metrics = out["evaluations"][system][ref]
            if "hallucinations" not in metrics:  # evaluations scored before metrics.json carried the views
                metrics["hallucinations"] = hallucinations(rows[system])
            if "confusions" not in metrics:
                metrics["confusions"] = confusions(rows[system])
        comparisons = []
        for a, b in COMPARISONS:
            if a in rows and b in rows:
                try:
                    result = paired_bootstrap(rows[a], rows[b], num_samples=num_samples, seed=seed, level=level)
                except ValueError as exc:  # e.g. eval folders left from a run on other data: say so, keep going
                    log.warning("report: no paired comparison %s vs %s on %s: %s", b, a, ref, exc)
                    out.setdefault("comparison_errors", []).append({"set": ref, "a": a, "b": b, "error": str(exc)})
                    continue
                comparisons.append({"a": a, "b": b, **result.to_json()})
        if comparisons:
            out["comparisons"][ref] = comparisons
        if rows:
            out["examples"][ref] = _examples(rows, NUM_EXAMPLES)
    return out


# ------------------------------------------------------------------ rows shared by report.md, report.html, compare


def comparison(payload: dict[str, Any], ref: str, a: str, b: str) -> dict[str, Any] | None:
    return next((c for c in payload.get("comparisons", {}).get(ref, []) if c["a"] == a and c["b"] == b), None)


def term_recall_of(metrics: dict[str, Any]) -> float | None:
    terms = metrics.get("terms")
    return terms.get("recall") if isinstance(terms, dict) else None


def relation(train: Iterable[Any], test: Iterable[Any]) -> dict[str, Any]:
    """How a test set's utterances relate to the training manifest's: real or synthetic, speakers and TTS
    engines seen in training or not (from each utterance's speaker and ``extra["engine"]``)."""
    train = list(train)
    test = list(test)
    train_speakers = {u.speaker for u in train if u.speaker is not None}
    train_engines = {u.extra.get("engine") for u in train} - {None}
    speakers = {u.speaker for u in test if u.speaker is not None}
    engines = sorted({u.extra.get("engine") for u in test} - {None})
    return {"speech": "synthetic" if engines else "real", "engines": engines, "speakers": len(speakers),
            "seen_speakers": len(speakers & train_speakers),
            "unseen_engines": [e for e in engines if e not in train_engines]}


def relation_text(rel: dict[str, Any]) -> str:
    """``real speech, unseen speaker``, ``synthetic speech: espeak, unseen TTS engine``, ..."""
    n, seen = rel["speakers"], rel["seen_speakers"]
    who = "speaker" if n == 1 else "speakers"
    if seen == 0:
        voices = f"unseen {who}" if rel["speech"] == "real" else f"held-out {'voice' if n == 1 else 'voices'}"
    else:
        voices = f"seen {who}" + (f" ({seen} of {n} in training)" if n > 1 else " (in training)")
    if rel["speech"] == "real":
        return f"real speech, {voices}"
    engines = ", ".join(rel["engines"])
    if rel["unseen_engines"]:
        return f"synthetic speech: {engines}, unseen TTS engine"
    return f"synthetic speech: {engines}, {voices} of a training engine"


def set_label(payload: dict[str, Any], ref: str) -> str:
    """``medical/test (primary; synthetic speech: kokoro, held-out voices of a training engine)``,
    ``es-co/test (forgetting check; real speech, unseen speaker)``."""
    tags = []
    if ref == payload.get("primary"):
        tags.append("primary")
    if ref == payload.get("forgetting"):
        tags.append("forgetting check")
    rel = payload.get("relations", {}).get(ref)
    if rel is not None:
        tags.append(relation_text(rel))
    else:  # reports written before relations were recorded
        info = payload.get("sets", {}).get(ref) or set_info(payload.get("recipe", {})).get(ref, {})
        if info.get("kind") == "synth":
            tags.append("synthetic speech" + (f": {info['engine']}" if info.get("engine") else ""))
    return f"{ref} ({'; '.join(tags)})" if tags else ref


def summary_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scored (set, system): WER and its CI, raw WER, CER, S/D/I, term recall, and against the
    baseline (if any) the WER ratio and the paired difference."""
    rows = []
    for ref in sets_of(payload):
        base = payload["evaluations"].get("baseline", {}).get(ref)
        for system in systems_of(payload):
            m = payload["evaluations"][system].get(ref)
            if m is None:
                continue
            vs = comparison(payload, ref, "baseline", system) if system != "baseline" else None
            rows.append({
                "set": ref, "label": set_label(payload, ref), "system": system, "num_utts": m.get("num_utts"),
                "wer": m.get("wer"), "wer_ci95": m.get("wer_ci95"), "raw_wer": (m.get("raw") or {}).get("wer"),
                "cer": m.get("cer"), "sdi": (m.get("substitutions"), m.get("deletions"), m.get("insertions")),
                "term_recall": term_recall_of(m),
                "ratio": m["wer"] / base["wer"] if system != "baseline" and base and base.get("wer") else None,
                "diff": vs,
                "hallucinations": (m.get("hallucinations") or {}).get("counts", {}).get("any"),
            })
    return rows
