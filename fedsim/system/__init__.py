"""System heterogeneity on a simulated clock (README "System heterogeneity").

* :mod:`.sources`: the ``system.source`` plug-ins that give each party a device profile
  (synthetic, FedScale's traces, a user's table);
* :mod:`.profiles`: the profiles and availability, checked;
* :mod:`.traces`: FedScale's pickles read without executing anything, and tables;
* :mod:`.clock`: FedScale's formula for a reply's duration, and when a round ends;
* :mod:`.run`: the clock as an extension of the strategy's round (sampling among the
  online parties, over-selection, the deadline) and its checkpointed time;
* :mod:`.summary`: time to accuracy and who the aggregate saw, for ``summary.json``.
"""
