"""Faults the AWS SDK itself meets, injected into a real botocore client (moto behind it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LostAnswer", "lose_next_answer"]


@dataclass
class LostAnswer:
    """What became of one injected lost answer: how often botocore sent the request."""

    operation: str
    sent: int = 0


def lose_next_answer(client: Any, operation: str) -> LostAnswer:
    """The next ``operation`` request is applied by the service, but botocore never reads its
    answer and sends the same request again, as it does after a read timeout, a 5xx or
    throttling (DESIGN.md, "Lost answers").

    It hooks botocore's own retry decision (the ``needs-retry`` event), so the resend is
    botocore's: the same signed request, through the same client and retry policy.
    """
    lost = LostAnswer(operation)
    service = client.meta.service_model.service_id.hyphenize()

    def drop_first_answer(attempts: int, caught_exception: Any, **_: Any) -> float | None:
        lost.sent += 1
        if lost.sent == 1 and caught_exception is None:
            return 0.0  # retry at once: the first answer never arrived
        return None

    client.meta.events.register_first(f"needs-retry.{service}.{operation}", drop_first_answer)
    return lost
