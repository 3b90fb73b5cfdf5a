"""Opening a run, before the engine starts: whether a resume may continue a run
(``resume``), everything that can refuse the input (``checks``), and the run
directory's lock and first files (``preflight``: ``open_run``, the steps in order). The
inputs these steps read (settings, data, partition, local tests, adversary, memory) are
:mod:`fedsim.inputs`."""
