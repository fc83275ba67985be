"""Alembic migrations of the state database, run by `StateDB.migrate()` (no alembic.ini: see
`server.state.db.alembic_config`).

A new revision, after changing `server/state/models.py` (autogenerate compares the models with a
database at the current head; read and tidy what it writes, then run tests/test_state.py):

    from server.state.db import StateDB, alembic_config
    from alembic import command
    db = StateDB("sqlite:////tmp/state.sqlite3"); db.migrate()
    with db.engine.begin() as conn:
        command.revision(alembic_config(conn), "what changed", autogenerate=True, rev_id="0002")

Name the file `rNNNN_<slug>.py` (a module name Python and mypy accept) and keep `down_revision`
pointing at the previous one.
"""
