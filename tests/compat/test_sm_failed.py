"""fixes.sm_failed: an XEP-0198 <failed h='…'/> without an error condition is unreadable."""

import io

import aioxmpp.nonza
import aioxmpp.xml
import pytest
from aioxmpp.xso.model import _PropBase

from compat import streams  # noqa: F401  (applies the fixes)

FAILED_WITHOUT_CONDITION = b"<failed xmlns='urn:xmpp:sm:3' h='17' previd='abc'/>"


def test_sm_failed_without_condition_is_read():
    failed = aioxmpp.xml.read_single_xso(io.BytesIO(FAILED_WITHOUT_CONDITION), aioxmpp.nonza.SMFailed)
    assert failed.counter == 17


def test_stock_sm_failed_needs_a_condition(monkeypatch):
    monkeypatch.setattr(aioxmpp.nonza.SMFailed.condition.xq_descriptor, "default", _PropBase.NO_DEFAULT)
    with pytest.raises(ValueError):
        aioxmpp.xml.read_single_xso(io.BytesIO(FAILED_WITHOUT_CONDITION), aioxmpp.nonza.SMFailed)
