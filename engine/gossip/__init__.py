"""Gossip replication: manifest deltas exchanged peer to peer (``protocol``, I/O-free, with
its message checks in ``messages``); the daemon and the HTTP routes live in
``engine.daemons.gossip`` and ``engine.server.gossip``."""

from engine.gossip.messages import ProtocolError
from engine.gossip.protocol import Gossip, PeerView

__all__ = ["Gossip", "PeerView", "ProtocolError"]
