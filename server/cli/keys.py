"""`ragkb keys ...` (create, list, revoke API keys) and `ragkb audit` (list the audit trail).

Mounted by `ragkb/cli.py` with `add_typer(keys_app, name="keys")` and `add_typer(audit_app, name="audit")`.
Both open the state database of the current settings and migrate it first, so they work before the
server has ever run. Key changes made here are audited with `key_name` None (the local operator).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from ingest.cli import JsonOption, console, err, exit_with_error

from ..state import Audit, KeyStore, Scope
from .state import open_state

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="List the audit trail, newest first.")

_SCOPES = ", ".join(s.value for s in Scope)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Unique name (shown in logs and the audit trail).")],
    scope: Annotated[str, typer.Option("--scope", help=f"What the key may do: {_SCOPES}.")],
    collections: Annotated[
        str | None, typer.Option("--collections", help="Comma-separated collections the key is limited to.")
    ] = None,
    all_collections: Annotated[bool, typer.Option("--all", help="Every collection, present and future.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print its token (once: only a hash is kept)."""
    if collections is not None and all_collections:
        raise exit_with_error("give either --collections or --all, not both")
    if collections is None and not all_collections:
        raise exit_with_error("say which collections the key may use: --collections a,b or --all")
    limited = None if all_collections else [c for c in (collections or "").split(",") if c.strip()]
    with open_state() as db:
        record, token = KeyStore(db, cache_ttl=0).create(name, scope, limited)
        Audit(db).record(
            "key.create",
            None,
            detail={"key": record.name, "scope": record.scope.value, "collections": record.as_dict()["collections"]},
        )
    if as_json:
        print(json.dumps({**_short(record.as_dict()), "token": token}))
        return
    where = "every collection" if record.collections is None else ", ".join(record.collections)
    console.print(f"created key [bold]{record.name}[/bold] ({record.scope.value}; {where})")
    err.print("the token is shown only this once; keep it secret:")
    print(token)


def _short(data: dict[str, object]) -> dict[str, object]:
    return {k: data[k] for k in ("name", "scope", "collections")}


@keys_app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """List keys with their scope and collections (never their tokens)."""
    with open_state() as db:
        records = KeyStore(db, cache_ttl=0).list()
    if as_json:
        print(json.dumps([r.as_dict() for r in records]))
        return
    if not records:
        console.print("no API keys: the server answers everyone (create one with `ragkb keys create`)")
        return
    table = Table("name", "scope", "collections", "token starts", "created")
    for r in records:
        where = "*" if r.collections is None else ", ".join(r.collections)
        table.add_row(r.name, r.scope.value, where, r.hint + "…", r.created_at.strftime("%Y-%m-%d %H:%M UTC"))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="Name of the key (see `ragkb keys list`).")]) -> None:
    """Revoke a key: its token stops working within seconds on running servers."""
    with open_state() as db:
        record = KeyStore(db, cache_ttl=0).revoke(name)
        Audit(db).record("key.revoke", None, detail={"key": record.name, "scope": record.scope.value})
    console.print(f"revoked key [bold]{record.name}[/bold]")


@audit_app.callback(invoke_without_command=True)
def audit_list(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most records to show.")] = 50,
    action: Annotated[str | None, typer.Option("--action", help="Only this action (e.g. key.create).")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only what this key did.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only records at or after this time (ISO 8601; UTC if no zone).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List audit records, newest first."""
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise exit_with_error(f"--since must be an ISO 8601 time such as 2026-01-31T12:00Z, got {since!r}") from None
    with open_state() as db:
        events = Audit(db).list(limit, action=action, since=start, key_name=key)
    if as_json:
        print(json.dumps([e.as_dict() for e in events]))
        return
    table = Table("at", "key", "action", "collection", "document", "request", "detail")
    for e in events:
        table.add_row(
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.key_name or "-",
            e.action,
            e.collection or "",
            e.document_id or "",
            e.request_id or "",
            json.dumps(e.detail) if e.detail else "",
        )
    console.print(table)
