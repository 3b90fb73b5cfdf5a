"""A run's configuration: the dataclasses of every config key (``schema``), loading a
YAML file and ``key=value`` overrides onto them (``load``), and the checks of every value
against the registries (``validate``)."""
