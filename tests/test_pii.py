"""PII scrubbing: what is replaced, what is left alone, and what is counted."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from infra.settings import PiiSettings
from tasks.filters.pii import PiiScrubber
from tasks.pipeline import Document

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata is absent")


def scrub(text: str, **settings) -> tuple[str, Counter]:
    doc = Document(id="d", url="u", text=text)
    counts: Counter = Counter()
    assert PiiScrubber(PiiSettings(**settings)).apply(doc, counts) is None  # never drops
    return doc.text, counts


@pytest.mark.parametrize(
    "address",
    [
        "jane@example.org",
        "john.doe+newsletter@mail.example.co.uk",
        "J_Smith-99@Sub.Domain.Example.COM",
        "x%y@a-b.example.io",
        "first.last@xn--bcher-kva.ch",
    ],
)
def test_emails_are_replaced(address):
    assert scrub(f"Write to {address}, or call.") == ("Write to email@example.com, or call.", Counter(emails=1))


def test_email_at_the_end_of_a_sentence_and_after_an_ellipsis():
    text, counts = scrub("Contact: ...ann@site.net. Or bob@site.net.")
    assert text == "Contact: ...email@example.com. Or email@example.com."
    assert counts == Counter(emails=2)


@pytest.mark.parametrize(
    "text",
    [
        "Retina images like logo@2x.png are not addresses.",
        "A handle like @someone or user@localhost is not an address.",
        "Prices: 3 @ $4.",
    ],
)
def test_not_emails(text):
    assert scrub(text) == (text, Counter())


@pytest.mark.parametrize(
    ("address", "kind"),
    [("8.8.8.8", "ipv4"), ("151.101.1.69", "ipv4"), ("2606:4700:4700::1111", "ipv6"),
     ("2a00:1450:4001:0829:0000:0000:0000:200e", "ipv6"), ("::ffff:8.8.4.4", "ipv6")],
)
def test_public_ips_are_replaced(address, kind):
    placeholder = PiiSettings().ipv4_placeholder if kind == "ipv4" else PiiSettings().ipv6_placeholder
    assert scrub(f"Host {address}: up. Peer [{address}]:443.") == (
        f"Host {placeholder}: up. Peer [{placeholder}]:443.",
        Counter({kind: 2}),
    )


@pytest.mark.parametrize(
    "text",
    [
        "Private 10.0.0.1, 192.168.1.254, 172.16.5.4, loopback 127.0.0.1, link-local 169.254.1.1.",
        "Unspecified 0.0.0.0, broadcast 255.255.255.255, test net 203.0.113.7, multicast 224.0.0.251.",
        "IPv6 loopback ::1, link-local fe80::1, unique local fd12:3456:789a::1, docs 2001:db8::42.",
        "Version 1.2.3.4.5, build v1.2.3.4, bad 999.1.1.1, padded 01.02.03.04, 1.2.3, 10.1.1.1234.",
        "Dates 12.10.2021 and 2021.10.12, scores 3.5.6.7.8, times 12:30:45 and 10:30, 3:1 odds.",
        "C++ std::vector, Rust a::b and dead::beef, a MAC 00:1a:2b:3c:4d:5e, the :: operator.",
    ],
)
def test_private_and_lookalike_addresses_are_left_alone(text):
    assert scrub(text) == (text, Counter())


def test_counts_add_up_and_scrubbing_twice_changes_nothing():
    text = "a@b.org wrote from 8.8.8.8 and 1.1.1.1 via 2606:4700::6810:85e5 to c@d.org, not 10.0.0.1."
    once, counts = scrub(text)
    assert counts == Counter(emails=2, ipv4=2, ipv6=1)
    assert scrub(once) == (once, Counter())


def test_switches():
    text = "mail a@b.org from 8.8.8.8"
    assert scrub(text, emails=False)[0] == "mail a@b.org from 192.0.2.1"
    assert scrub(text, ips=False)[0] == "mail email@example.com from 8.8.8.8"
    assert scrub(text, email_placeholder="<EMAIL>", ipv4_placeholder="<IP>")[0] == "mail <EMAIL> from <IP>"


@pytest.mark.parametrize(
    "number",
    [
        "+1 780 800 7092",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+4930123456789",
        "(780) 800-7092",
        "780-800-7092",
        "780.800.7092",
        "06 12 34 56 78",
        "030 1234 5678",
    ],
)
def test_phone_numbers_when_switched_on(number):
    text = f"Call {number} today."
    assert scrub(text) == (text, Counter())  # off by default
    assert scrub(text, phones=True) == ("Call <PHONE> today.", Counter(phones=1))


@pytest.mark.parametrize(
    "text",
    [
        "On 2021-10-12 and 01.02.2023, from 1990-2000, the score was 3-2.",
        "ISBN 978-3-16-148410-0, order 12345678901234567890, extension 555-1234.",
        "Population 8 400 000, and 1 234 567 in 2020.",
        "Version 10.1.2024 and IP 192.168.1.100.",
    ],
)
def test_not_phone_numbers(text):
    assert scrub(text, phones=True) == (text, Counter())


@needs_realdata
def test_real_text_keeps_its_length_and_ordinary_numbers():
    with open(REALDATA / "pretrain_text" / "llama_factory_c4_demo.jsonl") as lines:
        texts = [json.loads(line)["text"] for line in lines]
    total: Counter = Counter()
    for text in texts:
        scrubbed, counts = scrub(text)
        total.update(counts)
        assert (scrubbed == text) == (not counts)
    # A handful of contact addresses in 300 pages, and no IP address on these pages.
    assert 1 <= total["emails"] <= 30
    assert total["ipv4"] == total["ipv6"] == 0
