"""A plug-in of each of the thirteen kinds, with one parameter of its own, is one file.

The test writes thirteen throwaway plug-in files (an algorithm, an attack, a defence, a
data set, a model, a partition scheme, an engine, a tracker, a privacy mode, a
device-profile source, a compressor, a client selector, an asynchronous server) into a
fresh package outside fedsim, names the package in ``FEDSIM_PLUGINS`` (as a user
would: nothing else is edited, no import line anywhere), and shows for each kind that
the plug-in is listed (``fedsim plugins KIND``), that its parameter is validated from
its declaration (out of range: an error naming the key and the allowed range; a
misspelt key: did you mean), and that a tiny run uses it.
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import fedsim
from fedsim.cli import main
from fedsim.config import plugins as sections
from fedsim.config.load import load_config
from fedsim.data import clear_cache
from fedsim.errors import ConfigError
from fedsim.util.plugins import ENV, forget_extra_plugins
from partitioners import load_dataidxs

PKG = "fedsim_onefile_plugins"


@dataclass(frozen=True)
class Kind:
    """One kind's throwaway plug-in: its file, name, section, chooser and parameter."""

    cli: str  # fedsim plugins KIND
    file: str
    name: str
    section: str
    key: str
    bad: object  # out of range
    allowed: str  # what the error says is allowed
    source: str  # the file's text


HEAD = "from dataclasses import dataclass\n\nfrom fedsim.util.params import hp\n\nUSED = []  # what the run handed this plug-in\n"

