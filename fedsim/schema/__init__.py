"""A run's configuration as data: one dataclass per config section (``sections``), the
experiment that holds them (``experiment``) and what makes a run that run: its identity,
hash and YAML text (``identity``).

The lowest layer above the utilities: the data sets, models, privacy modes, trackers,
partition schemes and engines read their sections from here, and never import the
loader (:mod:`fedsim.config`) that validates a config against their registries.
"""
