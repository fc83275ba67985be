"""The ASGI application object for uvicorn (`server.http.app:app`), configured from the environment: the
server process `ragkb serve` runs, so it freezes its start-up heap (heap.py)."""

from __future__ import annotations

from .api import create_app

app = create_app(freeze_heap=True)
