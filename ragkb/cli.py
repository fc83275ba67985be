"""`ragkb`, the one command-line entry point.

It only assembles: the ingestion commands (`ingest/cli.py`), the query-side
commands (`server/cli.py`) and `ragkb eval ...` (`eval/cli.py`). Imports go one
way: this module imports the three packages; none of them imports it.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from eval.cli import eval_app
from ingest.cli import app as ingest_app
from server.cli.keys import audit_app, keys_app
from server.cli.query import app as server_app
from server.cli.review import collections_app, feedback_app, review_app

app = typer.Typer(
    name="ragkb",
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
app.add_typer(eval_app, name="eval")
app.add_typer(keys_app, name="keys")  # ragkb keys create / list / revoke
app.add_typer(audit_app, name="audit")  # ragkb audit [--limit --action --key --since]
app.add_typer(review_app, name="review")  # ragkb review list / show / approve / reject
app.add_typer(feedback_app, name="feedback")  # ragkb feedback list / export
app.add_typer(collections_app, name="collections")  # ragkb collections set NAME --review POLICY / show

if __name__ == "__main__":
    app()
