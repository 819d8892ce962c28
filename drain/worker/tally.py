"""What one batch did, by outcome kind and by quarantine reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from drain.store.claimed import Outcome


@dataclass
class Tally:
    """What one batch did, by outcome kind and by quarantine reason."""

    kinds: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.kinds[outcome.kind] = self.kinds.get(outcome.kind, 0) + 1

    def __getitem__(self, kind: str) -> int:
        return self.kinds.get(kind, 0)
