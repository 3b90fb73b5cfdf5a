"""Model poisoning as a server rule on the replies (strategies/replies.py): the
malicious parties' replies of a round are replaced before any defence and the
algorithm's aggregate."""

from __future__ import annotations

from strategies.replies import ReplyRule, UpdateSpace

from .params import AttackParams
from .registry import Attack, ReplyAttack


class AttackRule(ReplyRule):
    """Replaces the replies of ``malicious`` parties with ``attack``'s poisoned ones."""

    key = "attack"

    def __init__(self, attack: Attack, params: AttackParams, malicious: list[int], seed: int) -> None:
        self.attack = attack
        self.params = params
        self.malicious = frozenset(malicious)
        self.seed = seed

    def apply(self, server_round, global_state, outcomes, setup) -> dict[str, float]:
        bad = [o for o in outcomes if o.party in self.malicious]
        if not bad:
            return {}
        good = [o for o in outcomes if o.party not in self.malicious]
        ctx = ReplyAttack(server_round, self.seed, UpdateSpace(global_state, setup, outcomes), good, bad)
        self.attack.poison_replies(self.params, ctx)
        for o in bad:
            o.poisoned = True  # sent by a malicious party, whatever its own mods would have done
        return {}
