"""Tell systemd how the service is doing: the sd_notify(3) protocol in a few lines.

Each message is one datagram of ``KEY=value`` lines sent to ``$NOTIFY_SOCKET`` (a path, or an
abstract socket written ``@name``). Without ``$NOTIFY_SOCKET`` — not started by systemd, or not
``Type=notify`` — every call does nothing. Sending never raises: systemd's supervision must not
be able to take the daemon down.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from minimix.logging import get_logger

log = get_logger(__name__)


class Notifier:
    """Notifications to the service manager that started us, if any."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._env = env

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (``$NOTIFY_SOCKET`` is set)."""
        return bool(self._address)

    def ready(self) -> None:
        """Start-up is complete (``Type=notify`` services are "starting" until then)."""
        self.notify(READY=1)

    def status(self, text: str) -> None:
        """One line for ``systemctl status``."""
        self.notify(STATUS=" ".join(text.splitlines()))

    def watchdog(self) -> None:
        """Still alive: send at least every :meth:`watchdog_interval` seconds."""
        self.notify(WATCHDOG=1)

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.notify(STOPPING=1)

    def reloading(self) -> None:
        """A reload has begun; send :meth:`ready` when it is done."""
        self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def notify(self, **fields: object) -> None:
        """Send ``KEY=value`` for each field (keys are upper-cased), e.g. ``notify(STATUS="…")``."""
        if not self._address:
            return
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as error:
            log.debug("sd_notify failed", error=str(error))

    def watchdog_interval(self) -> float | None:
        """Seconds between :meth:`watchdog` calls — half of ``WatchdogSec=`` — or None when
        systemd expects none (no ``$WATCHDOG_USEC``, or ``$WATCHDOG_PID`` is another process)."""
        pid = self._env.get("WATCHDOG_PID")
        if pid is not None and pid != str(os.getpid()):
            return None
        try:
            usec = int(self._env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        return usec / 2_000_000 if usec > 0 else None
