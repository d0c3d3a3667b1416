"""The store: settings survive reopening; a corrupt file is moved aside, never fatal."""

from minimix.core.relay import ClientSettings, Mode
from minimix.store import FILENAME, Store


def test_client_settings_roundtrip(tmp_path):
    path = tmp_path / FILENAME
    store = Store(path)
    settings = ClientSettings(Mode.MENTIONS, {"a@muc": Mode.ALL, "b@muc": Mode.OFF}, ("deploy", "Zoë"))
    store.save_client("phone", settings)
    store.save_client("laptop", ClientSettings(None, {"a@muc": Mode.ALL}))
    store.save_client("phone", settings.with_mode(Mode.OFF, "a@muc"))
    store.close()
    loaded = Store(path).load_clients()
    assert loaded["phone"] == ClientSettings(Mode.MENTIONS, {"a@muc": Mode.OFF, "b@muc": Mode.OFF}, ("deploy", "Zoë"))
    assert loaded["laptop"] == ClientSettings(None, {"a@muc": Mode.ALL}, ())


def test_corrupt_store_is_moved_aside(tmp_path):
    path = tmp_path / FILENAME
    path.write_bytes(b"this is not a database" * 100)
    resets = []
    store = Store(path, on_reset=lambda reason, moved: resets.append((reason, moved)))
    assert store.load_clients() == {}
    (reason, moved), = resets
    assert moved.exists() and moved.name.startswith(FILENAME + ".corrupt-")
    store.save_client("phone", ClientSettings(Mode.ALL))
    assert Store(path).load_clients()["phone"].default is Mode.ALL


def test_memory_store():
    assert Store(":memory:").load_clients() == {}
