"""What rendering one weekly report produces: two HTML documents from one context, plus the images.

The standalone file (`html`) carries its images as ``data:`` URIs so it opens offline; the email
(`email_html`) refers to the same images as ``cid:`` parts, because Gmail drops ``data:`` images.
Both documents come from the same `ReportContext`, so they never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.context_types import ReportContext


@dataclass(frozen=True)
class InlineImage:
    """One chart as PNG bytes, shared by both documents.

    `cid` is the Content-ID without angle brackets; it is unique within a report and made only of
    characters that are safe in a URL and a MIME header (letters, digits, '.', '-', '@').
    """

    cid: str
    png: bytes
    #: The alt text (already plain text; escaped by whoever writes it into HTML).
    alt: str


@dataclass(frozen=True)
class RenderedReport:
    """The report of one drop, ready to be written to disk and mailed."""

    context: ReportContext
    #: Standalone document: images as data URIs.
    html: str
    #: Email document: images as ``cid:`` references to `images`, CSS not yet inlined.
    email_html: str
    images: tuple[InlineImage, ...]
