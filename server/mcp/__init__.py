"""ragkb as an MCP server: the tools (`tools.py`), Streamable HTTP at `/mcp` (`http.py`), stdio (`ragkb mcp`)."""
