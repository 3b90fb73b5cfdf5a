"""The preparation of a run, before the engine starts: its inputs in a process (settings,
data set, partition, the parties' own test data: ``run_inputs``, ``localtest``), the
attack's parties and data (``adversary``), memory estimates (``resources``), whether a
resume may continue a run (``resume``), everything that can refuse the input
(``checks``), the run directory's lock and first files (``preflight``: ``open_run``,
the steps in order), and Flower's CLI entry (``flwr_app``)."""
