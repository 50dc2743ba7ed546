"""What a committed batch tells other nodes: each inbox's new head and epoch, and the new entries.

A notify is a hint, so it carries no promise: a node that gets the entries keeps them in its tail
cache, and the pull that follows is answered from memory; without them (too large, or lost) the pull
reads the store. On the wire (JSON, one message per target node), each message is written once however
many of that node's users it entered:
``{"h": {user: seq}, "p": {user: epoch}, "m": {msg_id: message}, "e": {user: [[seq, msg_id], ...]}}``.

Every batch's heads also go to every node (``{"w": {user: [seq, epoch]}, "f": node}``), whoever holds
the users: a node that writes an inbox next then numbers from its real head instead of meeting the
other node's keys (a sender's inbox takes delivered receipts from the readers' nodes, for one). A node
that lost a race sends ``{"w": {}, "c": [user, ...], "f": node}`` the same way: those inboxes are
contested, and writers check their turns (``im/delivery/leases.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InboxNews", "Message", "decode_heads", "decode_news", "encode_contested", "encode_heads",
           "encode_news", "merge_heads"]

log = logging.getLogger(__name__)

Message = dict[str, Any]


def merge_heads(into: dict[str, int], heads: Mapping[str, int]) -> list[str]:
    """Keep the highest seq per user (a notify for seq n covers every lower one); return the users
    whose head rose."""
    risen = []
    for user, seq in heads.items():
        if seq > into.get(user, 0):
            into[user] = seq
            risen.append(user)
    return risen


@dataclass(slots=True)
class InboxNews:
    heads: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, str] = field(default_factory=dict)
    # The committed entries of each inbox, in seq order (bodies in clear); an inbox may have none here.
    entries: dict[str, list[Message]] = field(default_factory=dict)
    # Inboxes another node lost a race for (and took a lease on): writers here check its turn first.
    contested: list[str] = field(default_factory=list)

    def add(self, user: str, epoch: str, messages: list[Message]) -> None:
        """``messages`` (consecutive, in seq order) were committed to ``user``'s inbox."""
        self.epochs[user] = epoch
        self.heads[user] = max(self.heads.get(user, 0), messages[-1]["seq"])
        self.entries.setdefault(user, []).extend(messages)

    def merge_heads(self, other: InboxNews) -> None:
        """Keep the highest head per inbox, with its epoch; no entries."""
        for user in merge_heads(self.heads, other.heads):
            if user in other.epochs:
                self.epochs[user] = other.epochs[user]


def encode_news(news: InboxNews, users: Iterable[str], *, max_entry_bytes: int) -> str:
    """The message for a node holding ``users``: their heads and epochs, and their entries as long as
    the messages written stay within ``max_entry_bytes`` (an inbox gets all of its entries or none)."""
    heads: dict[str, int] = {}
    epochs: dict[str, str] = {}
    refs: dict[str, list[list[Any]]] = {}
    encoded: dict[str, str] = {}
    budget = max_entry_bytes
    for user in users:
        heads[user] = news.heads[user]
        if user in news.epochs:
            epochs[user] = news.epochs[user]
        messages = news.entries.get(user)
        if not messages:
            continue
        new = {m["msg_id"]: _message_json(m) for m in messages if m["msg_id"] not in encoded}
        cost = sum(len(text) for text in new.values())
        if cost > budget:
            continue
        budget -= cost
        encoded.update(new)
        refs[user] = [[m["seq"], m["msg_id"]] for m in messages]
    body = ",".join(f'"{msg_id}":{text}' for msg_id, text in encoded.items())
    return (f'{{"h":{json.dumps(heads)},"p":{json.dumps(epochs)},"m":{{{body}}},'
            f'"e":{json.dumps(refs, separators=(",", ":"))}}}')


def encode_heads(news: InboxNews, *, node_id: str) -> str:
    """The message telling every node the heads a batch of ``node_id`` reached (no entries)."""
    return json.dumps({"w": {u: [s, news.epochs.get(u, "")] for u, s in news.heads.items()}, "f": node_id},
                      separators=(",", ":"))


def encode_contested(users: Iterable[str], *, node_id: str) -> str:
    """The message telling every node that ``node_id`` lost a race for ``users``' inboxes."""
    return json.dumps({"w": {}, "c": list(users), "f": node_id}, separators=(",", ":"))


def decode_heads(message: Mapping[str, Any]) -> InboxNews:
    """The heads (and contested inboxes) of a message made by :func:`encode_heads` or
    :func:`encode_contested`, as news without entries."""
    news = InboxNews(contested=[str(u) for u in message.get("c", [])])
    for user, (seq, epoch) in message["w"].items():
        news.heads[str(user)] = int(seq)
        if epoch:
            news.epochs[str(user)] = str(epoch)
    return news


def decode_news(message: Mapping[str, Any]) -> InboxNews:
    """The news of a decoded node message (see the module docstring); raises on a malformed one."""
    news = InboxNews(heads={str(u): int(s) for u, s in message["h"].items()},
                     epochs={str(u): str(e) for u, e in message.get("p", {}).items()})
    stored = message.get("m", {})
    for user, refs in message.get("e", {}).items():
        news.entries[str(user)] = [{**stored[msg_id], "seq": int(seq), "msg_id": msg_id}
                                   for seq, msg_id in refs]
    return news


def _message_json(message: Message) -> str:
    return json.dumps({k: v for k, v in message.items() if k not in ("seq", "msg_id")},
                      separators=(",", ":"))
