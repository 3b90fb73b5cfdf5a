"""The one plug-in mechanism (fedsim/util/plugins.py) itself: what a registry refuses,
how it names what it lacks, where it finds plug-ins, and the README tables it makes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from fedsim import data, listing, models
from fedsim.config import plugins as sections
from fedsim.config.load import from_yaml_text, load_config
from fedsim.errors import ConfigError
from fedsim.schema.identity import to_yaml
from fedsim.schema.sections import DataConfig, OutputConfig
from fedsim.trackers import Tracker
from fedsim.trackers.base import TRACKERS
from fedsim.util.params import hp
from fedsim.util.plugins import ENV, Plugin, Registry, load_extra_plugins

ROOT = Path(__file__).resolve().parents[2]


def test_every_kind_is_one_registry_of_the_one_mechanism():
    assert {s.registry.section for s in sections.SECTIONS.values()} == set(sections.SECTIONS)
    assert all(isinstance(s.registry, Registry) for s in sections.SECTIONS.values())
    assert set(listing.KINDS.values()) == set(sections.SECTIONS)


def _registry() -> Registry:
    return Registry("widget", "fedsim.util", section="data", chooser="dataset", base=DataConfig)


def _plugin(name: str, params: type = DataConfig, reads: tuple[str, ...] = ()) -> Plugin:
    class Widget(Plugin):
        Params = params

    Widget.name, Widget.reads = name, reads
    return Widget()


def test_an_unknown_name_names_the_nearest_and_the_allowed():
    reg = _registry()
    reg.add(_plugin("alpha"), "tests")
    reg.add(_plugin("beta"), "tests")
    with pytest.raises(ValueError, match=r"^unknown widget 'alpah' \(did you mean 'alpha'\?\); allowed: alpha, beta$"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.add(_plugin("alpha"), "elsewhere")


def test_a_declaration_that_is_incomplete_is_refused_at_registration():
    @dataclass
    class Undeclared(DataConfig):
        spread: float = 1.0  # not hp(...): no range, no meaning

    @dataclass
    class OtherDefault(DataConfig):
        n_train: int = hp(7, ge=1, help="a common key declared again", source="-")

    reg = _registry()
    with pytest.raises(TypeError, match=r"Undeclared.spread is not declared with fedsim.util.params.hp"):
        reg.add(_plugin("a", Undeclared), "tests")
    with pytest.raises(TypeError, match=r"declares data.n_train with default 7; DataConfig has 5000"):
        reg.add(_plugin("b", OtherDefault), "tests")
    with pytest.raises(TypeError, match=r"reads data.spread, which is not a common key"):
        reg.add(_plugin("c", reads=("spread",)), "tests")
    with pytest.raises(TypeError, match="must subclass DataConfig"):
        reg.add(_plugin("d", OutputConfig), "tests")


def test_a_plugin_module_that_cannot_be_imported_is_one_line(monkeypatch):
    monkeypatch.setenv(ENV, "no_such_fedsim_plugin_package")
    with pytest.raises(
        ConfigError, match=r"^FEDSIM_PLUGINS names 'no_such_fedsim_plugin_package', which cannot be imported"
    ):
        load_extra_plugins()
    monkeypatch.delenv(ENV)
    load_extra_plugins()  # nothing named: nothing to import


def test_installed_plugins_are_found_through_their_entry_point(tmp_path):
    """A distribution that declares ``[fedsim.plugins]`` is imported with no variable set."""
    (tmp_path / "ep_plugin_pkg").mkdir()
    (tmp_path / "ep_plugin_pkg" / "__init__.py").write_text("")
    (tmp_path / "ep_plugin_pkg" / "found.py").write_text("FOUND = True\n")
    info = tmp_path / "ep_plugin_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fedsim.plugins]\nmine = ep_plugin_pkg\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from fedsim.util.plugins import load_extra_plugins
        load_extra_plugins()
        print("ep_plugin_pkg.found" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env_without_plugins())
    assert out.stdout.strip() == "True", out.stderr


def _env_without_plugins() -> dict:
    return {k: v for k, v in os.environ.items() if k != ENV}


@dataclass
class TwoKeysParams(OutputConfig):
    two_key: int = hp(3, ge=0, help="a key of its own", source="this test")


class TwoKeys(Tracker):
    name = "two-keys"
    module = "json"
    Params = TwoKeysParams


@dataclass
class OtherKeysParams(OutputConfig):
    other_key: str = hp("x", help="another tracker's key", source="this test")


class OtherKeys(Tracker):
    name = "other-keys"
    module = "json"
    Params = OtherKeysParams


@pytest.fixture
def two_trackers():
    TRACKERS.register(TwoKeys)
    TRACKERS.register(OtherKeys)
    yield
    TRACKERS.unregister("two-keys")
    TRACKERS.unregister("other-keys")


def test_two_trackers_with_keys_of_their_own_share_the_output_section(two_trackers, tiny):
    cfg = load_config(tiny(output={"trackers": ["two-keys", "other-keys"], "two_key": 5, "other_key": "y"}))
    assert (cfg.output.two_key, cfg.output.other_key, cfg.output.plots) == (5, "y", False)
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # travels to spawned workers and Ray actors
    assert from_yaml_text(to_yaml(cfg)) == cfg
    with pytest.raises(
        ConfigError, match=r"output.two_key' = -1 is out of range for tracker 'two-keys'; allowed: >= 0"
    ):
        load_config(tiny(output={"trackers": ["two-keys", "other-keys"], "two_key": -1}))
    with pytest.raises(ConfigError, match=r"output.two_key' is read only with output.trackers containing two-keys"):
        load_config(tiny(output={"trackers": ["other-keys"], "two_key": 4}))


@pytest.mark.parametrize(
    "kind",
    [
        "datasets",
        "schemes",
        "models",
        "engines",
        "trackers",
        "privacy-modes",
        "system-sources",
        "compressors",
        "selectors",
        "async-servers",
    ],
)
def test_the_readme_tables_of_plugins_are_generated_from_their_declarations(kind):
    assert listing.table_markdown(kind) in (ROOT / "README.md").read_text(), (
        f"regenerate it: python -c 'from fedsim import listing; print(listing.table_markdown(\"{kind}\"))'"
    )


def test_every_builtin_plugin_declares_a_summary_a_source_and_its_keys():
    for sec in sections.SECTIONS.values():
        for name in sec.registry.available():
            plugin = sec.registry.get(name)
            assert plugin.summary and plugin.paper, (sec.name, name)
            for h in sec.registry.own(name):
                assert h.info.help and h.info.source, (sec.name, name, h.name)
                assert h.default is None or h.info.admits(h.default) or h.info.text, (sec.name, name, h.name)


def test_a_data_set_and_a_model_may_be_classes_too():
    """The function decorators make the same plug-in objects a class declares itself."""

    class Ones(data.Dataset):
        name, summary, paper = "class-ones", "all ones", "-"

        def load(self, cfg, seed, n_parties):
            x, y = torch.ones(8, 3), torch.tensor([0, 1] * 4)
            return data.DatasetBundle("class-ones", x, y, x, y, 2, None, None, False)

        def spec(self, cfg):
            return (3,), 2

    class Identity(models.Model):
        name, summary, paper = "class-identity", "the inputs as they are", "-"

        def build(self, cfg, input_shape, num_classes):
            return nn.Flatten(1), 3

    data.register(Ones)
    models.register(Identity)
    try:
        cfg = load_config(None, ["data.dataset=class-ones", "model.name=class-identity", "partition.n_parties=2"])
        assert data.input_spec(cfg.data) == ((3,), 2)
        assert data.load_dataset(cfg.data, 0, 2).x_train.shape == (8, 3)
        assert models.build_model(cfg.model, (3,), 2)(torch.ones(1, 3)).shape == (1, 2)
    finally:
        data.unregister("class-ones")
        models.unregister("class-identity")
        data.clear_cache()
