"""Japanese and English for the console, from gettext catalogs.

The catalogs live in ``locale/{ja,en}/LC_MESSAGES/meshdesk.mo`` beside this file
(sources ``meshdesk.po``; ``make i18n`` re-extracts and compiles them). The
language is chosen once per app: ``--lang`` wins, then ``$LC_ALL``/``$LC_MESSAGES``/
``$LANG``, then the node's configured language.
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

__all__ = [
    "LOCALE_DIR",
    "N_",
    "Lang",
    "choose_language",
    "current_language",
    "gettext_for",
    "set_language",
    "tr",
]

Lang = Literal["ja", "en"]
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "meshdesk"

_current: gettext.NullTranslations = gettext.NullTranslations()
_lang: Lang = "en"


def gettext_for(lang: Lang) -> gettext.NullTranslations:
    """The catalog of ``lang``; English msgids are the fallback for anything missing."""
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True)


def set_language(lang: Lang) -> None:
    """Make ``lang`` the language of every later :func:`tr` call."""
    global _current, _lang
    _current = gettext_for(lang)
    _lang = lang


def current_language() -> Lang:
    return _lang


def tr(message: str) -> str:
    """Translate ``message`` into the current language (extracted as a gettext keyword)."""
    return _current.gettext(message)


def N_(message: str) -> str:
    """Mark ``message`` for extraction; translated later with :func:`tr`."""
    return message


def choose_language(
    flag: str | None, env: Mapping[str, str], configured: str | None = None
) -> Lang:
    """``--lang`` if given, else the locale's language, else the node's configured one."""
    if flag in ("ja", "en"):
        return flag  # type: ignore[return-value]
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if not value:
            continue
        code = value.split(".")[0].split("_")[0].lower()
        if code == "ja":
            return "ja"
        if code == "en":
            return "en"
        if code not in ("c", "posix"):
            break  # a locale we have no catalog for: use the configured language
    return "en" if configured == "en" else "ja"
