"""Fan-out of inbox notifies: in-process for one node, Redis pub/sub across nodes."""

from im.bus.base import Bus, DeliverFn
from im.bus.local import LocalBus

__all__ = ["Bus", "DeliverFn", "LocalBus"]
