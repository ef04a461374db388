"""GossipDaemon: the ``gossip`` strategy — manifest deltas peer to peer, then pulls.

Every ``auto_sync.interval_seconds`` a round:

1. ``k = auto_sync.gossip_fanout`` random peers of ``SyncRouter.gossip_peers()`` (gossip
   nodes that are up and whose circuit breaker allows); with each, concurrently, one
   exchange of ``engine.gossip.protocol`` (``POST /v1/gossip``, then ``POST
   /v1/gossip/delta`` when the peer wants rows of ours). Success or failure feeds the peer's
   breaker; a failure is logged at warning, counted and kept as ``last_error``.
2. Pulls (``engine.gossip.pulls``): for each wanted artifact, up to ``PULLS_PER_SLOT`` x
   ``transfer.max_concurrent`` a round, ask the first source of ``SyncRouter.pull_sources``
   (a peer just exchanged with first) to send it: ``POST /v1/gossip/send`` with ``to`` = this
   node. The holder pushes its stored copy through the one push path
   (``PushPath.push_once``) and this node receives it through ``PUT /v1/objects``.

Every request goes through the node's PeerClient; a PeerError becomes a GossipError (its
``unreachable`` flag kept).

It also serves the three routes (``engine.server.gossip``): answering exchanges, taking
follow-up deltas, and starting the pushes other nodes ask for (``engine.gossip.holder``,
tasks cancelled on stop). A paused node still exchanges deltas but neither asks for nor
sends copies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Collection
from typing import Any

from engine.config import AutoSync
from engine.daemons.breaker import Breakers
from engine.errors import describe
from engine.events import DataSyncFailed, Payload
from engine.gossip import Gossip, ProtocolError
from engine.gossip.holder import Sender
from engine.gossip.pulls import Pulls
from engine.health import HealthCheckResult
from engine.manifest import Artifact, ClusterManifest
from engine.pause import PauseGate
from engine.peer_client import PeerClient, PeerError
from engine.router import SyncRouter

log = logging.getLogger(__name__)

EXCHANGE_TIMEOUT_SECONDS = 10.0
"""One gossip request (exchange, follow-up or send request) gives up after this."""
PULLS_PER_SLOT = 4
"""Pull requests per round per ``transfer.max_concurrent`` slot."""
SOURCES_TRIED = 3
"""Sources asked for one artifact in a round before it waits for the next round."""
MANIFEST_ARTIFACT = "manifest"
"""What a failed exchange names as its artifact: the manifest delta."""
MAX_PAGES = 10
"""Exchanges with one peer in a round while deltas come in pages (a node catching up)."""


class GossipError(Exception):
    """A peer's answer could not be had (unreachable, timed out, not 2xx, not JSON)."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        """No answer at all (refused, reset, timed out), as opposed to an unwanted one."""


