"""The query core: retrieval, prompts, the LLM providers, the cache, citation checks and the one answering
entry (`entry.Answerer`) every way in calls."""