KINDS = [
    Kind(
        "datasets",
        "blobs",
        "onefile-blobs",
        "data",
        "spread",
        20.0,
        "(0, 10]",
        """
        import torch
        from fedsim.schema.sections import DataConfig
        from fedsim.data import DatasetBundle, register

        @dataclass
        class BlobsParams(DataConfig):
            spread: float = hp(1.0, gt=0, le=10, help="std of each class's blob", source="this test")

        def _draw(n, spread, g):
            y = torch.arange(n) % 2
            return (3.0 * y[:, None] + spread * torch.randn(n, 4, generator=g)).float(), y.long()

        @register("onefile-blobs", summary="two Gaussian blobs", paper="-", Params=BlobsParams, spec=lambda c: ((4,), 2))
        def load(cfg, seed, n_parties):
            USED.append(cfg.spread)
            g = torch.Generator().manual_seed(seed)
            x, y = _draw(240, cfg.spread, g)
            xt, yt = _draw(60, cfg.spread, g)
            return DatasetBundle("onefile-blobs", x, y, xt, yt, 2, None, None, False)
        """,
    ),
    Kind(
        "models",
        "linear",
        "onefile-linear",
        "model",
        "width",
        0,
        "[1, 64]",
        """
        import math
        from torch import nn
        from fedsim.schema.sections import ModelConfig
        from fedsim.models import register

        @dataclass
        class LinearParams(ModelConfig):
            width: int = hp(8, ge=1, le=64, help="the hidden layer's width", source="this test")

        @register("onefile-linear", summary="one hidden layer", paper="-", Params=LinearParams)
        def build(cfg, input_shape, num_classes):
            USED.append(cfg.width)
            return nn.Sequential(nn.Flatten(1), nn.Linear(math.prod(input_shape), cfg.width), nn.ReLU()), cfg.width
        """,
    ),
    Kind(
        "schemes",
        "strides",
        "onefile-strides",
        "partition",
        "stride",
        5,
        "[1, 4]",
        """
        import numpy as np
        from fedsim.schema.sections import PartitionConfig
        from partitioners import register

        @dataclass
        class StridesParams(PartitionConfig):
            stride: int = hp(1, ge=1, le=4, help="runs of this many samples go to one party", source="this test")

        @register("onefile-strides", sorted_output=True, summary="runs dealt in turn", paper="-", Params=StridesParams)
        def strides(labels, n_parties, rng, *, stride):
            USED.append(stride)
            idx = np.arange(labels.size)
            return {j: idx[(idx // stride) % n_parties == j] for j in range(n_parties)}
        """,
    ),
    Kind(
        "strategies",
        "damped",
        "onefile-damped",
        "strategy",
        "damping",
        1.5,
        "(0, 1]",
        """
        from strategies import Algorithm, StrategyParams, register

        @dataclass
        class DampedParams(StrategyParams):
            damping: float = hp(1.0, gt=0, le=1, help="a hyperparameter the server reads", source="this test")

        @register
        class Damped(Algorithm):
            name = "onefile-damped"
            summary = "FedAvg that records its hyperparameter"
            paper = "-"
            Params = DampedParams

            def server(self, params):
                USED.append(params.damping)
                return super().server(params)
        """,
    ),
    Kind(
        "attacks",
        "shrink",
        "onefile-shrink",
        "attack",
        "gain",
        6.0,
        "(0, 5]",
        """
        from attacks import Attack, MaliciousParams, register

        @dataclass
        class ShrinkParams(MaliciousParams):
            gain: float = hp(0.5, gt=0, le=5, help="the malicious update is gain times its own", source="this test")

        @register
        class Shrink(Attack):
            name = "onefile-shrink"
            summary = "send gain times the own update"
            paper = "-"
            Params = ShrinkParams

            def poisons_replies(self, params):
                return True

            def poison_replies(self, params, ctx):
                USED.append((params.gain, len(ctx.malicious)))
                for o in ctx.malicious:
                    ctx.space.replace(o, params.gain * ctx.space.vector(o.state))
        """,
    ),
    Kind(
        "defences",
        "count",
        "onefile-count",
        "defence",
        "limit",
        -1.0,
        "> 0",
        """
        from strategies.defences import Defence, DefenceParams, register
        from strategies.replies import ReplyRule

        @dataclass
        class CountParams(DefenceParams):
            limit: float = hp(100.0, gt=0, help="a number the rule reports", source="this test")

        class CountRule(ReplyRule):
            def __init__(self, limit):
                self.limit = limit

            def apply(self, server_round, global_state, outcomes, setup):
                USED.append((server_round, len(outcomes)))
                return {"onefile_limit": self.limit}

        @register
        class Count(Defence):
            name = "onefile-count"
            summary = "report a number each round"
            paper = "-"
            Params = CountParams

            def rule(self, params):
                return CountRule(params.limit)
        """,
    ),
    Kind(
        "engines",
        "inline",
        "onefile-inline",
        "engine",
        "tag",
        10,
        "[0, 9]",
        """
        from fedsim.schema.sections import EngineConfig
        from fedsim.engine import Engine, get_engine, register

        @dataclass
        class InlineParams(EngineConfig):
            tag: int = hp(0, ge=0, le=9, help="a label the engine reads", source="this test")

        @register
        class Inline(Engine):
            name = "onefile-inline"
            summary = "the local engine, reading its own key first"
            paper = "-"
            Params = InlineParams

            def run(self, settings, hooks=None):
                USED.append(settings.config.engine.tag)
                return get_engine("local")(settings, hooks)
        """,
    ),
    Kind(
        "trackers",
        "rows",
        "onefile-rows",
        "output",
        "every",
        0,
        "[1, 10]",
        """
        from fedsim.schema.sections import OutputConfig
        from fedsim.trackers import Tracker, register

        @dataclass
        class RowsParams(OutputConfig):
            every: int = hp(1, ge=1, le=10, help="keep every k-th round", source="this test")

        @register
        class Rows(Tracker):
            name = "onefile-rows"
            summary = "keeps the rounds it is fed"
            paper = "-"
            Params = RowsParams

            def start(self, run):
                self.every = run.config.output.every
                return {}

            def log_round(self, row):
                if row["round"] % self.every == 0:
                    USED.append(row["round"])
        """,
    ),
    Kind(
        "privacy-modes",
        "clip",
        "onefile-client-clip",
        "privacy",
        "shrink",
        2.0,
        "(0, 1]",
        """
        from flwr.clientapp.mod import fixedclipping_mod
        from fedsim.privacy.modes import register
        from fedsim.privacy.modes.client_level import ClientLevel, ClientLevelParams

        @dataclass
        class ClipParams(ClientLevelParams):
            shrink: float = hp(1.0, gt=0, le=1, help="a number the clients' mod reads", source="this test")

        @register
        class ClientClip(ClientLevel):
            name = "onefile-client-clip"
            summary = "client-fixed, its mod reading its own key"
            Params = ClipParams
            client_side = True

            def client_mod(self, params):
                def mod(msg, context, call_next):
                    USED.append(params.shrink)
                    return fixedclipping_mod(msg, context, call_next)

                return mod
        """,
    ),
    Kind(
        "compressors",
        "halves",
        "onefile-halves",
        "comm",
        "factor",
        3.0,
        "(0, 2]",
        """
        import torch
        from fedsim.comm.codecs import Compressor, register, split
        from fedsim.schema.sections import CommConfig

        @dataclass
        class HalvesParams(CommConfig):
            factor: float = hp(1.0, gt=0, le=2, help="the update is sent times this, as float16", source="this test")

        @register
        class Halves(Compressor):
            name = "onefile-halves"
            summary = "the update times a factor, as float16"
            Params = HalvesParams

            def encode(self, params, updates, bases, gen):
                USED.append(params.factor)
                return {"@h": (torch.cat(updates) * params.factor).to(torch.float16).numpy()}

            def decode(self, params, payload, bases):
                return split(payload["@h"].double() / params.factor, [w.numel() for w in bases])

            def formula(self, params, sizes):
                return 2 * sum(sizes)
        """,
    ),
]
KINDS.append(
    Kind(
        "system-sources",
        "flat",
        "onefile-flat",
        "system",
        "speed",
        200.0,
        "(0, 100]",
        """
        from fedsim.system.profiles import make_profiles
        from fedsim.system.sources import DeviceSource, SystemParams, register

        @dataclass
        class FlatParams(SystemParams):
            speed: float = hp(10.0, gt=0, le=100, help="ms per sample of every party", source="this test")

        @register
        class Flat(DeviceSource):
            name = "onefile-flat"
            summary = "every party the same device"
            paper = "-"
            Params = FlatParams

            def profiles(self, params, n_parties, seed):
                USED.append(params.speed)
                return make_profiles(n_parties, [params.speed] * n_parties, [1e3] * n_parties, [1e3] * n_parties, "flat")
        """,
    )
)
KINDS.append(
    Kind(
        "selectors",
        "lowest",
        "onefile-lowest",
        "selection",
        "keep",
        0,
        "[1, 8]",
        """
        from strategies.selection import SelectionParams, Selector, register

        @dataclass
        class LowestParams(SelectionParams):
            keep: int = hp(1, ge=1, le=8, help="train the m lowest party ids, at most keep", source="this test")

        @register
        class Lowest(Selector):
            name = "onefile-lowest"
            summary = "the lowest party ids"
            paper = "-"
            Params = LowestParams

            def select(self, params, pool):
                USED.append((pool.round, params.keep))
                return pool.parties[: min(pool.m, params.keep)]
        """,
    )
)
KINDS.append(
    Kind(
        "async-servers",
        "half",
        "onefile-half",
        "asynchronous",
        "weight",
        2.0,
        "(0, 1]",
        """
        from collections import OrderedDict
        from fedsim.asynchronous.servers import AsyncServer, register
        from fedsim.schema.sections import AsyncConfig

        @dataclass
        class HalfParams(AsyncConfig):
            weight: float = hp(0.5, gt=0, le=1, help="each arrival's share of the new model", source="this test")

        @register
        class Half(AsyncServer):
            name = "onefile-half"
            summary = "mix each arrival in with a fixed weight"
            paper = "-"
            Params = HalfParams

            def step(self, params, global_state, arrivals, state):
                USED.append((params.weight, len(arrivals)))
                out = OrderedDict(global_state)
                for a in arrivals:
                    for k, v in a.outcome.state.items():
                        if v.is_floating_point():
                            out[k] = (1 - params.weight) * out[k] + params.weight * v
                return out
        """,
    )
)
BY_CLI = {k.cli: k for k in KINDS}


