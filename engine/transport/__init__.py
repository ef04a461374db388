"""Transports: one interface (``Transport.push``), one module per way of moving bytes."""

from engine.transport.base import PushRequest, PushResult, Transport, TransferError
from engine.transport.http import HttpTransport

__all__ = ["HttpTransport", "PushRequest", "PushResult", "Transport", "TransferError"]
