"""Questions with known answers from the pipeline's documents (tasks/chat/qa.py) and the search
conversations made from them (tasks/chat/search_examples.py), on real news pages and their real
index: every answer is the document's own word, and every conversation's results are what the
index returns for its query and contain its answer."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from infra.storage import Storage
from model.chat import problem, render
from model.tokenizer import SEARCH_END, SEARCH_START, BpeTokenizer
from tasks.chat.conversations import load_conversations
from tasks.chat.qa import generate_qa, question_from, read_qa, stage_documents
from tasks.chat.search_examples import build_search_examples, search_query
from tasks.search.build import build_index
from tasks.search.index import SearchIndex
from tasks.search.results import format_results
from tests.conftest import REALDATA
from tests.test_search_index import real_pages, write_stage


@pytest.fixture(scope="module")
def stage(tmp_path_factory) -> str:
    if not REALDATA.exists():
        pytest.skip("../shared/realdata is absent")
    docs = real_pages()
    stage = write_stage(str(tmp_path_factory.mktemp("pages") / "stage"), {"a": docs[:100], "b": docs[100:]})
    build_index(stage)
    return stage


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("The Eiffel Tower in Paris was completed in 1889 after two years of work.",
         ("The Eiffel Tower in Paris was completed in what year after two years of work?", "1889", "year")),
        ("Shares of Acme Corp rose 12.5 percent in early trading on the Nasdaq exchange.",
         ("Shares of Acme Corp rose what percentage in early trading on the Nasdaq exchange?", "12.5 percent", "percentage")),
        ("The Springfield plant of Acme employs 3,200 people across two shifts and a warehouse.",
         ("The Springfield plant of Acme employs how many people across two shifts and a warehouse?", "3,200", "count")),
        ("It was completed in 1889 after two years of work by the Paris engineers.", "context_dependent"),
        ("The Eiffel Tower was completed in 1889 and repainted in 1907 by the city of Paris.", "several_answers"),
        ("The museum in Paris reopened to visitors last year after a long renovation.", "relative_time"),
        ("Shares of Acme closed at $185.25 on the Nasdaq exchange in New York.", "no_answer"),
        ("Was the Eiffel Tower in Paris completed in 1889 after two years of work?", "not_a_statement"),
        ("The tower was completed in 1889.", "too_short"),
        ("the tower was completed in 1889 after two years of work and a lot of money spent.", "not_a_statement"),
        ("The old tower was completed in 1889 after two years of hard work by many.", "no_named_subject"),
        ("O Miguel foi um grande parceiro durante 25 anos na equipa de Lisboa.", "not_english_prose"),
        ("The new Level 2 chargers from Acme can fill a battery overnight in most homes.", "no_answer"),
    ],
)
def test_question_rules(sentence, expected):
    result = question_from(sentence)
    if isinstance(expected, str):
        assert result == expected
    else:
        assert (result.question, result.answer, result.kind) == expected
        assert result.evidence == sentence and result.answer in sentence


def test_qa_is_deterministic_by_seed_and_answered_by_its_document(stage):
    documents = list(stage_documents(Storage(), stage))
    qas, funnel = generate_qa(documents, count=40, seed=0)
    assert len(qas) == 40
    texts = {document["id"]: document["text"] for document in documents}
    for qa in qas:
        assert qa.evidence in texts[qa.doc_id] and qa.answer in qa.evidence
        assert qa.answer not in qa.question  # the question does not give it away
    assert len({qa.doc_id for qa in qas}) == 40  # one question per document by default
    # Same seed, same questions, whatever order the documents come in; another seed, others.
    assert generate_qa(reversed(documents), count=40, seed=0)[0] == qas
    assert generate_qa(documents, count=40, seed=1)[0] != qas
    steps = funnel.to_dict()
    assert steps["documents"]["docs_in"] == 181 and steps["sentences"]["docs_out"] == steps["select"]["docs_in"]
    assert steps["select"]["docs_out"] == 40 and sum(steps["select"]["dropped"].values()) == steps["select"]["docs_in"] - 40
    assert set(steps["sentences"]["dropped"]) >= {"too_short", "no_answer", "context_dependent", "relative_time"}
    assert any(reason.startswith("language:") for reason in steps["documents"]["dropped"])  # fastText found non-English pages


def test_search_examples_are_backed_by_what_the_index_returns(stage):
    index = SearchIndex.open(stage)
    qas, _ = generate_qa(stage_documents(Storage(), stage), count=80, seed=0)
    conversations, funnel = build_search_examples(index, qas, count=30)
    assert len(conversations) == 30
    checked = funnel["check"]
    assert checked.docs_in == 30 + sum(checked.dropped.values())
    by_question = {qa.question: qa for qa in qas}
    for conversation in conversations:
        assert problem(conversation) is None
        user, assistant = conversation
        qa = by_question[user["content"]]
        search, results, reply = assistant["content"]
        assert search == {"type": "search", "query": search_query(qa.question)}
        # The results are exactly what the index gives for that query at inference settings.
        again = format_results(index.search(search["query"], index.settings.top_k), index.settings.result_chars)
        assert results == {"type": "search_results", "text": again}
        assert qa.answer in again and qa.url in again
        assert reply["type"] == "text" and qa.answer in reply["text"]


def test_search_examples_render_with_the_search_call_learned(stage):
    index = SearchIndex.open(stage)
    qas, _ = generate_qa(stage_documents(Storage(), stage), count=10, seed=0)
    conversations, _ = build_search_examples(index, qas, count=3)
    tokenizer = BpeTokenizer.train([conversations[0][1]["content"][1]["text"] * 3], vocab_size=400)
    for conversation in conversations:
        ids, mask = render(tokenizer, conversation)
        learned = tokenizer.decode([token for token, bit in zip(ids, mask) if bit])
        search, results, reply = conversation[1]["content"]
        assert learned == f"{SEARCH_START}{search['query']}{SEARCH_END}{reply['text']}<|im_end|>"
        assert results["text"] not in learned


def test_cli_writes_qa_and_search_conversations_that_load_back(stage, tmp_path, capsys):
    qa_file, examples = str(tmp_path / "qa.jsonl"), str(tmp_path / "search.jsonl")
    assert main(["chat-data", "qa", "--docs", stage, "--output", qa_file, "--count", "25"]) == 0
    assert len(read_qa(qa_file)) == 25 and "sentences" in capsys.readouterr().out
    assert main(["chat-data", "search-examples", "--index", stage, "--output", examples, "--count", "12"]) == 0
    assert "12 search conversations" in capsys.readouterr().out
    data = load_conversations([examples])
    assert data.reports[0].format == "messages" and len(data.conversations) == 12
    assert main(["chat-data", "inspect", "--data", examples, qa_file]) == 2  # a QA file is not conversations
    assert "cannot tell its format" in capsys.readouterr().err
    assert main(["chat-data", "inspect", "--data", examples]) == 0
    out = capsys.readouterr().out
    assert "(messages): 12 kept of 12 rows" in out and "12 conversations in 1 file(s)" in out
    assert json.loads(open(examples).readline())["messages"][1]["content"][0]["type"] == "search"
