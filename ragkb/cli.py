"""`ragkb`, the one command-line entry point.

It only assembles: the ingestion commands (`ingest/cli.py`), the query-side
commands (`server/cli/`) and `ragkb eval ...` (`eval/cli.py`). Imports go one
way: this module imports the three packages; none of them imports it.

The named command groups (`ragkb eval`, `keys`, `audit`, `review`, `feedback`, `collections`) are imported
only when one of them runs: `ragkb --help` and `ragkb ingest ...` do not load the state database's
migrations (SQLAlchemy, Alembic) or the review desk's answering stack. `ragkb --help` lists them from
`LAZY_GROUPS` (tests/test_cli.py checks that those one-line helps are the groups' own).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from ingest.cli import app as ingest_app
from server.cli.query import app as server_app

if TYPE_CHECKING:
    from typer import _click as click  # the click that this Typer vendors (its groups' types)

# name: (module, Typer attribute, the group's one-line help as `ragkb --help` lists it)
LAZY_GROUPS: dict[str, tuple[str, str, str]] = {
    "eval": ("eval.cli", "eval_app", "Offline evaluation on BEIR-format datasets, and the regression gate."),
    "keys": ("server.cli.keys", "keys_app", "Create, list and revoke API keys."),  # create / list / revoke
    "audit": ("server.cli.keys", "audit_app", "List the audit trail, newest first."),  # [--limit --action ...]
    "review": (  # list / show / approve / reject
        "server.cli.review",
        "review_app",
        "The review queue: list, show, approve, reject (or retry) answers; list and withdraw curated answers.",
    ),
    "feedback": ("server.cli.review", "feedback_app", "Feedback on answers: list it, or export it as JSONL."),
    "collections": (  # set NAME --review POLICY / show
        "server.cli.review",
        "collections_app",
        "List collections; `set` and `show` manage their review policy.",
    ),
}


def load_group(name: str) -> click.Command:
    """The click group of `ragkb NAME` (its module imported now), as `add_typer(..., name=NAME)` builds it."""
    module, attribute, _ = LAZY_GROUPS[name]
    holder = typer.Typer()
    holder.add_typer(getattr(importlib.import_module(module), attribute), name=name)
    return typer.main.get_group(holder).commands[name]


class _LazyGroups(TyperGroup):
    """The top-level group: each of LAZY_GROUPS is a placeholder with its help until it is the command run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, (_, _, text) in LAZY_GROUPS.items():
            self.commands[name] = TyperGroup(name=name, help=text, rich_markup_mode=self.rich_markup_mode)
        self._loaded: set[str] = set()

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in LAZY_GROUPS and args[0] not in self._loaded:
            self.commands[args[0]] = load_group(args[0])
            self._loaded.add(args[0])
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="ragkb",
    cls=_LazyGroups,
    help="ragkb: a self-hosted knowledge base that answers questions from your documents, with citations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


app.add_typer(ingest_app)  # no name: its commands sit at the top (ragkb ingest, ragkb documents, ...)
app.add_typer(server_app)  # ragkb serve, ragkb ask, ragkb cache ..., ragkb llm ...

if __name__ == "__main__":
    app()
