"""Private XMPP servers for integration tests (see base.XmppServer for the interface)."""

from .base import Account, ServerError, XmppServer, free_port
from .ejabberd import Ejabberd24Server, EjabberdServer
from .prosody import Prosody13Server, ProsodyOptions, ProsodyServer

__all__ = [
    "Account",
    "Ejabberd24Server",
    "EjabberdServer",
    "Prosody13Server",
    "ProsodyOptions",
    "ProsodyServer",
    "ServerError",
    "XmppServer",
    "free_port",
]
