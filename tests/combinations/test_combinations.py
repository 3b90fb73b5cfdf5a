"""Every combination of features either works or is refused before anything is written.

The families, read from their registries so that a new plug-in joins by being
registered: every algorithm, every attack, every defence, every privacy mode, every
device-profile source (with over-selection, a deadline and availability traces), the compressor (``comm.compressor``) and its compressed broadcast (``comm.downlink``), the
client selector (``selection.name``), the asynchronous server (``asynchronous.mode``), the
parties' own test data (auto, split, match), held-out parties (none, one) and the local
engine's two modes (one party at a time, batched cohorts). A pairwise covering array
(``covering.py``) puts every pair of levels of every two families in some run; each run
is two tiny rounds through the CLI, and must either finish (``summary.json`` status
``finished`` after two rounds) or be refused with one line on stderr and exit 2 with
nothing written. A traceback, a crash after training, or a refusal after files were
written fails it. About 225 runs: slow-marked (``.ci/run`` runs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from covering import covers_all_pairs, pairwise

import attacks
import strategies
from fedsim.asynchronous.servers import ASYNC_SERVERS
from fedsim.cli import main
from fedsim.comm import codecs
from fedsim.privacy.compat import MODES as PRIVACY_MODES
from fedsim.system.sources import SOURCES
from strategies import defences
from strategies.selection import SELECTORS

pytest.importorskip("dp_accounting", reason="the privacy modes need the privacy extra: pip install -e '.[privacy]'")
pytest.importorskip("opacus", reason="privacy.mode dpsgd needs the privacy extra: pip install -e '.[privacy]'")

FACTORS = {
    "strategy": strategies.available(),
    "attack": attacks.available(),
    "defence": defences.available(),
    "privacy": list(PRIVACY_MODES),
    "system": SOURCES.available(),
    "compressor": codecs.available(),
    "downlink": [False, True],
    "asynchronous": ASYNC_SERVERS.available(),
    "local_test": ["auto", "split", "match"],
    "holdout": [0, 1],
    "batch_clients": ["off", "on"],
    "selection": SELECTORS.available(),
}
ROWS = pairwise(FACTORS)


def test_the_rows_cover_every_pair():
    assert covers_all_pairs(ROWS, FACTORS)
    assert len(ROWS) < 300  # pairs, not the product


def _system(source: str, tmp_path: Path) -> dict:
    """Each built-in source with what it needs (tiny trace files); a source of your own at its defaults."""
    if source == "synthetic":  # over-selection and a deadline no reply reaches
        return {"source": source, "over_selection": 1.3, "round_deadline": 1e6}
    if source == "fedscale":  # every client online 90 s of every 100
        dev, trace = tmp_path / "device.json", tmp_path / "trace.json"
        dev.write_text(json.dumps({i: {"computation": 5.0 + i, "communication": 900.0} for i in range(1, 11)}))
        trace.write_text(json.dumps({i: {"active": [0], "inactive": [90], "finish_time": 100} for i in range(1, 11)}))
        return {"source": source, "device_file": str(dev), "trace_file": str(trace)}
    if source == "file":
        table = tmp_path / "devices.csv"
        table.write_text("ms_per_sample,upload_kbps,download_kbps\n" + "".join(f"{3 + p},800,4000\n" for p in range(8)))
        return {"source": source, "path": str(table)}
    return {"source": source}


def _config(row: dict, tiny, needs, tmp_path: Path) -> dict:
    # 8 parties: a cohort of 8 (7 with a held-out party) lets Bulyan assume the one
    # malicious party an attack's default fraction 0.2 gives
    sections = {
        "data": {"n_train": 480, "n_test": 120},
        "partition": {"n_parties": 8, "min_size": 20},
        "train": {"epochs": 1},
        "strategy": {"name": row["strategy"]},
        "attack": {"name": row["attack"]},
        "defence": {"name": row["defence"]},
        "privacy": {"mode": row["privacy"]},
        "system": _system(row["system"], tmp_path),
        "comm": {"compressor": row["compressor"], "downlink": row["downlink"]},
        "selection": {"name": row["selection"]},
        # a buffer the 8 parties can fill (FedBuff's default K = 10 is refused with 8)
        "asynchronous": {
            "mode": row["asynchronous"],
            **({"buffer_size": 2} if row["asynchronous"] == "fedbuff" else {}),
        },
        "eval": {"local_test": row["local_test"], "train_sample": 0, "model_heterogeneity": False},
        "federation": {"rounds": 2, "holdout_parties": row["holdout"]},
        "engine": {"batch_clients": row["batch_clients"]},
        "output": {"plots": False, "checkpoint_every": 0},
    }
    if row["privacy"] != "none":
        sections["privacy"]["noise_multiplier"] = 0.5
    return tiny(**needs(row["strategy"], **sections))


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=["-".join(str(v) for v in r.values()) for r in ROWS])
def test_a_combination_runs_or_is_refused_before_anything_is_written(tmp_path, tiny, needs, capsys, row):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(row, tiny, needs, tmp_path)))
    out = tmp_path / "run"
    capsys.readouterr()
    rc = main(["run", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith(("WARNING", "INFO"))]
    if rc == 2:
        assert len(err) == 1 and err[0].startswith("fedsim: error: "), err
        assert not out.exists() or not any(out.iterdir()), (
            f"refused after writing {sorted(p.name for p in out.iterdir())}"
        )
        return
    assert rc == 0, (rc, err)
    summary = json.loads((out / "summary.json").read_text())
    rounds = [json.loads(line)["round"] for line in Path(out / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "finished" and rounds == [1, 2], (summary["status"], rounds)
