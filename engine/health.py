"""HealthCheckResult: what every component's ``health_check()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HealthCheckResult:
    """The answer to "is this component working?"."""

    is_healthy: bool
    """True when the component is doing its job."""
    message: str
    """One line for an operator."""
    details: dict[str, Any] = field(default_factory=dict)
    """Figures behind the verdict (counts, errors, timestamps)."""

    def to_dict(self) -> dict[str, Any]:
        return {"is_healthy": self.is_healthy, "message": self.message, "details": self.details}

    @classmethod
    def combine(cls, parts: dict[str, "HealthCheckResult"]) -> "HealthCheckResult":
        """One result for many components: healthy only if every part is."""
        bad = [name for name, part in parts.items() if not part.is_healthy]
        message = "all components healthy" if not bad else "unhealthy: " + ", ".join(bad)
        return cls(not bad, message, {name: part.to_dict() for name, part in parts.items()})
