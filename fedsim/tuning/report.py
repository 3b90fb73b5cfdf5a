"""``tune.md``, ``trials.csv`` and the study's figures (Optuna's own matplotlib plots)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsim.sweeps.tables import md_row, to_csv
from fedsim.tuning.spec import TuneSpec
from fedsim.util.formatting import diverged_mark, format_mean_std, format_percent, format_value

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
    """A trial's value or parameter in a cell: four significant digits (a learning rate of 0.0123)."""
    return format_value(v, ".4g", "-")


def trial_rows(trials: Sequence[Mapping[str, Any]], spec: TuneSpec) -> list[dict]:
    """trials.csv's rows: a trial's number, state, parameters, value, pruning step, error and runs."""
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
    lines = _overview(spec, trials)
    lines += _chosen_section(spec, best)
    lines += _test_section(final)
    for fname, note in figure_notes.items():
        title = fname.removesuffix(".png").replace("_", " ")
        lines += [f"![{title}](figures/{fname})" if not note else f"({title}: not drawn: {note})", ""]
    lines += _trials_section(spec, trials)
    return "\n".join(lines) + "\n"


def _overview(spec: TuneSpec, trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """The title, the trials by state, how they were drawn and selected, and the space searched."""
    how = (
        f"{spec.folds}-fold cross-validation on the training data (held-out-fold {spec.select_by[4:]})"
        if spec.folds
        else f"local validation ({spec.select_by}, the parties' held-out data; no test evaluation during tuning)"
    )
    sampler = spec.sampler[0] + (f" {spec.sampler[1]}" if spec.sampler[1] else "")
    pruner = spec.pruner[0] + (f" {spec.pruner[1]}" if spec.pruner[1] else "")
    states: dict[str, int] = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
    return [
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


def _chosen_section(spec: TuneSpec, best: Mapping[str, Any] | None) -> list[str]:
    """The chosen trial's parameters, or that no trial completed."""
    if best is None:
        return ["No trial completed: no setting was chosen and nothing was tested.", ""]
    return [
        f"## Chosen setting (trial {best['number']}, {spec.select_by} {_fmt(best['value'])})",
        "",
        md_row(["key", "value"]),
        md_row(["---", "---:"]),
        *[md_row([f"`{k}`", _fmt(v)]) for k, v in best["params"].items()],
        "",
    ]


def _test_section(final: Mapping[str, Any] | None) -> list[str]:
    """The chosen setting's test accuracy after retraining, per seed and as mean ± std."""
    if final is None:
        return []
    diverged = list(final.get("diverged") or [])  # seeds whose final run diverged: in the mean, marked
    per_seed = ", ".join(
        f"seed {s}: {format_percent(a)}" + (" †" if s in diverged else "")
        for s, a in final.get("per_seed", [])
        if a is not None
    )
    lines = [
        "## Test result",
        "",
        f"The chosen setting retrained on all the training data ({final['what']}) and tested once "
        f"after its last round, seeds {final['seeds']}: test accuracy (%) "
        f"**{format_mean_std(final.get('test_mean'), final.get('test_std'))}**{diverged_mark(len(diverged))} "
        f"(mean ± sample std; {per_seed}). Runs in `{final['dir']}/`.",
        "",
    ]
    if diverged:
        lines += ["† the training of these seeds' runs diverged (status 'diverged' in the final runs).", ""]
    return lines


def _trials_section(spec: TuneSpec, trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """A row per trial: its state (and error), parameters, value and the step it was stopped at."""
    keys = [p.key for p in spec.space]
    lines = ["## Trials", ""]
    lines.append(md_row(["trial", "state", *keys, spec.select_by, "stopped at step"]))
    lines.append(md_row(["---:", "---", *["---:"] * len(keys), "---:", "---:"]))
    for t in trials:
        params = t.get("params") or {}
        state = t["state"].lower() + (f" ({t['error']})" if t.get("error") else "")
        values = [_fmt(params.get(k)) for k in keys]
        lines.append(md_row([str(t["number"]), state, *values, _fmt(t.get("value")), _fmt(t.get("pruned_step"))]))
    return lines


def trials_csv(trials: Sequence[Mapping[str, Any]], spec: TuneSpec) -> str:
    """trials.csv's text."""
    return to_csv(trial_rows(trials, spec))
