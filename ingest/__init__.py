"""ragkb ingestion: turn files into embedded, source-tracked chunks stored in Chroma.

Everything that knows how a chunk is made or stored lives here; the query
server and the eval harness reuse it rather than re-implement it.
"""

__version__ = "0.1.0"