class GossipDaemon:
    """Runs on every gossip-strategy node; started and stopped by the Node."""

    def __init__(self, node: str, settings: AutoSync, max_concurrent: int,
                 hosts: Collection[str], *, manifest: ClusterManifest, router: SyncRouter,
                 pulls: Pulls, sender: Sender, pause: PauseGate, breakers: Breakers,
                 peers: PeerClient, emit: Callable[[Payload], object],
                 disk_percent: Callable[[], float],
                 pressure: Callable[[], str | None]) -> None:
        self.node = node
        """This node's name."""
        self.interval = settings.interval_seconds
        """Seconds between rounds."""
        self.fanout = settings.gossip_fanout
        """Peers exchanged with per round."""
        self.max_pulls = PULLS_PER_SLOT * max_concurrent
        """Pull requests per round."""
        self.hosts = hosts
        """The cluster's host names (a request naming another sender is refused)."""
        self.router = router
        self.pause = pause
        self.breakers = breakers
        self.client = peers
        """The node's one client for calls to other nodes."""
        self._emit = emit
        self._disk_percent = disk_percent
        self._pressure = pressure
        self.protocol = Gossip(manifest, stats=self._stats)
        """This node's side of the exchange protocol (also answers peers)."""
        self.pulls = pulls
        """What to ask for, and what was asked for."""
        self.sender = sender
        """Starts the pushes other nodes ask this node for."""
        self.figures = {"rounds": 0, "exchanges": 0, "exchange_failures": 0, "rows_merged": 0,
                        "bytes_sent": 0, "bytes_received": 0, "pulls_requested": 0,
                        "pull_failures": 0, "pulls_unsourced": 0}
        """Running counts since start (bytes: JSON bodies of this node's requests;
        pulls_unsourced: wanted artifacts no source could be named for yet)."""
        self.served = {"exchanges": 0, "deltas": 0, "rows_merged": 0}
        """What this node answered for others (sends: ``sender``)."""
        self.peers: list[str] = []
        """The peers chosen in the last round."""
        self.last_round_at: float | None = None
        self.last_error: str | None = None
        self._started = time.monotonic()
        self._last_success: float | None = None
        self._failures_since_success = 0
        self._had_peers = False

    # -- one round --------------------------------------------------------------------------
    async def round(self) -> None:
        """Exchange with up to ``fanout`` random peers, then ask for what is missing here
        (the supervised ``gossip`` service's step, every ``interval``)."""
        peers = self.router.gossip_peers()
        self.peers = random.sample(peers, min(self.fanout, len(peers)))
        self._had_peers = bool(peers)
        results = await asyncio.gather(*(self.exchange(p) for p in self.peers))
        self.figures["rounds"] += 1
        self.last_round_at = time.time()
        if not self.pause.paused:
            await self.pull([p for p, ok in zip(self.peers, results) if ok])

    async def exchange(self, peer: str) -> bool:
        """One push-pull exchange with ``peer`` (repeated while either side had more than a
        page to send, up to ``MAX_PAGES``); False (counted, logged) when it failed."""
        try:
            for _page in range(MAX_PAGES):
                if not await self._exchange_page(peer):
                    break
        except (GossipError, ProtocolError) as exc:
            self._exchange_failed(peer, str(exc), peer_fault=True)
            return False
        except Exception as exc:  # this node's own failure (e.g. its manifest): not the peer's
            self._exchange_failed(peer, describe(exc), peer_fault=False)
            return False
        self.figures["exchanges"] += 1
        self._last_success, self._failures_since_success = time.monotonic(), 0
        self.breakers.success(peer)
        view = self.protocol.view(peer)
        self.router.backpressure(peer, view.backpressure)
        return True

    async def _exchange_page(self, peer: str) -> bool:
        """Request, answer, follow-up; True when a delta either way was one page of more."""
        request = self.protocol.request(peer)
        answer = await self._post(peer, "/v1/gossip", request)
        self.figures["rows_merged"] += self.protocol.absorb(peer, request, answer)
        delta = self.protocol.follow_up(peer, answer)
        if delta is not None:
            reply = await self._post(peer, "/v1/gossip/delta", delta)
            self.protocol.acknowledge(peer, answer, reply)
        return not answer["complete"] or (delta is not None and not delta["complete"])

    def _exchange_failed(self, peer: str, error: str, peer_fault: bool) -> None:
        self.figures["exchange_failures"] += 1
        self._failures_since_success += 1
        self.last_error = f"exchange with {peer}: {error}"
        log.warning("gossip %s: %s", self.node, self.last_error)
        self._report(peer, MANIFEST_ARTIFACT, error)
        if peer_fault:
            self.breakers.failure(peer, error)

    def _report(self, peer: str, artifact: str, error: str) -> None:
        """Every failure is an event: a DATA_SYNC_FAILED with reason ``gossip`` (the next
        round tries again, so no retry time is given)."""
        self._emit(DataSyncFailed(
            source=self.node, target=peer, artifact=artifact, error=error, attempt=1,
            retry_in_seconds=None, reason="gossip", strategy="gossip"))

    async def pull(self, exchanged: list[str]) -> None:
        """Ask holders to send what routing says this node should hold and it lacks."""
        wanted = self.pulls.wanted(self.max_pulls)
        await asyncio.gather(*(self._ask(art, exchanged) for art in wanted))

    async def _ask(self, art: Artifact, exchanged: list[str]) -> None:
        sources = self.router.pull_sources(art)
        if not sources:
            self.figures["pulls_unsourced"] += 1
            return
        sources.sort(key=lambda n: n not in exchanged)  # stable: a fresh peer first
        body = {"origin": art.origin, "data_type": art.data_type, "path": art.path,
                "sha256": art.sha256, "to": self.node}
        for source in sources[:SOURCES_TRIED]:
            try:
                await self._post(source, "/v1/gossip/send", body, expect=202)
            except GossipError as exc:
                self.figures["pull_failures"] += 1
                self.last_error = f"pull of {art.key} from {source}: {exc}"
                log.warning("gossip %s: %s", self.node, self.last_error)
                self._report(source, art.key, f"send request refused: {exc}")
                if exc.unreachable:
                    self.breakers.failure(source, str(exc))
                continue
            self.figures["pulls_requested"] += 1
            self.pulls.asked(art, source)
            return

    async def _post(self, peer: str, path: str, body: dict[str, Any],
                    expect: int = 200) -> Any:
        """POST ``body`` as compact JSON to ``peer``; its JSON answer, or GossipError."""
        data = json.dumps(body, separators=(",", ":")).encode()
        self.figures["bytes_sent"] += len(data)
        try:
            answer = await self.client.call(
                peer, "POST", path, timeout=EXCHANGE_TIMEOUT_SECONDS, expect=(expect,),
                data=data, headers={"Content-Type": "application/json"})
        except PeerError as exc:
            raise GossipError(str(exc), unreachable=exc.unreachable) from None
        self.figures["bytes_received"] += len(answer.raw)
        return answer.body

    # -- serving ----------------------------------------------------------------------------
    def _check_sender(self, body: Any) -> None:
        name = body.get("node") if isinstance(body, dict) else None
        if isinstance(name, str) and name not in self.hosts:
            raise ProtocolError(f"{name!r} is not a host of this cluster")

    def serve_exchange(self, body: Any) -> dict[str, Any]:
        """Answer a peer's request (``POST /v1/gossip``); ProtocolError on bad input."""
        self._check_sender(body)
        answer = self.protocol.answer(body)
        self.served["exchanges"] += 1
        return answer

    def serve_delta(self, body: Any) -> dict[str, Any]:
        """Merge a peer's follow-up delta (``POST /v1/gossip/delta``)."""
        self._check_sender(body)
        reply = self.protocol.take_delta(body)
        self.served["deltas"] += 1
        self.served["rows_merged"] += reply["merged"]
        return reply

    # -- reporting --------------------------------------------------------------------------
    def _stats(self) -> dict[str, Any]:
        """Disk percent and backpressure for this node's answers."""
        return {"disk_percent": self._disk_percent(), "backpressure": self._pressure()}

    def status(self) -> dict[str, Any]:
        return {"interval_seconds": self.interval, "fanout": self.fanout, **self.figures,
                "pulls_arrived": self.pulls.arrived, "pulls_awaited": len(self.pulls.requested),
                "last_round_at": self.last_round_at, "last_error": self.last_error,
                "peers": self.peers, "served": {**self.served, **self.sender.status()}}

    def health_check(self) -> HealthCheckResult:
        now = time.monotonic()
        since = now - (self._last_success if self._last_success is not None else self._started)
        stale = since > 3 * self.interval and (self._had_peers or self._failures_since_success)
        details = {"exchanges": self.figures["exchanges"],
                   "exchange_failures": self.figures["exchange_failures"],
                   "seconds_since_exchange": round(since, 1), "last_error": self.last_error}
        if stale:
            return HealthCheckResult(False, f"no gossip exchange succeeded for {since:.0f}s"
                                     f" ({self.last_error or 'no answer'})", details)
        message = "gossiping" if self._had_peers else "no gossip peer up"
        return HealthCheckResult(True, message, details)
