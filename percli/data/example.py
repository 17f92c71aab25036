"""The one record type every data source produces and every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Example:
    """One LongLaMP example; `profile` holds the user's items (after retrieval: the top-k, best first)."""

    id: str
    user_id: str
    task: str
    input: str
    output: str
    profile: list[dict]
    meta: dict = field(default_factory=dict)
