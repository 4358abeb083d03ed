"""The chat app's errors: one tree.

::

    RealtimeError           base of every chat error
     └── RoomExists         create_room: a room with this name exists already

The sockets' own errors (closed, protocol, handshake) are the WebSocket
stack's: :mod:`project.websocket.exceptions`.
"""

from __future__ import annotations


class RealtimeError(Exception):
    """Base of the chat app's errors."""


class RoomExists(RealtimeError):
    """A room with this name exists already; the name is the argument."""
