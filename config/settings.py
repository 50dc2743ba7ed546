"""Server settings: defaults here, overridden by ``IM_*`` environment variables, then by flags.

Every field of :class:`Settings` is one setting. Its environment variable is ``IM_`` + the upper-cased
name and its command-line flag is ``--`` + the name with dashes, so ``long_poll_max_secs`` is
``IM_LONG_POLL_MAX_SECS`` and ``--long-poll-max-secs``. ``python server.py --help`` lists them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from im.ops.eventloop import CHOICES as EVENT_LOOPS

__all__ = ["Settings", "SettingsError", "build_arg_parser", "load_settings"]


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    # Network
    host: str = _setting("127.0.0.1", "address to listen on")
    port: int = _setting(8888, "HTTP/WebSocket port")
    node_id: str = _setting("", "this node's id in a cluster (default: host:port)")

    # Storage
    data_dir: str = _setting("data", "directory for the embedded store and generated secrets")
    mongo_url: str = _setting(
        "", "MongoDB URL; empty starts the embedded SecantusDB under data_dir (retryWrites=false is advised)"
    )
    mongo_db: str = _setting("im", "database name")
    embedded_mongo_port: int = _setting(0, "port of the embedded SecantusDB (0 picks a free port)")
    write_concern: str = _setting("majority", "write concern of message writes: majority or a number")
    journal: bool = _setting(True, "ask the store to journal message writes before acknowledging them")
    store_timeout_secs: float = _setting(10.0, "server selection / socket timeout towards the store")
    mongo_max_idle_secs: float = _setting(
        30.0, "a store connection unused this long is closed (the pool shrinks back after a burst); 0: kept"
    )

    # Redis (cluster mode)
    redis_url: str = _setting("", "Redis URL; empty runs single-node with the in-process bus")
    redis_cluster: bool = _setting(False, "redis_url names one node of a Redis Cluster (finds the others)")

    # Cluster
    node_address: str = _setting("", "address that operators and other nodes see (default: host:port)")
    redis_prefix: str = _setting("im:", "prefix of every Redis key and channel (clusters may share a Redis)")
    presence_ttl_secs: float = _setting(
        30.0, "a node's registration and its users' presence expire this long after its last heartbeat"
    )
    heartbeat_secs: float = _setting(10.0, "how often a node refreshes its registration and presence TTLs")
    presence_linger_secs: float = _setting(
        5.0, "a user stays present this long after the last connection closed (long-polls reconnect)"
    )
    login_policy: str = _setting(
        "multi", "multi: several sessions per user; single: a new connection kicks the user's older ones"
    )

    # Auth
    jwt_secret: str = _setting("", "HS256 secret; empty generates one into data_dir/jwt_secret")
    jwt_ttl_secs: int = _setting(7 * 24 * 3600, "lifetime of issued tokens")
    jwt_issuer: str = _setting("im-server", "iss claim of issued tokens, checked on every request")
    jwt_old_secrets: str = _setting(
        "", "comma-separated previous secrets still accepted until their tokens expire (key rotation)"
    )

    # Delivery
    long_poll_default_secs: float = _setting(25.0, "long-poll wait when the client names none")
    long_poll_max_secs: float = _setting(60.0, "longest long-poll wait a client may ask for")
    long_poll_probe_secs: float = _setting(
        5.0, "how often a waiting long-poll's socket is checked for a client gone unreported (0: never)"
    )
    pull_default_limit: int = _setting(100, "messages per pull when the client names no limit")
    pull_max_limit: int = _setting(500, "most messages one pull may return")
    device_idle_secs: int = _setting(
        7 * 24 * 3600, "a device that has not acked for this long stops holding inbox entries back"
    )
    max_devices_per_user: int = _setting(20, "devices whose cursors are kept per user")
    commit_max_batch: int = _setting(256, "most messages written in one group-commit transaction")
    send_queue_max_wait_secs: float = _setting(
        2.0, "client sends are refused (503 overloaded) while the oldest queued one waited longer (0: never)")
    send_queue_max: int = _setting(
        20_000, "client sends are refused (503 overloaded) while this many are queued (0: no cap)")
    commit_max_in_flight: int = _setting(
        2, "group-commit transactions written at once (over disjoint inboxes: per-inbox order is kept)")
    ack_linger_secs: float = _setting(
        0.25, "acknowledgements (cursors, trims, delivered receipts) are written in batches this often")
    trim_interval_secs: float = _setting(
        2.0, "an inbox is trimmed (and delivered receipts written) at most this often; 0: on every ack")
    inbox_cache_entries: int = _setting(
        100_000, "newest inbox entries kept in memory to serve pulls without a store read (0: off)")
    head_save_secs: float = _setting(
        5.0, "inbox heads a node advanced are saved to the counters this often (a crash leaves them behind)")
    head_trust_secs: float = _setting(
        5.0, "cluster: pulls trust an inbox head learned from notifies this long after a store read")

    # Abuse limits (per node; 0 switches a rate off)
    rate_ip_per_sec: float = _setting(
        100.0, "sustained HTTP requests without a valid token, and WebSocket connects, per address")
    rate_ip_burst: int = _setting(200, "burst of requests per client address")
    rate_device_per_sec: float = _setting(
        100.0, "sustained HTTP requests per signed-in device (a valid token), wherever it comes from")
    rate_device_burst: int = _setting(200, "burst of requests per signed-in device")
    rate_send_per_sec: float = _setting(10.0, "sustained messages per user")
    rate_send_burst: int = _setting(30, "burst of messages per user")
    rate_register_per_sec: float = _setting(
        0.17, "sustained registrations per client address, checked before the password is hashed")
    rate_register_burst: int = _setting(3, "burst of registrations per client address")
    rate_login_per_sec: float = _setting(
        0.5, "sustained login attempts per client address, checked before the password is hashed")
    rate_login_burst: int = _setting(10, "burst of login attempts per client address")
    password_hash_concurrency: int = _setting(
        1, "password hashes computed at once, a core each (the rest of the cores carry messages)")
    password_hash_queue: int = _setting(
        16, "logins and registrations waiting for a hashing slot; more get 429 auth_busy with Retry-After")
    login_max_failures: int = _setting(10, "failed logins per user id (and 5x that per address) per window")
    login_failure_window_secs: float = _setting(300.0, "window over which failed logins are counted")
    max_connections_per_user: int = _setting(
        20, "WebSockets + waiting long-polls per user on one node (0: no cap)"
    )

    # Limits
    max_body_bytes: int = _setting(64 * 1024, "largest HTTP request body of the JSON API")
    max_frame_bytes: int = _setting(64 * 1024, "largest WebSocket frame answered with an error frame")
    max_text_chars: int = _setting(16 * 1024, "longest message body, in characters")

    # WebSocket
    ws_ping_interval_secs: float = _setting(20.0, "server ping interval on WebSockets")
    # Tornado refuses a ping timeout longer than the interval; a dead peer is dropped after the timeout
    # plus Tornado's 5 s close handshake.
    ws_ping_timeout_secs: float = _setting(20.0, "close a WebSocket whose pong is this late (<= interval)")
    ws_auth_timeout_secs: float = _setting(10.0, "close a WebSocket that has not authenticated by then")
    ws_write_timeout_secs: float = _setting(
        30.0, "close a WebSocket whose peer does not take a frame within this time (slow consumer)"
    )
    allowed_origins: str = _setting(
        "", "comma-separated browser origins allowed for WebSocket and CORS (same host is always allowed)"
    )

    # Ops
    trust_forwarded_headers: bool = _setting(
        False, "take client addresses from X-Forwarded-For/X-Real-IP (only behind a trusted proxy)"
    )
    log_level: str = _setting("INFO", "logging level")
    event_loop: str = _setting("auto", "event loop: auto (uvloop when installed), uvloop, or asyncio")
    static_dir: str = _setting("", "directory of the web client (default: the bundled static/)")

    # Observability and integration
    log_format: str = _setting("text", "log lines: text, or json (one object per line, with request_id)")
    webhook_urls: str = _setting("", "comma-separated URLs that get a signed POST for each stored message")
    webhook_secret: str = _setting("", "HMAC-SHA256 key of X-IM-Signature (required with webhook_urls)")
    webhook_max_attempts: int = _setting(6, "POSTs per event and URL before giving up (exponential backoff)")
    webhook_queue_size: int = _setting(10_000, "webhook deliveries held in memory; more are dropped, counted")
    webhook_timeout_secs: float = _setting(5.0, "time a webhook receiver has to answer one POST")

    # Conversations
    direct_policy: str = _setting("anyone", "who may message whom one-to-one: anyone, or friends only")
    group_max_members: int = _setting(500, "most members of a group (bounds the write fan-out of a message)")
    file_max_bytes: int = _setting(10 * 1024 * 1024, "largest uploaded file (POST /api/v1/files)")
    history_max_limit: int = _setting(200, "most messages one history page may return")
    master_key: str = _setting(
        "", "master key wrapping the per-conversation data keys; empty generates one into data_dir/master_key"
    )
    master_old_keys: str = _setting(
        "", "comma-separated previous master keys still accepted for unwrapping (during a key rotation)"
    )
    data_key_cache_size: int = _setting(10_000, "unwrapped conversation data keys kept in memory")

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def jwt_old_secret_list(self) -> list[str]:
        return [s.strip() for s in self.jwt_old_secrets.split(",") if s.strip()]

    @property
    def effective_node_id(self) -> str:
        return self.node_id or f"{self.host}:{self.port}"

    def validate(self) -> Settings:
        """Refuse values that would make the server misbehave instead of failing later."""
        positive = (
            "long_poll_default_secs", "long_poll_max_secs", "pull_default_limit", "pull_max_limit",
            "device_idle_secs", "max_devices_per_user", "commit_max_batch", "commit_max_in_flight",
            "max_body_bytes",
            "max_frame_bytes", "max_text_chars", "jwt_ttl_secs", "store_timeout_secs",
            "ws_write_timeout_secs", "head_save_secs", "head_trust_secs", "password_hash_concurrency",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.long_poll_probe_secs < 0:
            raise SettingsError("long_poll_probe_secs must not be negative")
        if self.long_poll_default_secs > self.long_poll_max_secs:
            raise SettingsError("long_poll_default_secs must not exceed long_poll_max_secs")
        if self.ws_ping_timeout_secs > self.ws_ping_interval_secs:
            raise SettingsError("ws_ping_timeout_secs must not exceed ws_ping_interval_secs")
        if self.pull_default_limit > self.pull_max_limit:
            raise SettingsError("pull_default_limit must not exceed pull_max_limit")
        if not 0 <= self.port <= 65535:
            raise SettingsError("port must be 0..65535")
        if self.write_concern != "majority" and not self.write_concern.isdigit():
            raise SettingsError("write_concern must be 'majority' or a number")
        if self.login_policy not in ("multi", "single"):
            raise SettingsError("login_policy must be 'multi' or 'single'")
        if not 0 < self.heartbeat_secs < self.presence_ttl_secs:
            raise SettingsError("heartbeat_secs must be positive and below presence_ttl_secs")
        if self.log_format not in ("text", "json"):
            raise SettingsError("log_format must be 'text' or 'json'")
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}")
        self._validate_webhooks()
        self._validate_conversations()
        for name in ("presence_linger_secs", "ack_linger_secs", "trim_interval_secs", "inbox_cache_entries",
                     "mongo_max_idle_secs", "password_hash_queue"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative")
        return self


    def _validate_conversations(self) -> None:
        if self.direct_policy not in ("anyone", "friends"):
            raise SettingsError("direct_policy must be 'anyone' or 'friends'")
        for name in ("group_max_members", "file_max_bytes", "history_max_limit", "data_key_cache_size"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")

    def _validate_webhooks(self) -> None:
        urls = [u.strip() for u in self.webhook_urls.split(",") if u.strip()]
        if not urls:
            return
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"webhook_urls: {url!r} is not an http(s) URL")
        if not self.webhook_secret:
            raise SettingsError("webhook_secret is required when webhook_urls is set (receivers verify it)")
        if self.webhook_max_attempts < 1 or self.webhook_queue_size < 1 or self.webhook_timeout_secs <= 0:
            raise SettingsError("webhook_max_attempts, _queue_size and _timeout_secs must be positive")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = type(f.default)
    try:
        if kind is bool:
            return _parse_bool(raw)
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{f.name}: cannot read {raw!r} as {kind.__name__}") from None


def env_name(name: str) -> str:
    return "IM_" + name.upper()


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="im-server",
        description="Write-first, notify-then-pull messaging server. "
        "Every flag can also be set by the IM_* environment variable shown.",
    )
    for f in dataclasses.fields(Settings):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=type(f.default).__name__.upper(),
            help=f"{f.metadata['help']} [{env_name(f.name)}, default: {f.default!r}]",
        )
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Defaults, then environment, then command line, then keyword overrides (used by tests)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    args = build_arg_parser().parse_args(list(argv)) if argv is not None else None
    for f in dataclasses.fields(Settings):
        raw = environ.get(env_name(f.name))
        if args is not None and getattr(args, f.name) is not None:
            raw = getattr(args, f.name)
        if raw is not None:
            values[f.name] = _convert(f, raw)
    values.update(overrides)
    return Settings(**values).validate()
