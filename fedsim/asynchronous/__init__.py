"""Asynchronous federated learning on the simulated clock (README "Asynchronous training").

``servers/``: one file per ``asynchronous.mode`` (``off``, ``fedbuff``, ``fedasync``),
each a server step applied to the updates that arrived; ``events``: the in-flight
parties ordered by simulated arrival and the staleness of each arrival; ``loop``: the
event-driven server loop that replaces the strategy's synchronous rounds, and the
state a checkpoint keeps of it (the parties in flight and the versions they started from).
"""
