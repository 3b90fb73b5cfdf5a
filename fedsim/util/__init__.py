"""Leaves every part of fedsim may import: derived seeds (``seeding``), Flower's internals
(``flower_compat``), signals and parent watching (``lifecycle``), Ray head addresses
(``ray_address``)."""
