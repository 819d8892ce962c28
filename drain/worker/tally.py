"""What one batch did, by outcome kind and by quarantine reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from drain.store.claimed import Outcome


@dataclass(slots=True)
class Tally:
    """What one batch did, by outcome kind and by quarantine reason."""

    kinds: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.kinds[outcome.kind] = self.kinds.get(outcome.kind, 0) + 1

    def __getitem__(self, kind: str) -> int:
        return self.kinds.get(kind, 0)

    def reason(self, code: str) -> None:
        """Count one quarantine by its reason code."""
        self.reasons[code] = self.reasons.get(code, 0) + 1
