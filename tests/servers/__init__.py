"""Private XMPP servers for integration tests (see base.XmppServer for the interface)."""

from .base import Account, ServerError, XmppServer, free_port
from .ejabberd import EjabberdServer
from .prosody import ProsodyOptions, ProsodyServer

__all__ = [
    "Account",
    "EjabberdServer",
    "ProsodyOptions",
    "ProsodyServer",
    "ServerError",
    "XmppServer",
    "free_port",
]
