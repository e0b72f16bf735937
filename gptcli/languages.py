"""Language names and codes for ``translate --to/--from``: ``fr``, ``French``, ``français``, ``zh-CN``."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from gptcli.errors import UsageError


@dataclass(frozen=True)
class Language:
    """A language as the prompt names it (``name``) and as the user may type it (``code``)."""

    code: str
    name: str

    @property
    def spaceless(self) -> bool:
        """Written without spaces between words or sentences (Chinese, Japanese, Thai...)."""
        return self.code.split("-")[0] in _SPACELESS


AUTO = Language("auto", "auto")

# code, English name, other names people type (native names first)
_TABLE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("af", "Afrikaans", ()),
    ("am", "Amharic", ("አማርኛ",)),
    ("ar", "Arabic", ("العربية",)),
    ("az", "Azerbaijani", ("azərbaycan",)),
    ("be", "Belarusian", ("беларуская",)),
    ("bg", "Bulgarian", ("български",)),
    ("bn", "Bengali", ("বাংলা", "bangla")),
    ("bs", "Bosnian", ("bosanski",)),
    ("ca", "Catalan", ("català",)),
    ("cs", "Czech", ("čeština", "cestina")),
    ("cy", "Welsh", ("cymraeg",)),
    ("da", "Danish", ("dansk",)),
    ("de", "German", ("deutsch",)),
    ("el", "Greek", ("ελληνικά",)),
    ("en", "English", ()),
    ("eo", "Esperanto", ()),
    ("es", "Spanish", ("español", "espanol", "castellano")),
    ("et", "Estonian", ("eesti",)),
    ("eu", "Basque", ("euskara",)),
    ("fa", "Persian", ("فارسی", "farsi")),
    ("fi", "Finnish", ("suomi",)),
    ("fil", "Filipino", ("tagalog",)),
    ("fr", "French", ("français", "francais")),
    ("ga", "Irish", ("gaeilge",)),
    ("gl", "Galician", ("galego",)),
    ("gu", "Gujarati", ("ગુજરાતી",)),
    ("he", "Hebrew", ("עברית",)),
    ("hi", "Hindi", ("हिन्दी",)),
    ("hr", "Croatian", ("hrvatski",)),
    ("hu", "Hungarian", ("magyar",)),
    ("hy", "Armenian", ("հայերեն",)),
    ("id", "Indonesian", ("bahasa indonesia",)),
    ("is", "Icelandic", ("íslenska",)),
    ("it", "Italian", ("italiano",)),
    ("ja", "Japanese", ("日本語",)),
    ("ka", "Georgian", ("ქართული",)),
    ("kk", "Kazakh", ("қазақ",)),
    ("km", "Khmer", ("ខ្មែរ",)),
    ("kn", "Kannada", ("ಕನ್ನಡ",)),
    ("ko", "Korean", ("한국어",)),
    ("lo", "Lao", ("ລາວ",)),
    ("lt", "Lithuanian", ("lietuvių",)),
    ("lv", "Latvian", ("latviešu",)),
    ("mk", "Macedonian", ("македонски",)),
    ("ml", "Malayalam", ("മലയാളം",)),
    ("mn", "Mongolian", ("монгол",)),
    ("mr", "Marathi", ("मराठी",)),
    ("ms", "Malay", ("bahasa melayu",)),
    ("my", "Burmese", ("မြန်မာ",)),
    ("nb", "Norwegian Bokmål", ("norwegian", "norsk", "bokmål", "no")),
    ("ne", "Nepali", ("नेपाली",)),
    ("nl", "Dutch", ("nederlands", "flemish")),
    ("nn", "Norwegian Nynorsk", ("nynorsk",)),
    ("pa", "Punjabi", ("ਪੰਜਾਬੀ",)),
    ("pl", "Polish", ("polski",)),
    ("pt", "Portuguese", ("português", "portugues")),
    ("ro", "Romanian", ("română", "romana")),
    ("ru", "Russian", ("русский",)),
    ("sk", "Slovak", ("slovenčina",)),
    ("sl", "Slovenian", ("slovenščina", "slovene")),
    ("sq", "Albanian", ("shqip",)),
    ("sr", "Serbian", ("српски", "srpski")),
    ("sv", "Swedish", ("svenska",)),
    ("sw", "Swahili", ("kiswahili",)),
    ("ta", "Tamil", ("தமிழ்",)),
    ("te", "Telugu", ("తెలుగు",)),
    ("th", "Thai", ("ไทย",)),
    ("tr", "Turkish", ("türkçe", "turkce")),
    ("uk", "Ukrainian", ("українська",)),
    ("ur", "Urdu", ("اردو",)),
    ("uz", "Uzbek", ("oʻzbek",)),
    ("vi", "Vietnamese", ("tiếng việt",)),
    ("zh", "Chinese", ("中文", "汉语", "漢語", "mandarin")),
    ("zh-CN", "Simplified Chinese", ("chinese simplified", "简体中文", "zh-hans", "zh-sg")),
    ("zh-TW", "Traditional Chinese", ("chinese traditional", "繁體中文", "zh-hant", "zh-hk")),
    ("pt-BR", "Brazilian Portuguese", ("portuguese brazil", "português do brasil")),
    ("pt-PT", "European Portuguese", ("portuguese portugal",)),
    ("en-US", "American English", ("english us",)),
    ("en-GB", "British English", ("english uk", "en-uk")),
    ("es-MX", "Mexican Spanish", ()),
    ("fr-CA", "Canadian French", ("québécois", "quebecois")),
)

_SPACELESS = {"zh", "ja", "th", "lo", "km", "my"}

# region subtags for tags the table does not list (``de-AT`` -> "German (Austria)")
_REGIONS = {
    "AR": "Argentina", "AT": "Austria", "AU": "Australia", "BE": "Belgium", "BR": "Brazil",
    "CA": "Canada", "CH": "Switzerland", "CL": "Chile", "CO": "Colombia", "DE": "Germany",
    "ES": "Spain", "FR": "France", "GB": "United Kingdom", "IE": "Ireland", "IN": "India",
    "IT": "Italy", "MX": "Mexico", "NZ": "New Zealand", "PT": "Portugal", "US": "United States",
    "ZA": "South Africa",
}


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().replace("_", "-")).casefold()


def _index() -> dict[str, Language]:
    index: dict[str, Language] = {}
    for code, name, aliases in _TABLE:
        lang = Language(code, name)
        for key in (code, name, *aliases):
            index.setdefault(_fold(key), lang)
    return index


_BY_KEY = _index()


def resolve_language(text: str, *, option: str = "--to", allow_auto: bool = False) -> Language:
    """A language from a code or a name, case-insensitive; unknown ones are a usage error with a hint."""
    key = _fold(text)
    if not key:
        raise UsageError(f"{option} needs a language (for example {option} fr)")
    if allow_auto and key in ("auto", "detect"):
        return AUTO
    if key in _BY_KEY:
        return _BY_KEY[key]
    # a language tag with a region the table does not list: de-AT, es-AR
    base, sep, region = key.partition("-")
    if sep and base in _BY_KEY and re.fullmatch(r"[a-z]{2}|\d{3}", region):
        lang = _BY_KEY[base]
        where = _REGIONS.get(region.upper(), region.upper())
        return Language(f"{lang.code}-{region.upper()}", f"{lang.name} ({where})")
    close = difflib.get_close_matches(key, list(_BY_KEY), n=3, cutoff=0.75)
    hint = f" (did you mean {', '.join(_BY_KEY[c].name for c in dict.fromkeys(close))}?)" if close else ""
    raise UsageError(f"{option}: unknown language '{text}'{hint}; give a code like fr, de, zh-CN or a name like French")


def known_languages() -> list[Language]:
    """Every language in the table, in code order."""
    return [Language(code, name) for code, name, _ in _TABLE]
