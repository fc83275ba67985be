"""The `ragkb` command: one root that mounts the commands of `ingest`, `server` and `eval`."""
