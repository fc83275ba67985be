"""The query-side commands of `ragkb` (serve, ask, cache, llm; keys and audit; review and feedback)."""
