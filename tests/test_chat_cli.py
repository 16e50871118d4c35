"""`crawl2chat chat`, driven as a user drives it: the real CLI in a subprocess, lines on its stdin,
against a tiny model trained here to answer fixed conversations (tests/chat_model.py), with the
real search index. Plus the conversation logic on its own (model/session.py, model/reply.py):
history in the template token for token, context trimming, stop strings held back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.chat import render_prompt
from model.engine import Engine, SamplingParams, TokenEvent
from model.export import load_for_inference
from model.reply import Piece, ReplyParser
from model.session import ChatSession, Notice
from tests.chat_model import PIRATE_REPLY, PIRATE_SYSTEM, SEARCH_ANSWER, SEARCH_QUERY, SEARCH_QUESTION, SINGLE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _chat(chat_model, *args: str, stdin: str = "", search: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flows.cli", "chat", "--checkpoint", chat_model.checkpoint, "--temperature", "0", *args]
    if search:
        command += ["--search-index", chat_model.docs, "--set", "search.top_k=1", "--set", "search.result_chars=200"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_a_conversation_through_the_terminal_chat(chat_model):
    lines = [
        "My name is Alice.", "What is my name?",  # the second answer needs the first turn
        "/clear", "What is my name?",  # forgotten
        "/clear", f"/system {PIRATE_SYSTEM}", "hello",  # the system prompt is in the template
        "/system", "/clear", SEARCH_QUESTION,  # the search call and its results are shown
        "/help", "/nope", "/quit", "hello",  # nothing after /quit is read
    ]
    result = _chat(chat_model, stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    results_lines = chat_model.search_results.splitlines()
    expected = [
        "Nice to meet you, Alice.", "Your name is Alice.",
        "conversation cleared", SINGLE["What is my name?"],
        "conversation cleared", f"system prompt set: {PIRATE_SYSTEM}", PIRATE_REPLY,
        "system prompt removed", "conversation cleared",
        f"[search] {SEARCH_QUERY}", f"[results] {results_lines[0]}", *results_lines[1:], SEARCH_ANSWER,
    ]
    out = result.stdout.splitlines()
    assert out[: len(expected)] == expected
    assert out[len(expected)] == "commands:" and any(line.strip().startswith("/system TEXT") for line in out)
    assert out[-1] == "unknown command /nope; /help lists the commands"
    assert SINGLE["hello"] not in result.stdout


def test_one_shot_prints_the_reply_alone_on_stdout(chat_model):
    result = _chat(chat_model, "--prompt", SEARCH_QUESTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SEARCH_ANSWER + "\n"
    assert f"[search] {SEARCH_QUERY}\n[results] " in result.stderr and "1889" in result.stderr


def test_a_missing_checkpoint_is_a_one_line_error(chat_model, tmp_path):
    missing = _chat(chat_model, "--prompt", "hello", "--checkpoint", str(tmp_path / "nothing"), search=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"crawl2chat: error: no complete checkpoint at {tmp_path / 'nothing'} " \
                                     "(expected checkpoints/latest.json or checkpoint.json)"


# --- the logic under the CLI ----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(chat_model) -> Engine:
    model, tokenizer = load_for_inference(chat_model.checkpoint)
    return Engine(model, tokenizer)


def _search(chat_model):
    from infra.settings import SearchSettings
    from tasks.search.index import SearchIndex
    from tasks.search.results import search_tool

    return search_tool(SearchIndex.open(chat_model.docs, settings=SearchSettings(top_k=1, result_chars=200)))


def test_the_history_renders_to_exactly_the_tokens_generated(engine, chat_model):
    """The reply joins the history as parts (search call, results, text) whose rendering is the
    very token sequence the model saw and produced: the conversation stays in the template."""
    session = ChatSession(engine, SamplingParams(max_tokens=96, temperature=0), tools={"search": _search(chat_model)})
    prompt = render_prompt(engine.tokenizer, [{"role": "user", "content": SEARCH_QUESTION}])
    (completion,) = engine.generate([prompt], SamplingParams(max_tokens=96, temperature=0), tools={"search": _search(chat_model)})
    pieces = list(session.handle(SEARCH_QUESTION))
    assert [p.kind for p in pieces if p.text == ""] == ["search", "search_results"]
    assert "".join(p.text for p in pieces if p.kind == "text") == SEARCH_ANSWER
    assert session.history[-1]["content"] == [
        {"type": "search", "query": SEARCH_QUERY},
        {"type": "search_results", "text": chat_model.search_results},
        {"type": "text", "text": SEARCH_ANSWER},
    ]
    assert engine.tokenizer.encode_chat(session.messages) == prompt + completion.tokens


def test_a_long_conversation_forgets_its_oldest_turns(engine):
    session = ChatSession(engine, SamplingParams(max_tokens=40, temperature=0), system=PIRATE_SYSTEM)
    notices = []
    for _ in range(12):
        for item in session.handle("What color is the sky?"):
            if isinstance(item, Notice):
                notices.append(item.text)
    assert any(text.startswith("forgot the 2 oldest message(s)") for text in notices)
    prompt = render_prompt(engine.tokenizer, [*session.messages, {"role": "user", "content": "x"}])
    assert len(prompt) + 40 <= engine.context + 4 and session.messages[0]["role"] == "system"
    too_long = list(session.handle("word " * 400))
    assert len(too_long) == 1 and too_long[0].text.startswith("message not sent: it takes")
    assert session.history[-1]["content"] == "The sky is blue."  # nothing was added


def test_stop_strings_cut_the_text_and_hold_back_what_may_start_one(engine):
    tokenizer = engine.tokenizer
    parser = ReplyParser(tokenizer, stop=["two, th"])
    shown = ""
    seen = []
    for word in ["One", ",", " two", ",", " three", "."]:
        for token in tokenizer.encode(word):
            shown += "".join(p.text for p in parser.feed(TokenEvent(0, 0, 0, token, 0.0, False, tokenizer.decode([token]), None)))
        seen.append(shown)
    # "two" and "two," could start the stop string: held back; " three" completes it: cut.
    assert seen == ["One", "One,", "One, ", "One, ", "One, ", "One, "]
    assert parser.stopped and parser.content == "One, "
    assert parser.feed(TokenEvent(0, 0, 0, 5, 0.0, False, "more", "stop")) == []
    assert ReplyParser(tokenizer, stop=["zzz"]).feed(TokenEvent(0, 0, 0, 5, 0.0, False, "ab", "stop")) == [Piece("text", "ab")]
