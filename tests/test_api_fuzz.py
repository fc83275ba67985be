"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), in-process over ASGI,
with a read key: no request may cause a 5xx, and every response must match the schema (status code,
content type, body). Bounded: at most MAX_EXAMPLES generated requests per operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.service import QueryService
from server.http.api import create_app
from server.state import Scope

from .helpers import reader_for

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
KEY: dict[str, str] = {}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[FastAPI]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "docs").mkdir()
    (root / "docs" / "fuzz.md").write_text("# Fuzzing\n\nThe default collection of the fuzzing run.\n")
    kb = Settings(data_dir=root / "kb", rate_limit_burst=1_000_000, rate_limit_per_minute=1_000_000)
    ingestor = Ingestor(kb, embedder=embedder)
    assert ingestor.ingest_paths([root / "docs"], collection=kb.default_collection).added == 1
    app = create_app(kb, QueryService(kb, reader=reader_for(ingestor)))
    yield app
    asgi.shutdown_lifespans()  # schemathesis started the app's lifespan; end it with the module


@pytest.fixture(scope="module")
def api_schema(fuzz_app: FastAPI) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)  # starts the app (lifespan)
    parts = fuzz_app.state.components
    KEY["token"] = parts.keys.create("fuzzer", Scope.READ, None)[1]
    return schema


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the schema, read without starting the app."""
    app = create_app(Settings(data_dir=Path("/nonexistent-fuzz")))
    return [(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item]


OPERATIONS = _operations()


# The quick loop fuzzes the two operations every answer goes through; the whole suite fuzzes them all.
QUICK = {("POST", "/v1/query"), ("POST", "/v1/retrieve")}


@pytest.mark.parametrize(
    ("method", "path"),
    [pytest.param(m, p, id=f"{m} {p}", marks=() if (m, p) in QUICK else pytest.mark.slow) for m, p in OPERATIONS],
)
@pytest.mark.slow
def test_api_conforms_to_its_schema(api_schema: Any, method: str, path: str) -> None:
    """At most MAX_EXAMPLES generated requests to one operation (schemathesis' own pytest plugin does not run
    under pytest 9 yet, so the operation's strategy is driven by hypothesis directly)."""
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {KEY['token']}"}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        derandomize=True,  # the same examples every run, so CI is repeatable
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS)

    fuzz()


def test_schema_declares_bearer_auth(api_schema: Any) -> None:
    raw = api_schema.raw_schema
    assert raw["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert "/v1/keys" in raw["paths"] and len(OPERATIONS) >= 10
