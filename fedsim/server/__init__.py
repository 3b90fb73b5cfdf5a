"""The server side of a run: the ServerApp's round loop (``app``), central and per-party
evaluation (``evaluation``, ``party_eval``), each round's records and checkpoints
(``recorder``) and ``summary.json`` (``summary``)."""