@pytest.fixture(scope="module")
def onefile(tmp_path_factory):
    """The thirteen plug-in files in a package of their own, named in FEDSIM_PLUGINS; all gone after."""
    root = tmp_path_factory.mktemp("plugins")
    (root / PKG).mkdir()
    (root / PKG / "__init__.py").write_text("")
    for k in KINDS:
        (root / PKG / f"{k.file}.py").write_text(HEAD + textwrap.dedent(k.source))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        mp.setenv(ENV, PKG)
        yield {k.cli: k for k in KINDS}
    for k in KINDS:
        sections.SECTIONS[k.section].registry.unregister(k.name)
    for mod in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
        del sys.modules[mod]
    forget_extra_plugins(PKG)
    clear_cache()


def used(kind: Kind) -> list:
    return sys.modules[f"{PKG}.{kind.file}"].USED


def choose(kind: Kind, **own) -> dict:
    """The sections that choose ``kind``'s plug-in (with ``own`` keys of it)."""
    chooser = sections.SECTIONS[kind.section].chooser
    if kind.section == "output":
        return {"output": {"plots": False, "trackers": [kind.name], **own}}
    return {kind.section: {chooser: kind.name, **own}}


@pytest.mark.parametrize("kind", KINDS, ids=[k.cli for k in KINDS])
def test_the_plugin_is_listed_with_its_parameter(onefile, kind, capsys):
    assert kind.name in sections.SECTIONS[kind.section].registry.available()
    assert main(["plugins", kind.cli, kind.name]) == 0
    out = capsys.readouterr().out
    assert f"{kind.section}.{kind.key} = " in out and kind.name in out
    assert main(["plugins"]) == 0
    assert f"  {kind.name}: " in capsys.readouterr().out


