"""A run uses no deprecated Flower, and Flower could say so if it did (tests/engines/flower_watch.py).

The Ray engine is watched the same way in test_eng_engines.py's local-versus-Ray run,
which starts the one Ray runtime of the default suite.
"""

from __future__ import annotations

from flower_watch import watching_flower

import fedsim


def test_a_local_run_calls_no_deprecated_flower_and_flower_can_say_so(tmp_path, tiny, flower_deprecations):
    with watching_flower() as watch:
        result = fedsim.run(
            tiny(partition={"n_parties": 2}, federation={"rounds": 1}), out=tmp_path / "run", hooks=watch.hooks
        )
    assert result.summary["rounds"] == 1
    watch.check(rounds=1)
    assert [r.getMessage() for r in flower_deprecations] == []
