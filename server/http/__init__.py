"""The HTTP API: the app, its parts, authentication, typed dependencies and the routes."""
