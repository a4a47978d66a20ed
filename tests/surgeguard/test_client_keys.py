"""Client keys with priority ceilings (issue 11: priority is earned, not claimed)."""

from __future__ import annotations

import pytest

from surgeguard.client_keys import ClientKeyError, ClientKeys
from surgeguard.priority import Priority
from surgeguard.settings import ReplicaSettings, SettingsError
from surgeguard_target_app.settings import DemoSettings


def test_each_key_carries_its_ceiling_and_a_bare_key_is_normal() -> None:
    keys = ClientKeys.parse("mobile-app:critical, partner:normal,batch:SHEDDABLE,plain")
    assert keys.ceiling(b"mobile-app") is Priority.CRITICAL
    assert keys.ceiling(b"partner") is Priority.NORMAL
    assert keys.ceiling(b"batch") is Priority.SHEDDABLE
    assert keys.ceiling(b"plain") is Priority.NORMAL
    assert keys.ceiling(b"stranger") is None
    assert "plain" in keys and "stranger" not in keys


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a:urgent", "client key 'a': unknown ceiling 'urgent'"),
        (" , ", "needs at least one client key"),
        ("a:critical,a:normal", "client key 'a' is listed twice with different ceilings"),
        ("k\u00e9y", "must be printable ASCII without spaces"),
    ],
)
def test_a_bad_key_list_names_the_entry(text: str, message: str) -> None:
    with pytest.raises(ClientKeyError, match=message):
        ClientKeys.parse(text)


def test_settings_refuse_a_bad_ceiling_in_one_line() -> None:
    with pytest.raises(SettingsError, match=r"--client-keys='a:urgent': .*unknown ceiling"):
        DemoSettings.load(client_keys="a:urgent")


def test_the_demo_keys_may_be_critical() -> None:
    keys = DemoSettings.load().client_key_ceilings
    assert keys is not None
    assert keys.ceiling(b"demo-key") is Priority.CRITICAL
    assert keys.ceiling(b"load-01") is Priority.CRITICAL


def test_a_replica_with_no_keys_asks_for_none() -> None:
    """The library's default: no keys configured means none are asked for (not a crash)."""
    settings = ReplicaSettings.load(client_keys="")
    assert settings.client_key_ceilings is None
    assert settings.client_key_set == frozenset()
