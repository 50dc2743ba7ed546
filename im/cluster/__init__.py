"""How nodes cooperate: the notify bus, presence, the node registry and kick routing.

Each part has a one-node implementation (in-process) and a Redis one; ``im/topology.py`` picks one set
at start.
"""
