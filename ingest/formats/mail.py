"""E-mail: EML (MIME) through the standard library's `email` package, Outlook MSG through olefile (the
MSG-specific extract-msg is GPL-licensed; the few properties needed are read here by their MAPI tags).

A message is a section "Message" (subject as its heading) holding Subject, From, To, Cc, Date and
Attachments lines and the body (the plain-text part, else the HTML part through the HTML loader). Each
attachment of a supported type is read with its own loader and returned beside the message
(`ExtractedDocument.attachments`): the pipeline stores it as a document of its own, linked to the message
(`ingest/linked.py`, docs/ingestion.md). Nested messages are bounded by `MAX_NESTING`, attachments by
`MAX_ATTACHMENTS`, and one attachment that cannot be read is a warning, not the message's failure.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import email
import email.policy
import io
import struct
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from ..errors import CorruptDocument, IngestError
from ..models import Attachment, ExtractedDocument
from .base import OLE_MAGIC, TextBuilder, check_bytes, unreadable_as

MAX_NESTING = 3
MAX_ATTACHMENTS = 50
MAX_OLE_STREAM = 32 * 1024 * 1024

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("ragkb_mail_depth", default=0)


@dataclass
class _Message:
    headers: list[tuple[str, str]]
    body: str = ""
    html: bytes = b""
    attachments: list[tuple[str, bytes]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def attachment_name(filename: str, taken: set[str]) -> str:
    """An attachment's name as the last part of its document's source: its base name (no folders), made unique
    among the message's attachments ("a.txt", "a (2).txt")."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or "attachment"
    stem, dot, suffix = base.rpartition(".")
    stem, suffix = (stem, f".{suffix}") if dot and stem else (base, "")
    name, number = base, 1
    while name.lower() in taken:
        number += 1
        name = f"{stem} ({number}){suffix}"
    taken.add(name.lower())
    return name


def _render(message: _Message, name: str, kind: str) -> ExtractedDocument:
    from ..loaders import html_document, load_bytes

    subject = next((value for key, value in message.headers if key == "Subject"), "")
    out = TextBuilder()
    out.section(heading=f"Message: {subject}" if subject else "Message")
    names = [filename for filename, _ in message.attachments[:MAX_ATTACHMENTS]]
    headers = [*message.headers, ("Attachments", ", ".join(names))]
    out.add("\n".join(f"{key}: {value}" for key, value in headers if value))
    body = message.body
    if not body.strip() and message.html:
        document = html_document(message.html, name, kind="html")
        body = document.text if document else ""
    out.add(body.replace("\r\n", "\n").replace("\r", "\n"))
    out.warnings.extend(message.skipped)
    depth = _depth.get()
    attachments: list[Attachment] = []
    taken: set[str] = set()
    for index, (filename, payload) in enumerate(message.attachments):
        if index >= MAX_ATTACHMENTS:
            out.warnings.append(f"only the first {MAX_ATTACHMENTS} attachments are read")
            break
        if depth + 1 > MAX_NESTING:
            out.warnings.append(f"attachment {filename}: messages nest deeper than {MAX_NESTING}; not read")
            continue
        token = _depth.set(depth + 1)
        try:
            document = load_bytes(payload, filename)
        except IngestError as exc:
            out.warnings.append(f"attachment {filename}: {exc}")
            continue
        finally:
            _depth.reset(token)
        attachments.append(Attachment(attachment_name(filename, taken), payload, document))
    built = out.build(name, title=subject or Path(name).stem, kind=kind)
    built.attachments = attachments
    return built


def load_eml(data: bytes, name: str) -> ExtractedDocument:
    check_bytes(data, name, kind="e-mail", binary_ok=True)
    with unreadable_as(CorruptDocument, f"{name}: not a readable e-mail message"):
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        fields = ("Subject", "From", "To", "Cc", "Date")
        message = _Message(headers=[(key, str(parsed.get(key) or "")) for key in fields])
        if not any(value for _, value in message.headers) and not parsed.is_multipart():
            raise CorruptDocument(f"{name}: no e-mail headers found (Subject, From, To, Date); is it an e-mail?")
        plain = parsed.get_body(preferencelist=("plain",))
        html = parsed.get_body(preferencelist=("html",))
        if plain is not None:
            message.body = str(plain.get_content())
        elif html is not None:
            message.html = str(html.get_content()).encode("utf-8")
        for part in parsed.iter_attachments():
            filename = part.get_filename() or ""
            if part.get_content_type() == "message/rfc822":
                inner = part.get_payload(0) if part.is_multipart() else None
                if isinstance(inner, email.message.Message):
                    message.attachments.append((filename or "attached.eml", inner.as_bytes()))
                continue
            if not filename:
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                message.attachments.append((filename, payload))
    return _render(message, name, "email")


