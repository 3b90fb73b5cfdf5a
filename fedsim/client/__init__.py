"""The client side of a run: the ClientApp (``app``: one model per process, a party's
round) and the local trainer (``training``)."""
