"""The HTTP API's routes, one router per resource."""
