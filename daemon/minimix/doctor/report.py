"""``minimix doctor``'s result model and its rendering: one :class:`Check` a row, a table
or JSON, and the exit code."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class Status(enum.StrEnum):
    OK = "ok"
    INFO = "info"  # neither good nor bad: worth knowing
    WARN = "warn"  # minimix works, with the consequence the detail names
    FAIL = "fail"  # minimix cannot work like this
    SKIP = "skip"  # not checked (an earlier check failed, or out of time)


_WORST = [Status.SKIP, Status.OK, Status.INFO, Status.WARN, Status.FAIL]


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_WORST.index, default=Status.OK)


@dataclass(frozen=True, slots=True)
class Check:
    check: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"check": self.check, "status": str(self.status), "detail": self.detail, "fix": self.fix}


# The rows of the checks that need the server, in output order: what is shown as skipped
# when the connection fails before them.
NETWORK_CHECKS = (
    "connection",
    "tls",
    "login",
    "stream management",
    "carbons",
    "account mam",
    "bookmarks",
    "bookmark node size",
    "bookmark node access",
    "publish-options",
    "pep notify",
    "retract notify",
    "rooms",
)


def skipped(names: Iterable[str], why: str) -> list[Check]:
    return [Check(name, Status.SKIP, f"skipped: {why}") for name in names]


def exit_status(checks: Iterable[Check]) -> int:
    """0 when nothing failed (warnings are fine), else 1."""
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


def summary(checks: Sequence[Check]) -> dict[str, int]:
    return {str(s): sum(1 for c in checks if c.status is s) for s in Status}


def render_table(checks: Sequence[Check], exit_code: int | None = None) -> str:
    """One row per check (check, status, detail); the fix on the line below the detail."""
    width = max([len("CHECK"), *(len(c.check) for c in checks)])
    status_width = len("STATUS")
    indent = " " * (width + 2 + status_width + 2)
    lines = [f"{'CHECK':<{width}}  {'STATUS':<{status_width}}  DETAIL"]
    for c in checks:
        lines.append(f"{c.check:<{width}}  {c.status!s:<{status_width}}  {c.detail}")
        if c.fix:
            lines.append(f"{indent}fix: {c.fix}")
    counts = summary(checks)
    tail = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    verdict = "nothing failed" if not counts["fail"] else "something failed"
    lines.append("")
    lines.append(f"{tail}: {verdict}" + (f" (exit {exit_code})" if exit_code is not None else ""))
    return "\n".join(lines)


def render_json(checks: Sequence[Check], exit_code: int) -> str:
    return json.dumps(
        {
            "checks": [c.as_dict() for c in checks],
            "summary": {**summary(checks), "exit_code": exit_code},
        },
        indent=1,
        ensure_ascii=False,
    )
