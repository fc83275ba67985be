"""The ceiling of `eval/bench_http.py`: a bare FastAPI route on the same uvicorn as `ragkb serve`.

    python -m eval.bench_http_ceiling --port PORT --body ANSWER.json

`POST /v1/query` returns the JSON object in ANSWER.json (the bench saves a real cache-hit answer there, so the
body is the same size) through FastAPI's own JSON response; nothing else happens per request: no middleware, no
validation of the request, no state. uvicorn is started exactly as `ragkb serve` starts it (one worker, no
access log, ragkb's log config not applied), so the gap between the two is ragkb's own work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI


def make_app(body: dict[str, Any]) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/query")
    async def query() -> dict[str, Any]:
        return body

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True, help="JSON object the route returns.")
    args = parser.parse_args(argv)
    body = json.loads(args.body.read_text())
    if not isinstance(body, dict):
        parser.error(f"--body must hold a JSON object, not {type(body).__name__}")

    import uvicorn

    uvicorn.run(make_app(body), host=args.host, port=args.port, workers=1, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
