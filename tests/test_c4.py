"""C4 line and document rules: what each rule removes, where the thresholds sit, and the rewrite."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from infra.settings import C4Settings
from tasks.pipeline import Document
from tasks.filters.quality.c4 import C4Filter

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata is absent")

# Five sentences on four lines, every line long enough: the smallest document C4 keeps.
CLEAN = [
    "The river rises in the northern hills. It runs south for two hundred miles.",
    "Farmers along its banks grow wheat and barley.",
    "In spring the water often floods the lower fields!",
    "Does anyone still fish there?",
]


def run(lines: list[str], settings: C4Settings | None = None) -> tuple[str | None, str, Counter]:
    """(drop reason, text after the step, counts) for a document made of `lines`."""
    doc = Document(id="d", url="u", text="\n".join(lines))
    counts: Counter = Counter()
    reason = C4Filter(settings).apply(doc, counts)
    return reason, doc.text, counts


def test_clean_text_is_kept_unchanged():
    assert run(CLEAN) == (None, "\n".join(CLEAN), Counter())


def test_minimum_sentences():
    assert run(CLEAN[:3])[0] == "c4_too_few_sentences"  # four sentences
    assert run(CLEAN[:3] + ["And then it ends"])[0] is None  # a last piece without punctuation counts


def test_text_is_rewritten_with_the_kept_lines_only():
    lines = ["  Home  ", "", CLEAN[0], "Menu Login", "   ", *CLEAN[1:], "Share this"]
    reason, text, counts = run(lines)
    assert reason is None
    assert text == "\n".join(CLEAN)
    assert counts == Counter(c4_line_too_few_words=3)  # blank lines are not counted


def test_minimum_words_per_line():
    assert run(CLEAN + ["Three words here."])[1].endswith("Three words here.")
    assert run(CLEAN + ["Two words."])[2] == Counter(c4_line_too_few_words=1)


def test_javascript_lines_are_removed_in_any_case():
    reason, text, counts = run(CLEAN + ["Please enable JavaScript to view this page."])
    assert reason is None and "JavaScript" not in text
    assert counts == Counter(c4_line_javascript=1)


@pytest.mark.parametrize(
    "line",
    [
        "By using this site you agree to our Terms of Use.",
        "Read our privacy policy before signing up.",
        "See the cookie policy for details.",
        "This website uses cookies to improve your experience.",
        "We explain our use of cookies below.",
        "We use cookies and similar tools.",
    ],
)
def test_policy_lines_are_removed(line):
    reason, text, counts = run(CLEAN + [line])
    assert (reason, text, counts) == (None, "\n".join(CLEAN), Counter(c4_line_policy=1))


def test_a_cookie_recipe_is_not_policy():
    assert run(CLEAN + ["Bake the cookies for ten minutes."])[1].endswith("ten minutes.")


def test_citation_markers_are_removed():
    lines = [line.replace(".", ".[1]", 1) for line in CLEAN]
    lines[1] = "Farmers[citation needed] along its banks grow wheat and barley [12]."
    lines.append("History[edit]")  # a heading: one word once the marker is gone
    lines.append("See also [3]")  # three tokens, but two words once the marker is gone
    reason, text, counts = run(lines)
    assert reason is None
    assert "[" not in text
    assert text.splitlines()[1] == "Farmers along its banks grow wheat and barley ."
    assert counts == Counter(c4_citations=5, c4_line_too_few_words=2)


def test_citations_can_be_kept():
    assert "[1]" in run([CLEAN[0] + "[1]", *CLEAN[1:]], C4Settings(remove_citations=False))[1]


def test_word_length_limit():
    assert run(CLEAN + ["A word of " + "x" * 1000 + " characters."])[0] is None
    reason, text, counts = run(CLEAN + ["A word of " + "x" * 1001 + " characters."])
    assert text == "\n".join(CLEAN) and counts == Counter(c4_line_long_word=1)


def test_lorem_ipsum_drops_the_document():
    assert run(CLEAN + ["Lorem ipsum dolor sit amet."])[0] == "c4_lorem_ipsum"


def test_curly_bracket_drops_the_document():
    assert run(CLEAN + ["function f() { return 1; }"])[0] == "c4_curly_bracket"


def test_document_rules_only_look_at_lines_that_survived_the_line_rules():
    # C4's order: a two-word line is gone before "{" or "lorem ipsum" is looked for.
    assert run(CLEAN + ["{ }", "lorem ipsum"])[0] is None
    # and a javascript line is gone before its bracket is seen
    assert run(CLEAN + ["Enable javascript { now }"])[0] is None


def test_terminal_punctuation_filter_is_off_by_default_and_selectable():
    lines = CLEAN + ["A line without an ending", "A line that trails off..."]
    assert run(lines)[1] == "\n".join(lines)
    reason, text, counts = run(lines, C4Settings(filter_no_terminal_punct=True))
    assert text == "\n".join(CLEAN)
    assert counts == Counter(c4_line_no_terminal_punct=2)


def test_nothing_left():
    assert run(["Home", "About us", "", "Contact"])[0] == "c4_empty_after_line_filter"
    assert run([])[0] == "c4_empty_after_line_filter"


@needs_realdata
def test_real_c4_documents_survive_with_their_lines():
    with open(REALDATA / "pretrain_text" / "llama_factory_c4_demo.jsonl") as lines:
        texts = [json.loads(line)["text"] for line in lines]
    kept = 0
    for text in texts:
        reason, rewritten, _ = run(text.splitlines())
        if reason is None:
            kept += 1
            assert all(len(line.split()) >= 3 for line in rewritten.splitlines())
        else:
            # The released C4 asked for 3 sentences; FineWeb (and these settings) ask for 5.
            assert reason == "c4_too_few_sentences"
    assert kept >= 0.8 * len(texts)
