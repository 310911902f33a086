"""Babel catalogues of the web app (``translations/<locale>/LC_MESSAGES/messages.po``).

The ``.po`` files are the source; they are compiled in memory when the app starts, so there is
no build step and no binary in the repository. ``scripts/i18n`` re-extracts the messages from
the templates and ``tracker/web/words.py`` and updates the catalogues.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

TRANSLATIONS = Path(__file__).parent / "translations"
LANGS = {"zh-CN": "zh_CN", "en": "en"}
DEFAULT_LANG = "zh-CN"


def catalogue_path(lang: str) -> Path:
    return TRANSLATIONS / LANGS[lang] / "LC_MESSAGES" / "messages.po"


@lru_cache(maxsize=4)
def translations(lang: str) -> Translations:
    with catalogue_path(lang).open("rb") as fh:
        catalog = read_po(fh, locale=LANGS[lang])
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(buf)


def pick_lang(value: str | None) -> str:
    return value if value in LANGS else DEFAULT_LANG
