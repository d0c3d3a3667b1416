"""minimix: keep an XMPP account in its bookmarked group chats, for all of its clients."""

__version__ = "0.1.0"
