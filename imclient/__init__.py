"""Python client SDK of im-server: an async client over WebSocket (msgpack) or HTTP long-poll (JSON).

    import asyncio
    from imclient import Client

    async def main() -> None:
        async with Client(["http://127.0.0.1:8888"], "alice", "secret-password",
                          on_message=print, register=True) as alice:
            await alice.send("bob", "hello")
            await asyncio.sleep(1)

    asyncio.run(main())

Only tornado and msgpack are needed (both already dependencies of the server).
"""

from imclient.backoff import backoff_delay
from imclient.client import TRANSPORTS, Client
from imclient.errors import ApiError, ClientClosed, ConnectionFailed, ImClientError, SendFailed

__all__ = [
    "TRANSPORTS",
    "ApiError",
    "Client",
    "ClientClosed",
    "ConnectionFailed",
    "ImClientError",
    "SendFailed",
    "backoff_delay",
]
