"""Transports: one interface (``Transport.push``), one module per way of moving bytes,
plugged in by name through ``engine.transport.registry``."""

from engine.transport import registry
from engine.transport.base import PushRequest, PushResult, Transport, TransferError
from engine.transport.http import HttpTransport
from engine.transport.batch_rsync import BatchRsync
from engine.transport.rsync import RsyncTransport

registry.register("http", lambda ctx: HttpTransport(ctx.session, ctx.node, ctx.bandwidth,
                                                    ctx.chunk_bytes))


def _rsync(ctx: registry.TransportContext) -> RsyncTransport:
    transport = RsyncTransport(ctx.session, ctx.node, ctx.bandwidth, ctx.host_of, ctx.ssh,
                               ctx.meter, pool=ctx.ssh_pool)
    transport.batch = BatchRsync(transport, ctx.ssh.control_dir)
    return transport


registry.register("rsync", _rsync)

__all__ = ["HttpTransport", "RsyncTransport", "PushRequest", "PushResult", "Transport", "TransferError", "registry"]
