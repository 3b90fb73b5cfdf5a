"""The preparation of a run, before the engine starts: its inputs in a process (settings,
data set, partition, the parties' own test data: ``run_inputs``, ``localtest``), the
attack's parties and data (``adversary``), memory estimates (``resources``), the checks
and the run directory's first files (``preflight``), and Flower's CLI entry
(``flwr_app``)."""
