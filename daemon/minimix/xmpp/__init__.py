"""The edge: the only package that imports aioxmpp.

Importing it applies the aioxmpp fixes and fast paths of :mod:`minimix.xmpp.compat`.
"""

from minimix.xmpp import compat

compat.apply()
