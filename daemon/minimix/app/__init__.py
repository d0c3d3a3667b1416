"""The daemon proper: the loop that owns all state (main), the effects of the core's
actions (effects), and what it shows of itself (status)."""

from minimix.app.main import App, run

__all__ = ["App", "run"]
