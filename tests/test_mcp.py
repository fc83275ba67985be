"""The MCP door with the official `mcp` SDK as the client: over Streamable HTTP at `/mcp` of the real app on a
loopback port, and over stdio against a real `ragkb mcp` process. Tools listed, each one called, a bad argument,
a key without access to a collection, no key at all."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from typer.testing import CliRunner

from ingest.config import get_settings
from ragkb.cli import app
from server.http.api import create_app

from .browser import LiveServer

runner = CliRunner()
TOOLS = {"search", "ask", "list_collections", "read_passage", "get_document_outline"}


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stdout + result.stderr
    return result.stdout


@dataclass
class Kb:
    data_dir: Path
    tokens: dict[str, str]


@pytest.fixture
def kb(cli_env: Path, tmp_path: Path, shared_pdfs: Path) -> Kb:
    """`docs` (multi_page.pdf) and `secret` (a Markdown note); a key for both, one limited to `docs`."""
    pdf = tmp_path / "pdf"
    pdf.mkdir()
    shutil.copy(shared_pdfs / "docling" / "multi_page.pdf", pdf)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "plan.md").write_text("# Plan\n\nThe launch code name is Bluebird.\n")
    _cli("ingest", str(pdf), "-c", "docs", "--json")
    _cli("ingest", str(secret), "-c", "secret", "--json")
    tokens = {}
    for name, scope, where in (
        ("all", "read", ["--all"]),
        ("limited", "read", ["--collections", "docs"]),
    ):
        tokens[name] = json.loads(_cli("keys", "create", "--name", name, "--scope", scope, *where, "--json"))["token"]
    return Kb(cli_env, tokens)


@pytest.fixture
def live(kb: Kb) -> Iterator[str]:
    with LiveServer(create_app(get_settings())) as server:
        yield server.url


def _http(url: str, token: str) -> Client:
    http_client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http_client))


def _data(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text) if result.structured_content is None else result.structured_content


async def _exercise(client: Client, *, sees_secret: bool) -> None:
    """Every tool, as a key limited to `docs` (or one for both collections) sees them."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    assert tools["search"].input_schema["properties"]["top_k"]["maximum"] == 20
    assert all(t.description for t in tools.values())

    listed = _data(await client.call_tool("list_collections", {}))
    names = [c["name"] for c in (listed["result"] if isinstance(listed, dict) else listed)]
    assert names == (["docs", "secret"] if sees_secret else ["docs"])

    found = _data(
        await client.call_tool("search", {"query": "When was the typewriter patented?", "collection": "docs"})
    )
    first = found["passages"][0]
    assert first["source"].endswith("multi_page.pdf") and first["page"] == 1 and "1868" in first["text"]
    assert {"score", "chunk_id", "heading", "title"} <= set(first)

    answer = _data(
        await client.call_tool("ask", {"question": "When was the typewriter patented?", "collection": "docs"})
    )
    assert not answer["held"] and "1868" in answer["answer"] and "[1]" in answer["answer"]
    assert answer["citations"][0]["page"] == 1 and answer["grounded"] and not answer["abstained"]

    passage = _data(await client.call_tool("read_passage", {"chunk_id": first["chunk_id"], "collection": "docs"}))
    assert passage["chunk_id"] == first["chunk_id"] and passage["text"] == first["text"]

    outline = _data(await client.call_tool("get_document_outline", {"document": first["source"], "collection": "docs"}))
    assert outline["passages"] and outline["passages"][0]["page"] == 1
    assert first["chunk_id"] in {p["chunk_id"] for p in outline["passages"]}

    # a bad argument: the schema refuses it and the tool says why
    bad = await client.call_tool("search", {"query": "typewriter", "top_k": 500})
    assert bad.is_error and "top_k" in bad.content[0].text
    missing = await client.call_tool("read_passage", {"chunk_id": "nope:0:0", "collection": "docs"})
    assert missing.is_error and "no passage" in missing.content[0].text

    secret = await client.call_tool("search", {"query": "launch code name", "collection": "secret"})
    if sees_secret:
        assert "Bluebird" in _data(secret)["passages"][0]["text"]
    else:  # the limited key: as missing as a collection that does not exist, and it is not named
        assert secret.is_error and "unknown collection 'secret'" in secret.content[0].text
        assert "may read: docs" in secret.content[0].text
        asked = await client.call_tool("ask", {"question": "What is the launch code name?", "collection": "secret"})
        assert asked.is_error and "Bluebird" not in asked.content[0].text


@pytest.mark.slow
def test_mcp_over_http_with_the_api_keys(kb: Kb, live: str) -> None:
    async def run() -> None:
        async with _http(live, kb.tokens["limited"]) as client:
            await _exercise(client, sees_secret=False)
        async with _http(live, kb.tokens["all"]) as client:
            await _exercise(client, sees_secret=True)

    asyncio.run(run())


@pytest.mark.slow
def test_mcp_http_refuses_a_missing_or_bad_key(kb: Kb, live: str) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    none = httpx.post(f"{live}/mcp", json=init, headers=headers)
    assert none.status_code == 401 and none.json()["code"] == "unauthorized"
    assert none.headers["WWW-Authenticate"] == "Bearer"
    bad = httpx.post(f"{live}/mcp", json=init, headers={**headers, "Authorization": "Bearer rk_nope"})
    assert bad.status_code == 401

    async def refused() -> None:
        async with _http(live, "rk_nope") as client:
            await client.list_tools()

    with pytest.raises(BaseException):  # noqa: B017 - the SDK raises its own transport error for the 401
        asyncio.run(refused())


def _stdio(kb: Kb, token: str | None) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGKB_")}
    env |= {"RAGKB_DATA_DIR": str(kb.data_dir), "RAGKB_MAX_FILE_BYTES": "2000000"}
    if token is not None:
        env["RAGKB_API_KEY"] = token
    return StdioServerParameters(command=str(Path(sys.executable).parent / "ragkb"), args=["mcp"], env=env)


@pytest.mark.slow
def test_mcp_over_stdio(kb: Kb) -> None:
    async def run() -> None:
        async with Client(_stdio(kb, kb.tokens["limited"]), read_timeout_seconds=120) as client:
            await _exercise(client, sees_secret=False)

    asyncio.run(run())


@pytest.mark.slow
def test_ragkb_mcp_refuses_a_bad_key_at_start(kb: Kb) -> None:
    result = runner.invoke(app, ["mcp", "--api-key", "rk_nope"])
    assert result.exit_code != 0 and "not valid" in result.stdout + result.stderr
    result = runner.invoke(app, ["mcp"], env={"RAGKB_API_KEY": ""})
    assert result.exit_code != 0 and "API key is required" in result.stdout + result.stderr
