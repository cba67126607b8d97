"""WebSocket routes. The live consumer arrives with the real-time layer."""

from __future__ import annotations

websocket_urlpatterns: list = []
