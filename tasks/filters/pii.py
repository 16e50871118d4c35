"""Scrub personal data from the documents that survive the filters, as FineWeb did.

E-mail addresses and public IP addresses are replaced by fixed placeholders (from the settings;
they sit in reserved ranges, so a scrubbed text scrubs to itself); phone numbers too when the
`phones` switch is on. An IP address counts as public when `ipaddress` says it is globally
routable and not multicast: 10.x, 192.168.x, 127.0.0.1, ::1 and friends name no one and stay.
A string that only looks like an address (1.2.3.4.5, 999.1.1.1, a time like 12:30:45) is not
parsed as one and stays too, and so does a dotted quad that a version or section number's
context introduces ("Version 2.4.1.12", "section 1.2.3.4", "§ 1.2.3.4", a changelog heading
"## 1.2.3.4" or "1.2.3.4 (2019-05-02)"): those are numbers, not hosts.

Text of any script: an e-mail's local part and domain may hold any letters (RFC 6531 addresses
such as jöhn@bücher.de, почта@пример.рф; punycode xn-- labels too), and the writing around an
address or an IP need not be spaced, as Chinese and Japanese text is not. An address is cut where
the script changes at its edges ("请联系jane@example.org谢谢" is "jane@example.org"): a local part
starts after the last letter of another script, and a top-level domain ends at the first one.
Digits and . _ % + - belong to every script. IP addresses are bounded by ASCII letters and
digits only, so 服务器8.8.8.8上 holds one.

The step never drops a document; `counts` gets the replacements (`emails`, `ipv4`, `ipv6`,
`phones`). Every pattern is compiled once, each starts where matches are rare or is run only
after a cheap test of the text ("@" for e-mail, "h:h:" for IPv6), and none can backtrack more
than a bounded amount, so a pathological page costs linear time.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator

from infra.settings import PiiSettings
from tasks.pipeline import Document, Step

# An e-mail address is found from its "@" (rare, so the regex engine skips ahead to it): the
# domain is matched here, the local part read backwards in `_emails`.
_EMAIL_DOMAIN = re.compile(
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"  # one or more domain labels (IDN or ASCII)
    # The top-level domain: a punycode label, or letters, which may run on into the next word
    # of unspaced text ("org联系我们"); `_emails` cuts them where the script changes.
    r"(?P<tld>xn--[A-Za-z0-9-]{1,59}|[^\W\d_]+)"
)
_LOCAL_PART_SYMBOLS = frozenset("._%+-")
_MAX_LOCAL_PART = 64
# "logo@2x.png" is a retina image name, not an address.
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif"})
# Writing systems that run into each other without spaces count as one for the script cut.
_SCRIPT_GROUPS = dict.fromkeys(["HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "IDEOGRAPHIC", "FULLWIDTH"], "CJK")

# Four dot-separated groups of 1-3 digits, not part of a longer dotted or alphanumeric token
# (ASCII letters and digits: Chinese or Japanese text may touch an address). The check for what
# precedes sits after the first digit so the regex engine can skip ahead to digits instead of
# trying every position.
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)", re.ASCII)
# What introduces a version or section number, at the end of the text before a dotted quad on
# its line (English, German, French, Spanish, Chinese and Japanese words; "§"; "v").
_VERSION_BEFORE = re.compile(
    r"(?:\b(?:versions?|ver|v|releases?|rel|builds?|revisions?|rev|patch|firmware|kernel|"
    r"(?:changes|changed|fixed|new|added|removed|deprecated) in|since|until|"
    r"(?:upgrade|update|bump|downgrade)(?:d|s)? to|"
    r"sections?|sec|chapters?|clauses?|articles?|art|paragraphs?|para|parts?|annex|appendix|"
    r"abschnitt|kapitel|absatz|artikel|ziffer|teil|fassung|"
    r"versión|sección|capítulo|artículo|apartado|chapitre|paragraphe|article)|§|版本|バージョン|第)"
    r"[\s.:#(\[-]*$",
    re.IGNORECASE,
)
# A changelog heading: the number is a Markdown heading ("## [1.2.3.4]"), or opens a line (maybe
# as a list item) with a date after it: "1.2.3.4 (2019-05-02)", "- 1.2.3.4 / 2019-05-02".
_MARKDOWN_HEADING = re.compile(r"[ \t]*#+[ \t]*\[?")
_LINE_OPENING = re.compile(r"[ \t]*(?:[*+•-][ \t]+)?\[?")
_DATE_AFTER = re.compile(r"\]?[ \t]*[-–—/(:,]?[ \t]*\(?(?:\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4})")

_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")  # any IPv6 address has two colons at most 4 hex digits apart
_IPV6 = re.compile(
    r"(?<![\w:.])"
    r"(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)"  # at least two colons, so "10:30" is never a candidate
    r"[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?"  # an embedded IPv4 tail, as in ::ffff:8.8.8.8
    r"(?<![^:]:)"  # ends in a digit or "::", not in a colon that punctuates the sentence
    r"(?!\w|:[0-9A-Fa-f:]|\.\d)",
    re.ASCII,
)

_PHONE = re.compile(
    r"(?<![\w+])(?:"
    # international, E.164 style: +country then 2-6 groups of digits ("+44 20 7946 0958")
    r"(?P<international>\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}+)"
    # North American: (780) 800-7092, 780-800-7092, 780.800.7092, +1 780 800 7092
    r"|(?P<north_american>(?:1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]\d{4})"
    # European national with trunk prefix 0: 030 1234 5678, 06 12 34 56 78, (0)20 7946 0958
    r"|(?P<european>(?:\(0\)\d{1,4}|0\d{1,4})[ /.-]\d{2,4}(?:[ .-]\d{2,4}){1,3}+)"
    r")(?!\d|[-.]\d)"
)
# How many digits a real number of each kind has; anything else (dates, scores, ids) is left alone.
_PHONE_DIGITS = {"international": range(8, 16), "north_american": range(10, 12), "european": range(9, 13)}


class PiiScrubber(Step):
    name = "pii"

    def __init__(self, settings: PiiSettings | None = None) -> None:
        self.settings = settings or PiiSettings()

    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        s = self.settings
        text = doc.text
        found: Counter = Counter()
        if s.emails and "@" in text:
            text, found["emails"] = _replace(text, _emails(text), s.email_placeholder)
        if s.ips:
            if _IPV6_HINT.search(text):  # before IPv4, so ::ffff:8.8.8.8 is replaced whole
                text, found["ipv6"] = _replace(text, _matches(_IPV6, text, _is_public_ipv6), s.ipv6_placeholder)
            text, found["ipv4"] = _replace(text, _matches(_IPV4, text, _is_public_ipv4), s.ipv4_placeholder)
        if s.phones:
            text, found["phones"] = _replace(text, _matches(_PHONE, text, _is_phone), s.phone_placeholder)
        doc.text = text
        if counts is not None:
            counts.update(+found)  # unary + leaves out the zero counts
        return None


def _replace(text: str, spans: Iterator[tuple[int, int]], placeholder: str) -> tuple[str, int]:
    """`text` with each of `spans` (in order, not overlapping) replaced; and how many were.

    A span that already holds the placeholder is left, so scrubbing twice changes nothing.
    """
    pieces, done, replaced = [], 0, 0
    for start, end in spans:
        if text[start:end] != placeholder:
            pieces += [text[done:start], placeholder]
            done = end
            replaced += 1
    return ("".join(pieces) + text[done:], replaced) if replaced else (text, 0)


def _matches(pattern: re.Pattern, text: str, is_pii: Callable[[re.Match], bool]) -> Iterator[tuple[int, int]]:
    """The spans of the matches of `pattern` that `is_pii` confirms."""
    return (match.span() for match in pattern.finditer(text) if is_pii(match))


def _script(character: str) -> str | None:
    """The writing system of a letter (LATIN, CYRILLIC, CJK, ...); None for digits and symbols."""
    if not character.isalpha():
        return None
    script = unicodedata.name(character, "").split(" ", 1)[0]
    return _SCRIPT_GROUPS.get(script, script)


def _emails(text: str) -> Iterator[tuple[int, int]]:
    """The spans of the e-mail addresses in `text`, each cut where the script changes at its edges."""
    floor = 0  # the end of the last address: the next one's local part cannot reach back past it
    for domain in _EMAIL_DOMAIN.finditer(text):
        at = domain.start()
        # The local part: back from "@" over letters of the script nearest the "@", digits and
        # . _ % + -, at most 64 of them, and not starting with a dot.
        script = None
        first = at
        while first > floor and at - first < _MAX_LOCAL_PART + 1:
            character = text[first - 1]
            if not (character.isalnum() or character in _LOCAL_PART_SYMBOLS):
                break
            letter_script = _script(character)
            if letter_script is not None:
                if script is None:
                    script = letter_script
                elif letter_script != script:
                    break
            first -= 1
        if at - first > _MAX_LOCAL_PART:
            continue  # a run of 65 or more: not the start of an address
        while first < at and text[first] == ".":
            first += 1
        # The top-level domain: forward over the letters of its first letter's script...
        tld_start, last = domain.start("tld"), domain.end("tld")
        tld_script = _script(text[tld_start])
        if not text.startswith("xn--", tld_start):
            last = tld_start + 1
            while last < domain.end() and _script(text[last]) == tld_script:
                last += 1
        # ...which must end the word: not run on in digits, "-", "_" or letters of its script.
        after = text[last : last + 1]
        runs_on = after and (after in "-_" or after.isdigit() or _script(after) == tld_script)
        tld = text[tld_start:last]
        if first < at and not runs_on and 2 <= len(tld) <= 63 and tld.lower() not in _FILE_SUFFIXES:
            yield first, last
            floor = last


def _is_public_ipv4(match: re.Match) -> bool:
    return _is_public_ip(match) and not _is_version_number(match)


def _is_version_number(match: re.Match) -> bool:
    """Whether a dotted quad is introduced as a version or section number (see the docstring)."""
    text, start = match.string, match.start()
    line_start = text.rfind("\n", 0, start) + 1
    if _VERSION_BEFORE.search(text, max(line_start, start - 40), start):
        return True
    if _MARKDOWN_HEADING.fullmatch(text, line_start, start):
        return True
    opens_line = _LINE_OPENING.fullmatch(text, line_start, start) is not None
    return opens_line and _DATE_AFTER.match(text, match.end()) is not None


def _is_public_ip(match: re.Match) -> bool:
    try:
        address = ipaddress.ip_address(match.group())
    except ValueError:  # 999.1.1.1, 01.2.3.4, 12:30:45, ...
        return False
    return address.is_global and not address.is_multicast


def _is_public_ipv6(match: re.Match) -> bool:
    # Hex words around "::" ("a::b", "dead::beef" in C++ or Rust) parse as IPv6; real addresses
    # practically always hold a decimal digit.
    return any(character.isdigit() for character in match.group()) and _is_public_ip(match)


def _is_phone(match: re.Match) -> bool:
    digits = sum(character.isdigit() for character in match.group())
    return digits in _PHONE_DIGITS[match.lastgroup]