@pytest.mark.parametrize("kind", KINDS, ids=[k.cli for k in KINDS])
def test_its_parameter_is_validated_from_its_declaration(onefile, kind, tiny):
    with pytest.raises(ConfigError) as bad:
        load_config(tiny(**choose(kind, **{kind.key: kind.bad})))
    assert f"config key '{kind.section}.{kind.key}' = {kind.bad!r} is out of range" in str(bad.value)
    assert str(bad.value).endswith(f"allowed: {kind.allowed}")
    typo = kind.key[:-1]
    with pytest.raises(ConfigError) as unknown:
        load_config(tiny(**choose(kind, **{typo: 1})))
    assert f"'{kind.section}.{typo}'" in str(unknown.value) and "(did you mean '" in str(unknown.value)


def test_another_plugins_key_is_refused_unless_at_its_default(onefile, tiny):
    blobs = BY_CLI["datasets"]
    cfg = load_config(tiny(data={"dataset": "synthetic-images", "spread": 1.0}))  # its default: accepted
    assert cfg.data.dataset == "synthetic-images" and not hasattr(cfg.data, "spread")
    with pytest.raises(ConfigError, match=r"'data.spread' is read only with data.dataset onefile-blobs, not"):
        load_config(tiny(data={"dataset": "synthetic-images", "spread": 2.0}))
    assert blobs.name in fedsim.load_config(tiny(data={"dataset": blobs.name})).data.dataset


def _base(tiny) -> dict:
    data, model, scheme = BY_CLI["datasets"], BY_CLI["models"], BY_CLI["schemes"]
    return tiny(
        data={"dataset": data.name, "spread": 0.5},
        model={"name": model.name, "width": 5},
        partition={"scheme": scheme.name, "stride": 3, "n_parties": 4},
        train={"epochs": 1},
        eval={"model_heterogeneity": False},
    )


