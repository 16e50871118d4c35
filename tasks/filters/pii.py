"""Scrub personal data from the documents that survive the filters, as FineWeb did.

E-mail addresses and public IP addresses are replaced by fixed placeholders (from the settings;
they sit in reserved ranges, so a scrubbed text scrubs to itself); phone numbers too when the
`phones` switch is on. An IP address counts as public when `ipaddress` says it is globally
routable and not multicast: 10.x, 192.168.x, 127.0.0.1, ::1 and friends name no one and stay.
A string that only looks like an address (1.2.3.4.5, 999.1.1.1, a time like 12:30:45) is not
parsed as one and stays too.

The step never drops a document; `counts` gets the replacements (`emails`, `ipv4`, `ipv6`,
`phones`). Every pattern is compiled once, each starts where matches are rare or is run only
after a cheap test of the text ("@" for e-mail, "h:h:" for IPv6), and none can backtrack more
than a bounded amount, so a pathological page costs linear time.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable

from infra.settings import PiiSettings
from tasks.pipeline import Document, Step

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9_%+-])"  # start where the local part starts, not in its middle
    r"[A-Za-z0-9_%+-][A-Za-z0-9._%+-]{0,63}"  # local part: letters, digits, . _ % + -, at most 64
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"  # one or more domain labels
    r"(?P<tld>[A-Za-z]{2,63})(?![\w-])"
)
# "logo@2x.png" is a retina image name, not an address.
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif"})

# Four dot-separated groups of 1-3 digits, not part of a longer dotted or alphanumeric token.
# The check for what precedes sits after the first digit so the regex engine can skip ahead to
# digits instead of trying every position.
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)")

_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")  # any IPv6 address has two colons at most 4 hex digits apart
_IPV6 = re.compile(
    r"(?<![\w:.])"
    r"(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)"  # at least two colons, so "10:30" is never a candidate
    r"[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?"  # an embedded IPv4 tail, as in ::ffff:8.8.8.8
    r"(?<![^:]:)"  # ends in a digit or "::", not in a colon that punctuates the sentence
    r"(?!\w|:[0-9A-Fa-f:]|\.\d)"
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
            text, found["emails"] = _substitute(_EMAIL, text, s.email_placeholder, _is_email)
        if s.ips:
            if _IPV6_HINT.search(text):  # before IPv4, so ::ffff:8.8.8.8 is replaced whole
                text, found["ipv6"] = _substitute(_IPV6, text, s.ipv6_placeholder, _is_public_ipv6)
            text, found["ipv4"] = _substitute(_IPV4, text, s.ipv4_placeholder, _is_public_ip)
        if s.phones:
            text, found["phones"] = _substitute(_PHONE, text, s.phone_placeholder, _is_phone)
        doc.text = text
        if counts is not None:
            counts.update(+found)  # unary + leaves out the zero counts
        return None


def _substitute(
    pattern: re.Pattern, text: str, placeholder: str, is_pii: Callable[[re.Match], bool]
) -> tuple[str, int]:
    """Replace the matches of `pattern` that `is_pii` confirms; return the text and how many."""
    replaced = 0

    def replace(match: re.Match) -> str:
        nonlocal replaced
        if match.group() == placeholder or not is_pii(match):
            return match.group()
        replaced += 1
        return placeholder

    return pattern.sub(replace, text), replaced


def _is_email(match: re.Match) -> bool:
    return match.group("tld").lower() not in _FILE_SUFFIXES


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
