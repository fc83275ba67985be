"""Office, e-mail and e-book loaders on the real files of ../shared/office (Apache Tika's test documents):
the text Tika's own tests assert, the structure a citation needs, and a clear error for each bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from eval.format_expectations import ABSENT, EXPECTED
from ingest.errors import CorruptDocument, EmptyDocument, EncryptedDocument, FileTooLarge, IngestError
from ingest.formats import base
from ingest.linked import with_attachments_text
from ingest.loaders import load_bytes, supported_extensions
from ingest.models import ExtractedDocument

OFFICE = Path(__file__).resolve().parents[2] / "shared" / "office"


def _load(name: str) -> ExtractedDocument:
    return load_bytes((OFFICE / name).read_bytes(), name)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _section_of(doc: ExtractedDocument, phrase: str) -> tuple[int | None, str | None]:
    for section in doc.sections:
        if phrase in _flat(doc.text[section.start : section.end]):
            return section.page, section.heading
    raise AssertionError(f"{phrase!r} is in no section")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_text_and_exact_sections(name: str) -> None:
    doc = _load(name)
    text = _flat(with_attachments_text(doc))  # an e-mail's attachments are documents of their own
    missing = [phrase for phrase in EXPECTED[name] if _flat(phrase) not in text]
    assert not missing, f"{name}: missing {missing}"
    present = [phrase for phrase in ABSENT.get(name, []) if phrase in text]
    assert not present, f"{name}: noise kept: {present}"
    previous_end = 0
    for section in doc.sections:  # sections index the text exactly, in order, without overlap
        assert previous_end <= section.start < section.end <= len(doc.text)
        chunk = doc.text[section.start : section.end]
        assert chunk == chunk.strip() and chunk
        previous_end = section.end
    covered = " ".join(doc.text[s.start : s.end] for s in doc.sections)
    assert _flat(covered) == _flat(doc.text.replace("\n\n", " ")), "text outside every section"


def test_every_new_format_is_registered() -> None:
    for suffix in (".docx", ".pptx", ".xlsx", ".csv", ".odt", ".rtf", ".epub", ".eml", ".msg"):
        assert suffix in supported_extensions()


def test_docx_headings_tables_footnotes_and_text_boxes() -> None:
    doc = _load("testWORD.docx")
    assert doc.title == "Sample Word Document"
    assert _section_of(doc, "This is a sample Microsoft Word Document.") == (
        None,
        "Heading Level 1 > Heading Level 2 > Heading Level 3",
    )
    various = _load("testWORD_various.docx")
    # a table row carries its header labels; footnotes are a section of their own
    assert "Row 1 Col 1: Row 2 Col 1; Row 1 Col 2: Row 2 Col 2; Row 1 Col 3: Row 2 Col 3" in various.text
    assert _section_of(various, "This is a footnote.") == (None, "Footnotes")
    assert "- Bullet 1" in various.text
    box = _load("testWORD_text_box.docx")
    assert box.text.count("This text is inside of a text box in the body") == 1  # not its VML fallback too
    assert _section_of(_load("testWORD_endnote_table.docx"), "Cat Property Act") == (None, "Endnotes")


def test_pptx_slides_are_pages_with_titles_and_notes(tmp_path: Path) -> None:
    doc = _load("testPPT.pptx")
    assert doc.title == "Attachment Test"
    assert _section_of(doc, "Attachment Test") == (1, "Attachment Test")
    assert _section_of(doc, "Mystery")[0] == 3
    from pptx import Presentation

    deck = Presentation()
    for number in (1, 2):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = f"Quarter {number} review"
        slide.placeholders[1].text = f"Revenue grew in quarter {number}."
        slide.notes_slide.notes_text_frame.text = f"Mention the Oslo office only on slide {number}."
    buffer = io.BytesIO()
    deck.save(buffer)
    made = load_bytes(buffer.getvalue(), "review.pptx")
    assert _section_of(made, "Notes: Mention the Oslo office only on slide 2.") == (2, "Quarter 2 review")
    assert "Revenue grew in quarter 1." in made.text


def test_footers_are_kept_only_when_a_deck_has_nothing_else() -> None:
    assert "Master footer is here" in _load("testPPT_masterFooter.pptx").text
    assert "This is the footer text." not in _load("testPPT_various.pptx").text


def test_spreadsheet_sheets_are_sections_and_rows_carry_headers() -> None:
    doc = _load("testEXCEL.xlsx")
    assert doc.title == "Simple Excel document"
    assert _section_of(doc, "Number: 14; Square: 196") == (None, "Feuil1")
    columnar = _load("test-columnar.xlsx")
    row = next(line for line in columnar.text.split("\n\n") if "This is row 3 of 10" in line)
    assert row.startswith("Record Number: 3; Square of the Record Number: 9; Description of the Row: This is row 3")
    assert _section_of(columnar, "This is row 3 of 10")[1] == "testing"
    csv_doc = _load("test-columnar.csv")
    assert "Record Number: 3; Square of the Record Number: 9" in csv_doc.text


def test_csv_rows_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.formats import sheets

    monkeypatch.setattr(sheets, "MAX_TABLE_ROWS", 5)
    data = "id,name\n" + "".join(f"{i},row {i}\n" for i in range(50))
    doc = load_bytes(data.encode(), "big.csv")
    assert "name: row 3" in doc.text and "row 10" not in doc.text
    assert any("first 5 rows" in warning for warning in doc.warnings)


def test_email_fields_and_attachments_as_documents_of_their_own() -> None:
    eml = _load("testRFC822_multipart_attachments.eml")
    assert eml.title == "EML 1"
    assert _section_of(eml, "This is test email for EML1") == (None, "Message: EML 1")
    assert "Attachments: Test TxtA.txt, Test TxtB.txt" in eml.text
    assert "Test TXTB File" not in eml.text  # the attachment is a document of its own, not part of the message
    assert [a.name for a in eml.attachments] == ["Test TxtA.txt", "Test TxtB.txt"]
    txtb = eml.attachments[1]
    assert _flat(txtb.document.text) == "This is Test TXTB File for parser"
    assert txtb.data == b"This is Test TXTB File for parser"  # the attachment's own bytes, kept as its original
    msg = _load("testMSG.msg")
    assert msg.title == "MIME registry use cases"
    assert "From: Jukka Zitting <jukka.zitting@gmail.com>" in msg.text
    assert "Date: 2009-01-29T19:16:40+00:00" in msg.text
    assert msg.attachments == []  # Tika's testMSG.msg carries no attachment


def test_attachment_names_are_unique_and_without_folders() -> None:
    from ingest.formats.mail import attachment_name

    taken: set[str] = set()
    names = [attachment_name(n, taken) for n in ["a.txt", "A.txt", "dir/b.txt", "..\\c.txt", "", "notes"]]
    assert names == ["a.txt", "A (2).txt", "b.txt", "c.txt", "attachment", "notes"]


def test_nested_messages_are_bounded() -> None:
    inner = b"Subject: innermost\nFrom: a@example.com\n\nthe bottom\n"
    for depth in range(6):
        b = f"b{depth}".encode()
        inner = (
            b"Subject: level " + str(depth).encode() + b"\nFrom: a@example.com\nMIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="' + b + b'"\n\n--' + b + b"\nContent-Type: text/plain\n\nbody\n"
            b"--"
            + b
            + b'\nContent-Type: message/rfc822\nContent-Disposition: attachment; filename="m.eml"\n\n'
            + inner
            + b"\n--"
            + b
            + b"--\n"
        )
    doc = load_bytes(inner, "nested.eml")
    assert "Subject: level 5" in doc.text and "Subject: level 4" not in doc.text
    everything = with_attachments_text(doc)
    assert "Subject: level 2" in everything and "the bottom" not in everything
    assert "Subject: level 1" not in everything  # three levels of attached messages below the top one
    warnings = [w for a in doc.attachments for b in a.document.attachments for c in b.document.attachments
                for w in c.document.warnings]  # fmt: skip
    assert any("nest deeper" in warning for warning in warnings)


def test_epub_chapters_are_sections() -> None:
    doc = _load("testEPUB.epub")
    assert doc.title.startswith("An ePub")
    assert _section_of(doc, "This is the text for chapter Two") == (None, "Chapter 2")
    assert _section_of(doc, "Table data") == (None, "Chapter 2 > Subchapter 2.2")


def test_odt_and_rtf() -> None:
    assert _load("testOpenOffice2.odt").kind == "odt"
    assert _load("testRTF.rtf").title == "Test d\u2019indexation Word"


# -- bad input: each a clear IngestError -------------------------------------------------------------


def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buffer.getvalue()


def test_truncated_docx_is_corrupt() -> None:
    with pytest.raises(CorruptDocument, match="not a readable DOCX"):
        _load("testWORD_truncated.docx")


def test_zip_bomb_is_refused_before_it_is_unpacked() -> None:
    bomb = _zip({"word/document.xml": b"<a>" + b" " * (20 * 1024 * 1024) + b"</a>"})
    assert len(bomb) < 100_000
    with pytest.raises(FileTooLarge, match="zip bomb"):
        load_bytes(bomb, "bomb.docx")
    for suffix in (".pptx", ".xlsx", ".odt", ".epub"):
        with pytest.raises(FileTooLarge):
            load_bytes(bomb, f"bomb{suffix}")


def test_archive_of_too_many_parts_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "MAX_ZIP_MEMBERS", 10)
    with pytest.raises(FileTooLarge, match="parts"):
        load_bytes(_zip({f"p{i}.xml": b"<a/>" for i in range(11)}), "many.docx")


def test_xml_entities_are_refused() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE w [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r>'
        b"<w:t>&b;</w:t></w:r></w:p></w:body></w:document>"
    )
    with pytest.raises(CorruptDocument, match="entities"):
        load_bytes(_zip({"word/document.xml": laughs}), "laughs.docx")
    external = b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]><c>&x;</c>'
    with pytest.raises(CorruptDocument):
        load_bytes(_zip({"META-INF/container.xml": external}), "xxe.epub")


def test_deep_nesting_is_refused() -> None:
    w = b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    nested = b"<w:tbl><w:tr><w:tc>" * 300 + b"<w:p><w:r><w:t>deep</w:t></w:r></w:p>" + b"</w:tc></w:tr></w:tbl>" * 300
    document = b"<w:document " + w + b"><w:body>" + nested + b"</w:body></w:document>"
    with pytest.raises(CorruptDocument, match="nests deeper"):
        load_bytes(_zip({"word/document.xml": document}), "deep.docx")


def test_password_protected_files_are_refused_with_the_reason() -> None:
    # Office wraps an encrypted package in an OLE2 compound file with an EncryptionInfo stream
    ole = base.OLE_MAGIC + b"\x00" * 100 + "EncryptionInfo".encode("utf-16-le") + b"\x00" * 100
    for suffix in (".docx", ".xlsx", ".pptx"):
        with pytest.raises(EncryptedDocument, match="password-protected"):
            load_bytes(ole, f"secret{suffix}")
    buffer = io.BytesIO(_zip({"content.xml": b"<x/>"}))
    raw = bytearray(buffer.getvalue())
    # set the "encrypted" flag bit on the central directory entry, as a ZIP password tool does
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 8] |= 0x1
    with pytest.raises(EncryptedDocument):
        load_bytes(bytes(raw), "secret.odt")
    manifest = b'<manifest:manifest xmlns:manifest="x"><manifest:encryption-data/></manifest:manifest>'
    with pytest.raises(EncryptedDocument):
        load_bytes(_zip({"META-INF/manifest.xml": manifest, "content.xml": b"<x/>"}), "locked.odt")


def test_legacy_binary_office_file_says_what_to_do() -> None:
    legacy = base.OLE_MAGIC + b"\x00" * 600
    with pytest.raises(CorruptDocument, match="legacy binary Office file"):
        load_bytes(legacy, "old.docx")


@pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx", ".odt", ".epub", ".msg", ".rtf"])
def test_wrong_or_empty_content_is_a_clear_error(suffix: str) -> None:
    with pytest.raises(EmptyDocument):
        load_bytes(b"   ", f"blank{suffix}")
    with pytest.raises(IngestError) as caught:
        load_bytes(b"this is plain text, not the format the name says", f"wrong{suffix}")
    assert f"wrong{suffix}" in str(caught.value)


def test_docx_without_text_is_empty() -> None:
    w = b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body/></w:document>'
    with pytest.raises(EmptyDocument, match="no text"):
        load_bytes(_zip({"word/document.xml": w}), "blank.docx")
