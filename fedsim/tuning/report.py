"""``tune.md``, ``trials.csv`` and the study's figures (Optuna's own matplotlib plots)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsim.sweeps import format_mean_std
from fedsim.sweeps.tables import md_row, to_csv
from fedsim.tuning.spec import TuneSpec

log = logging.getLogger(__name__)

FIGURES = {
    "optimization_history.png": "plot_optimization_history",
    "param_importances.png": "plot_param_importances",
}


def write_figures(study, out: Path) -> dict[str, str]:
    """Optuna's optimisation history and parameter importance (fANOVA, Optuna's
    default) as PNG in ``out``; file name -> "" when written, or why it was not."""
    import matplotlib
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    notes: dict[str, str] = {}
    for fname, fn in FIGURES.items():
        before = set(plt.get_fignums())
        try:
            # Optuna's plots set pyplot's style for the process: keep it to these figures
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                fig = getattr(ovm, fn)(study).figure
                fig.set_size_inches(7, 4.5)
                fig.tight_layout()
                fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            notes[fname] = ""
        except Exception as exc:  # too few completed trials for importance, ...
            notes[fname] = " ".join(str(exc).split()) or type(exc).__name__
            for num in set(plt.get_fignums()) - before:  # only the figure Optuna opened, not the caller's
                plt.close(num)
    return notes


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def trial_rows(trials: Sequence[Mapping[str, Any]], spec: TuneSpec) -> list[dict]:
    rows = []
    for t in trials:
        row = {"number": t["number"], "state": t["state"]}
        row.update({p.key: (t.get("params") or {}).get(p.key) for p in spec.space})
        row.update({spec.select_by: t.get("value"), "pruned_step": t.get("pruned_step"), "error": t.get("error")})
        row["runs"] = " ".join(t.get("runs") or [])
        rows.append(row)
    return rows


def tune_markdown(
    spec: TuneSpec,
    trials: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any] | None,
    final: Mapping[str, Any] | None,
    figure_notes: Mapping[str, str],
) -> str:
    """The tune's report: the space, the chosen setting, its test result, every trial."""
    how = (
        f"{spec.folds}-fold cross-validation on the training data (held-out-fold {spec.select_by[4:]})"
        if spec.folds
        else f"local validation ({spec.select_by}, the parties' held-out data; no test evaluation during tuning)"
    )
    sampler = spec.sampler[0] + (f" {spec.sampler[1]}" if spec.sampler[1] else "")
    pruner = spec.pruner[0] + (f" {spec.pruner[1]}" if spec.pruner[1] else "")
    states = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
    lines = [
        f"# {spec.name}: tuning",
        "",
        f"{len(trials)} trials ({', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items()))}); "
        f"sampler {sampler} (seed {spec.seed}), pruner {pruner}; selection by {how}, "
        f"{'minimised' if spec.minimize else 'maximised'}.",
        "",
        md_row(["key", "searched"]),
        md_row(["---", "---"]),
        *[md_row([f"`{p.key}`", p.describe()]) for p in spec.space],
        "",
    ]
    if best is None:
        lines += ["No trial completed: no setting was chosen and nothing was tested.", ""]
    else:
        lines += [
            f"## Chosen setting (trial {best['number']}, {spec.select_by} {_fmt(best['value'])})",
            "",
            md_row(["key", "value"]),
            md_row(["---", "---:"]),
            *[md_row([f"`{k}`", _fmt(v)]) for k, v in best["params"].items()],
            "",
        ]
    if final is not None:
        diverged = list(final.get("diverged") or [])  # seeds whose final run diverged: in the mean, marked
        per_seed = ", ".join(
            f"seed {s}: {100 * a:.2f}" + (" †" if s in diverged else "")
            for s, a in final.get("per_seed", [])
            if a is not None
        )
        mark = f" † ({len(diverged)} diverged)" if diverged else ""
        lines += [
            "## Test result",
            "",
            f"The chosen setting retrained on all the training data ({final['what']}) and tested once "
            f"after its last round, seeds {final['seeds']}: test accuracy (%) "
            f"**{format_mean_std(final.get('test_mean'), final.get('test_std'))}**{mark} "
            f"(mean ± sample std; {per_seed}). Runs in `{final['dir']}/`.",
            "",
        ]
        if diverged:
            lines += ["† the training of these seeds' runs diverged (status 'diverged' in the final runs).", ""]
    for fname, note in figure_notes.items():
        title = fname.removesuffix(".png").replace("_", " ")
        lines += [f"![{title}](figures/{fname})" if not note else f"({title}: not drawn: {note})", ""]
    lines += ["## Trials", ""]
    keys = [p.key for p in spec.space]
    lines.append(md_row(["trial", "state", *keys, spec.select_by, "stopped at step"]))
    lines.append(md_row(["---:", "---", *["---:"] * len(keys), "---:", "---:"]))
    for t in trials:
        params = t.get("params") or {}
        lines.append(
            md_row(
                [
                    str(t["number"]),
                    t["state"].lower() + (f" ({t['error']})" if t.get("error") else ""),
                    *[_fmt(params.get(k)) for k in keys],
                    _fmt(t.get("value")),
                    _fmt(t.get("pruned_step")),
                ]
            )
        )
    return "\n".join(lines) + "\n"


def trials_csv(trials: Sequence[Mapping[str, Any]], spec: TuneSpec) -> str:
    return to_csv(trial_rows(trials, spec))
