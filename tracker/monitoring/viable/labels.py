"""Sample labels: the sample's code as a QR code (or DataMatrix-compatible text for printers that
make their own), so taking and reading can be recorded by scanning it on a phone.

``segno`` renders QR codes in pure Python (no image libraries), as SVG for the screen and the
label printer's PDF alike. The code holds only the sample identifier: nothing else to trust.
"""

from __future__ import annotations

import io

import segno


def qr_svg(code: str, *, scale: int = 4) -> str:
    """The label's QR code as an SVG document (error correction M: survives a smudged label)."""
    qr = segno.make_qr(code, error="m")
    out = io.BytesIO()
    qr.save(out, kind="svg", scale=scale, border=2, xmldecl=False, svgns=True, title=code)
    return out.getvalue().decode("utf-8")
