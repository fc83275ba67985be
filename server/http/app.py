"""The ASGI application object for uvicorn (`server.http.app:app`), configured from the environment."""

from __future__ import annotations

from .api import create_app

app = create_app()
