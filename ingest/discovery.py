"""Finding the files to ingest: explicit files, recursive directories, include/exclude globs.

Directories are walked following symlinks, with every visited directory's real
path remembered, so a symlink loop is reported once instead of recursing forever.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .loaders import supported_extensions

DEFAULT_EXCLUDES = (".*", "*/.*", "__pycache__", "*/__pycache__/*", "node_modules", "*/node_modules/*")


@dataclass(frozen=True, slots=True)
class Failure:
    path: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "error": self.error}


@dataclass(slots=True)
class Discovery:
    files: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def default_includes() -> list[str]:
    return [f"*{ext}" for ext in supported_extensions()]


def discover(paths: list[Path], *, include: list[str] | None = None, exclude: list[str] | None = None) -> Discovery:
    """Expand `paths` to the files to ingest; explicit files are always tried, even of unknown type."""
    includes = include or default_includes()
    excludes = list(DEFAULT_EXCLUDES) + list(exclude or [])
    found = Discovery()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            found.files.append(path)

    for root in paths:
        if not root.exists() and not root.is_symlink():
            found.failures.append(Failure(str(root), "no such file or directory"))
        elif root.is_symlink() and not root.exists():
            found.failures.append(Failure(str(root), "broken symbolic link"))
        elif root.is_dir():
            _walk(root, includes, excludes, found, add)
        elif root.is_file():
            add(root)
        else:
            found.failures.append(Failure(str(root), "not a regular file or directory"))
    return found


def _matches(relative: str, patterns: list[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _walk(root: Path, includes: list[str], excludes: list[str], found: Discovery, add: Callable[[Path], None]) -> None:
    visited: set[str] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:
            found.warnings.append(f"{directory}: symlink loop, not followed again")
            subdirs[:] = []
            continue
        visited.add(real)
        relative_dir = os.path.relpath(directory, root)
        kept = []
        for sub in sorted(subdirs):
            rel = sub if relative_dir == "." else f"{relative_dir}/{sub}"
            if _matches(rel, excludes):
                continue
            if os.path.realpath(os.path.join(directory, sub)) in visited:
                found.warnings.append(f"{os.path.join(directory, sub)}: symlink loop, not followed")
                continue
            kept.append(sub)
        subdirs[:] = kept
        for name in sorted(files):
            rel = name if relative_dir == "." else f"{relative_dir}/{name}"
            path = Path(directory) / name
            if _matches(rel, excludes):
                continue
            if not _matches(rel, includes):
                found.skipped.append(str(path))
                continue
            if not path.exists():
                found.failures.append(Failure(str(path), "broken symbolic link"))
                continue
            add(path)
