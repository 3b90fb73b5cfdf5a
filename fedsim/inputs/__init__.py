"""A run's inputs in a process, shared by the server, the clients and the engines: its
settings and experiment (data set, partition, held-out parties, device: ``run_inputs``),
the parties' own test data (``localtest``), the attack's parties and data
(``adversary``) and memory estimates (``resources``). Nothing here reads a config file
or touches the run directory's lock: that is :mod:`fedsim.prepare`, one layer up."""
