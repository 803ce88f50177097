"""Connections: how messages move. See `base.Connection` for the contract."""

from .base import BatchFailure, Connection, OutgoingMessage, QueueInfo, ReceivedMessage

__all__ = ["BatchFailure", "Connection", "OutgoingMessage", "QueueInfo", "ReceivedMessage"]
