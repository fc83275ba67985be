"""ragkb query service: retrieval, versioned prompts, cached LLM calls and validated, cited answers."""
