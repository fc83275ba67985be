"""Prompt templates live in this folder as files, one per purpose, versioned in their front matter."""
