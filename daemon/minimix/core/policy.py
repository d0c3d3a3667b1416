"""The room-keeping policy: every knob of the room machine, with its default.

The app builds it from the ``[rooms]`` section of the config file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    join_concurrency: int = 50
    """Joins in flight at once: pipelined, never one at a time, never all at once."""
    join_timeout_s: float = 60.0
    """A join the room does not answer within this time is retried with backoff."""
    leave_timeout_s: float = 10.0
    nick_fallback_suffix: str = "_"
    nick_fallback_max: int = 3
    """Nick conflict (409): try nick+suffix, nick+suffix*2, … this many times."""
    nick_regain_interval_s: float = 60.0
    kick_rejoin: bool = True
    kick_rejoin_delay_s: float = 10.0
    kick_rejoin_max: int = 3
    """Give up after this many kicks within ``kick_window_s``."""
    kick_window_s: float = 3600.0
    on_ban: Literal["disable-autojoin", "keep-bookmark"] = "disable-autojoin"
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 300.0
    backoff_jitter: float = 0.2
    self_ping_idle_s: float = 300.0
    self_ping_retry_s: float = 30.0
    """After an undecided self-ping (timeout, remote-server-*), ask again this soon."""
    allow_create: bool = False
    """Stay in a room our join created (status 201) instead of destroying it."""
