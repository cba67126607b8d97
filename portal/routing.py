"""WebSocket routes: one live endpoint per browser tab."""

from __future__ import annotations

from django.urls import path

from portal.consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
]
