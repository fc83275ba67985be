"""The headers every page and static file carries. The Content-Security-Policy allows scripts, styles and
requests from this origin only: no inline script, no inline event handler, no inline style, no plugin, no
framing. All text from users and documents is set with `textContent` by `static/app.js` (never as HTML),
and Jinja2 autoescapes what the templates render."""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# The static files the pages use, and their types (nothing else under static/ is served).
STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "ask.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