def test_a_tiny_run_uses_a_data_set_model_scheme_algorithm_attack_defence_engine_and_tracker(onefile, tiny, tmp_path):
    cfg = _base(tiny)
    cfg.update(choose(BY_CLI["strategies"], damping=0.25), **choose(BY_CLI["attacks"], gain=2.0, fraction=0.25))
    cfg.update(choose(BY_CLI["defences"], limit=7.0), **choose(BY_CLI["engines"], tag=4))
    cfg.update(choose(BY_CLI["trackers"], every=2))
    r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["rounds"] == 2
    k = onefile
    assert used(k["datasets"])[-1] == 0.5 and used(k["models"])[-1] == 5 and used(k["schemes"])[-1] == 3
    assert used(k["strategies"])[-1] == 0.25 and used(k["engines"])[-1] == 4 and used(k["trackers"]) == [2]
    assert used(k["attacks"])[-2:] == [(2.0, 1), (2.0, 1)]  # one malicious party of 4, both rounds
    assert [r for r, _ in used(k["defences"])[-2:]] == [1, 2]
    rows = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["onefile_limit"] for row in rows] == [7.0, 7.0]
    model = torch.load(r.run_dir / "model.pt", weights_only=True)
    assert tuple(model["encoder.1.weight"].shape) == (5, 4)  # width 5 over the blobs' 4 features
    labels = np.arange(240) % 2
    parts = load_dataidxs(r.run_dir / "dataidxs.npz", labels)
    assert parts[1].tolist() == [i for i in range(240) if (i // 3) % 4 == 1]


def test_a_tiny_run_uses_a_privacy_mode(onefile, tiny, tmp_path):
    pytest.importorskip("dp_accounting", reason="privacy modes need the privacy extra: pip install -e '.[privacy]'")
    cfg = _base(tiny)
    cfg.update(choose(BY_CLI["privacy-modes"], shrink=0.5, noise_multiplier=0.5))
    r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["epsilon"] > 0
    assert used(onefile["privacy-modes"]) == [0.5] * 8  # each of 4 parties, in both rounds (q = 1)


def test_a_tiny_run_uses_a_device_profile_source(onefile, tiny, tmp_path):
    cfg = _base(tiny)
    cfg.update(choose(BY_CLI["system-sources"], speed=4.0))
    r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["sim_time_s"] > 0
    assert used(onefile["system-sources"])[-1] == 4.0
    rows = [json.loads(line) for line in (r.run_dir / "clients.jsonl").read_text().splitlines()]
    assert all(row["sim_compute_s"] == 3.0 * 32 * row["steps"] * 4.0 / 1000 for row in rows if row["stage"] == "train")


def test_a_tiny_run_uses_a_client_selector(onefile, tiny, tmp_path):
    cfg = _base(tiny)
    cfg.update(choose(BY_CLI["selectors"], keep=1), federation={"rounds": 2, "fraction_fit": 0.5})
    r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["status"] == "finished"
    assert used(onefile["selectors"]) == [(1, 1), (2, 1)]
    rows = [json.loads(line) for line in (r.run_dir / "clients.jsonl").read_text().splitlines()]
    assert [row["party"] for row in rows if row["stage"] == "train"] == [0, 0]


def test_a_tiny_run_uses_a_compressor(onefile, tiny, tmp_path):
    cfg = _base(tiny)
    cfg.update(choose(BY_CLI["compressors"], factor=0.5))
    r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["status"] == "finished"
    assert used(onefile["compressors"]) == [0.5] * 8  # each of 4 parties, in both rounds
    rows = [json.loads(line) for line in (r.run_dir / "clients.jsonl").read_text().splitlines()]
    n = sum(v.numel() for v in torch.load(r.run_dir / "model.pt", weights_only=True).values())
    assert all(2 * n < row["bytes_up"] < 2 * n + 1000 for row in rows)  # 2 bytes a coordinate, headers


def test_a_tiny_run_uses_an_asynchronous_server(onefile, tiny, tmp_path):
    cfg = _base(tiny)
    cfg.update(choose(BY_CLI["async-servers"], weight=0.25, concurrency=2), system={"source": "synthetic"})
    r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["rounds"] == 2
    assert used(onefile["async-servers"]) == [(0.25, 1), (0.25, 1)]  # one arrival a step, two steps
    rows = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["updates_applied"] for row in rows] == [1, 1]
