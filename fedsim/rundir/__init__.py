"""The run directory: who owns it (``ownership``: marker, lock, deletion of only what
fedsim wrote), its files and atomic writes (``store``), checkpoints (``checkpoint``) and a
run's own plots (``plots``)."""
