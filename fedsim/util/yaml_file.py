"""Reading a YAML file that must hold a mapping, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedsim.errors import ConfigError


def load_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping, unresolved; ConfigError naming ``what``."""
    if not path.exists():
        raise ConfigError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a directory; expected a YAML file")
    try:
        # OmegaConf's loader is yaml.SafeLoader: no arbitrary object construction
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what} '{path}' is not valid YAML: {first}") from exc
    except OSError as exc:  # OmegaConf's answer to a file holding a scalar (42, true)
        if "Invalid loaded object type" in str(exc):
            raise ConfigError(
                f"{what} '{path}' must hold a mapping of keys, got {str(exc).rsplit(': ', 1)[-1]}"
            ) from exc
        raise ConfigError(f"{what} '{path}' cannot be read: {exc.strerror or exc}") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{what} '{path}' must hold a mapping of keys, got a list")
    return OmegaConf.to_container(loaded, resolve=False)  # type: ignore[return-value]
