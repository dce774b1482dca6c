"""Evidence rules: allowed types and sizes, slots, and the server-side check of an upload."""

from __future__ import annotations

from .model import Evidence

__all__ = [
    "ALLOWED_CONTENT_TYPES",
    "HEAD_BYTES",
    "MAX_EVIDENCE_BYTES",
    "MAX_SLOTS",
    "inspect_upload",
    "sniff_content_type",
]

ALLOWED_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "application/pdf")
MAX_EVIDENCE_BYTES = 10 * 1024 * 1024
MAX_SLOTS = 10
HEAD_BYTES = 16
"""How many leading bytes the type check reads."""


def sniff_content_type(head: bytes) -> str | None:
    """The real type of a file from its first bytes, among the allowed ones, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def inspect_upload(slot: Evidence, size: int, head: bytes) -> str | None:
    """Why an uploaded object does not count as ``slot``'s evidence, or None if it does.

    Clients and S3 emulators can lie about size and type, so both are judged from the object
    itself: its real size and the signature in its first bytes.
    """
    if size < 1:
        return "the uploaded file is empty"
    if size > slot.size:
        return f"the uploaded file has {size} bytes, more than the {slot.size} declared"
    real_type = sniff_content_type(head)
    if real_type != slot.content_type:
        found = real_type or "not an allowed type"
        return f"the uploaded file is {found}, not the declared {slot.content_type}"
    return None
