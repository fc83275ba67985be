"""Loaders for everyday office formats, one module per family; `ingest.loaders` registers them."""

from __future__ import annotations

from collections.abc import Callable

from ..models import ExtractedDocument
from .epub import load_epub
from .mail import load_eml, load_msg
from .opendoc import load_odt
from .rtf import load_rtf
from .scans import load_image
from .sheets import load_csv, load_xlsx
from .slides import load_pptx
from .word import load_docx

FORMAT_LOADERS: dict[str, Callable[[bytes, str], ExtractedDocument]] = {
    ".docx": load_docx,
    ".pptx": load_pptx,
    ".xlsx": load_xlsx,
    ".csv": load_csv,
    ".tsv": load_csv,
    ".odt": load_odt,
    ".rtf": load_rtf,
    ".epub": load_epub,
    ".eml": load_eml,
    ".msg": load_msg,
    ".png": load_image,
    ".jpg": load_image,
    ".jpeg": load_image,
    ".tif": load_image,
    ".tiff": load_image,
}

__all__ = ["FORMAT_LOADERS"]
