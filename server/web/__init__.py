"""The web page for people: Ask, Documents, Review and Sign-in, served by the API process (docs/web.md)."""

from .routes import router

__all__ = ["router"]
