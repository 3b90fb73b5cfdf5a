"""The server side of a run: the ServerApp and its steps (``app``: ``run_server``), the
nodes and the composed strategy (``federation``), the start or resume (``start``), the
round loop (``rounds``), each round's records as ordered callbacks (``recorder``,
``callbacks/``), central and per-party evaluation (``evaluation``, ``party_eval``) and
the final files (``summary``)."""