# MAPI property tags (the high half of a __substg1.0_ stream name); 001F = UTF-16, 001E = 8-bit text.
_SUBJECT, _SENDER, _SENDER_ADDRESS, _TO, _CC, _BODY, _HTML, _HEADERS = (
    "0037",
    "0C1A",
    "0C1F",
    "0E04",
    "0E03",
    "1000",
    "1013",
    "007D",
)


# PR_CLIENT_SUBMIT_TIME and PR_MESSAGE_DELIVERY_TIME, PT_SYSTIME: fixed-size entries of the properties stream.
_TIME_TAGS = (0x00390040, 0x0E060040)


def _submit_time(properties: bytes | None) -> str:
    """The message's sent (else delivered) time from the top-level properties stream (32-byte header, then
    16-byte entries: tag, flags, value), as ISO 8601 UTC; "" if absent."""
    if not properties:
        return ""
    found: dict[int, int] = {}
    for offset in range(32, len(properties) - 15, 16):
        tag, _flags, value = struct.unpack_from("<IIQ", properties, offset)
        if tag in _TIME_TAGS:
            found[tag] = value
    for tag in _TIME_TAGS:
        if found.get(tag):
            moment = dt.datetime(1601, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=found[tag] // 10)
            return moment.isoformat(timespec="seconds")
    return ""


def load_msg(data: bytes, name: str) -> ExtractedDocument:
    check_bytes(data, name, kind="Outlook message", binary_ok=True)
    if not data.startswith(OLE_MAGIC):
        raise CorruptDocument(f"{name}: not an Outlook .msg file (no OLE2 signature)")
    import olefile

    with unreadable_as(CorruptDocument, f"{name}: not a readable Outlook message"):
        ole = olefile.OleFileIO(io.BytesIO(data))
        try:
            message = _msg(ole, [], name)
        finally:
            ole.close()
    return _render(message, name, "email")


def _msg(ole: object, prefix: list[str], name: str) -> _Message:
    def stream(path: list[str]) -> bytes | None:
        if not ole.exists("/".join(path)):  # type: ignore[attr-defined]
            return None
        if ole.get_size("/".join(path)) > MAX_OLE_STREAM:  # type: ignore[attr-defined]
            raise CorruptDocument(f"{name}: an Outlook property is larger than {MAX_OLE_STREAM} bytes")
        data: bytes = ole.openstream("/".join(path)).read()  # type: ignore[attr-defined]
        return data

    def text(base: list[str], tag: str) -> str:
        wide = stream([*base, f"__substg1.0_{tag}001F"])
        if wide is not None:
            return wide.decode("utf-16-le", "replace").rstrip("\x00")
        narrow = stream([*base, f"__substg1.0_{tag}001E"])
        return narrow.decode("cp1252", "replace").rstrip("\x00") if narrow is not None else ""

    sender = text(prefix, _SENDER)
    address = text(prefix, _SENDER_ADDRESS)
    if address and address not in sender:
        sender = f"{sender} <{address}>" if sender else address
    date = ""
    transport = text(prefix, _HEADERS)
    if transport:
        parsed = email.message_from_string(transport, policy=email.policy.default)
        date = str(parsed.get("Date") or "")
    date = date or _submit_time(stream([*prefix, "__properties_version1.0"]))
    message = _Message(
        headers=[
            ("Subject", text(prefix, _SUBJECT)),
            ("From", sender),
            ("To", text(prefix, _TO)),
            ("Cc", text(prefix, _CC)),
            ("Date", date),
        ],
        body=text(prefix, _BODY),
        html=stream([*prefix, f"__substg1.0_{_HTML}0102"]) or b"",
    )
    storages = {tuple(entry[: len(prefix) + 1]) for entry in ole.listdir(streams=True, storages=True)}  # type: ignore[attr-defined]
    for entry in sorted(storages):
        if len(entry) <= len(prefix) or not entry[-1].startswith("__attach_version1.0_"):
            continue
        base = list(entry)
        filename = text(base, "3707") or text(base, "3704") or entry[-1]
        payload = stream([*base, "__substg1.0_37010102"])
        if payload is not None:
            message.attachments.append((filename, payload))
        elif ole.exists("/".join([*base, "__substg1.0_3701000D"])):  # type: ignore[attr-defined]
            message.skipped.append(f"attachment {filename}: an embedded Outlook item, not read")
    return message
