"""The timing and decision logic of presence and the Redis bus, as pure functions (no I/O)."""

from __future__ import annotations

import pytest

from config import SettingsError, load_settings
from im.cluster.news import merge_heads
from im.cluster.presence import linger_over
from im.cluster.redis_bus import retry_due
from im.cluster.redis_presence import (
    beat_due,
    decode_entry,
    encode_entry,
    live_connections,
    merge_pages,
    next_wakeup_secs,
)
from im.delivery.hub import ConnectionTable


def test_heartbeat_is_due_first_and_then_every_interval() -> None:
    assert beat_due(now=100.0, last_beat_at=None, heartbeat_secs=10)
    assert not beat_due(now=109.9, last_beat_at=100.0, heartbeat_secs=10)
    assert beat_due(now=110.0, last_beat_at=100.0, heartbeat_secs=10)


def test_writer_sleeps_until_the_next_beat_or_the_first_linger_expiry() -> None:
    assert next_wakeup_secs(now=5.0, last_beat_at=None, heartbeat_secs=10, failing=False) == 0.0
    assert next_wakeup_secs(now=103.0, last_beat_at=100.0, heartbeat_secs=10, failing=False) == 7.0
    assert next_wakeup_secs(now=103.0, last_beat_at=100.0, heartbeat_secs=10, failing=False,
                            linger_deadlines=[108.0, 105.0]) == 2.0
    # A deadline already past means "now"; a failing writer retries within its retry interval.
    assert next_wakeup_secs(now=103.0, last_beat_at=100.0, heartbeat_secs=10, failing=False,
                            linger_deadlines=[101.0]) == 0.0
    assert next_wakeup_secs(now=103.0, last_beat_at=100.0, heartbeat_secs=10, failing=True,
                            retry_secs=1.0) == 1.0


def test_linger_keeps_a_user_between_two_long_polls() -> None:
    assert not linger_over(now=104.9, gone_at=100.0, linger_secs=5)
    assert linger_over(now=105.0, gone_at=100.0, linger_secs=5)


def test_presence_entries_of_dead_or_restarted_nodes_are_ignored() -> None:
    fields = {"n1": encode_entry("boot1", 2), "n2": encode_entry("old", 1), "n3": encode_entry("b3", 4),
              "n4": "garbage"}
    boots = {"n1": "boot1", "n2": "new", "n3": None, "n4": "x"}  # n2 restarted, n3 died
    assert live_connections(fields, boots) == {"n1": 2}
    assert decode_entry("a:b:3") == ("a:b", 3)
    assert decode_entry(":3") is None and decode_entry("b:x") is None


def test_pages_of_several_nodes_merge_sorted_and_distinct() -> None:
    users, more = merge_pages([["ann", "cat", "eve"], ["bob", "cat"], []], limit=3)
    assert users == ["ann", "bob", "cat"] and more
    assert merge_pages([["ann"], ["ann"]], limit=3) == (["ann"], False)


def test_held_notifies_keep_the_highest_seq_per_user() -> None:
    held = {"ann": 5, "bob": 2}
    merge_heads(held, {"ann": 3, "bob": 7, "cat": 1})
    assert held == {"ann": 5, "bob": 7, "cat": 1}


def test_publishing_during_an_outage_retries_at_most_every_interval() -> None:
    assert retry_due(now=10.0, last_attempt_at=None)
    assert not retry_due(now=10.5, last_attempt_at=10.0, retry_secs=1.0)
    assert retry_due(now=11.0, last_attempt_at=10.0, retry_secs=1.0)


class _Conn:
    def inbox_changed(self, seq: int) -> None: ...

    def kick(self, reason: str) -> None: ...


def test_connection_table_counts_and_orders_connections() -> None:
    table = ConnectionTable()
    a, b, c = _Conn(), _Conn(), _Conn()
    assert table.add("ann", a, wall=1.0) == 1
    assert table.add("ann", b, wall=2.0) == 2
    table.add("ann", c, wall=3.0)
    assert table.older_than("ann", 3.0, keep=c) == [a, b]
    assert table.older_than("ann", 2.0) == [a]
    assert table.remove("ann", a, now=50.0) == 2
    assert table.remove("ann", a, now=50.0) is None  # unknown: nothing changes
    table.remove("ann", b, now=51.0)
    assert table.remove("ann", c, now=52.0) == 0
    assert table.gone_at == {"ann": 52.0} and table.users() == []
    table.add("ann", a, wall=4.0)
    assert table.gone_at == {}


def test_cluster_settings_are_checked() -> None:
    settings = load_settings(environ={"IM_LOGIN_POLICY": "single", "IM_HEARTBEAT_SECS": "2"})
    assert settings.login_policy == "single" and settings.heartbeat_secs == 2.0
    with pytest.raises(SettingsError, match="login_policy"):
        load_settings(environ={"IM_LOGIN_POLICY": "one"})
    with pytest.raises(SettingsError, match="heartbeat_secs"):
        load_settings(environ={"IM_HEARTBEAT_SECS": "30", "IM_PRESENCE_TTL_SECS": "30"})
