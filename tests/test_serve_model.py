"""`crawl2chat serve-model`, started as a real process on a free loopback port, against the tiny
chat model of tests/chat_model.py (with its real search index): the official `openai` client,
streamed and not; malformed and too-long requests get 4xx JSON errors in OpenAI's shape while
the server keeps serving; concurrent requests run in shared batches and each gets its own
reply; a client that hangs up mid-stream has its rows cancelled; and the web page streams a
reply in a real headless Chromium driven by Playwright."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from model.batcher import BatchWorker, JobEnd, JobToken, QueueFull
from model.chat import render_prompt
from model.engine import Engine, SamplingParams
from model.export import load_for_inference
from tests.chat_model import (
    ENDLESS_QUESTION,
    PIRATE_REPLY,
    PIRATE_SYSTEM,
    SEARCH_ANSWER,
    SEARCH_QUERY,
    SEARCH_QUESTION,
    SINGLE,
)
from tests.model_server import served_model

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def metrics(self) -> dict:
        return httpx.get(f"{self.url}/metrics", timeout=10).json()

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def server(chat_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = ["--checkpoint", chat_model.checkpoint, "--search-index", chat_model.docs, "--set", "search.top_k=1",
            "--set", "search.result_chars=200", "--set", "serve.batch_window_ms=100", "--model-name", "tiny-chat"]
    with served_model(args, log) as (url, process):
        yield Server(url, process, log)


@pytest.fixture(scope="module")
def tokenizer(chat_model):
    return load_for_inference(chat_model.checkpoint)[1]


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# --- the OpenAI client ----------------------------------------------------------------------


def test_the_openai_client_lists_the_model_and_gets_replies(server, tokenizer, chat_model):
    client = server.client()
    (model,) = client.models.list().data
    assert model.id == "tiny-chat" and model.owned_by == "crawl2chat"
    reply = client.chat.completions.create(model="tiny-chat", messages=_user("hello"), temperature=0)
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content == SINGLE["hello"]
    assert choice.finish_reason == "stop" and reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    prompt = render_prompt(tokenizer, _user("hello"))
    reply_tokens = len(tokenizer.encode(SINGLE["hello"])) + 1  # and <|im_end|>
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        len(prompt), reply_tokens, len(prompt) + reply_tokens)

    # The client keeps the history: the model answers from an earlier turn and from the system prompt.
    turns = [{"role": "user", "content": "My name is Bob."}, {"role": "assistant", "content": "Nice to meet you, Bob."},
             {"role": "user", "content": "What is my name?"}]
    assert client.chat.completions.create(model="tiny-chat", messages=turns, temperature=0).choices[0].message.content == "Your name is Bob."
    pirate = [{"role": "developer", "content": PIRATE_SYSTEM}, *_user("hello")]
    assert client.chat.completions.create(model="tiny-chat", messages=pirate, temperature=0).choices[0].message.content == PIRATE_REPLY


def test_streaming_through_the_openai_client(server, tokenizer):
    stream = server.client().chat.completions.create(model="tiny-chat", messages=_user("What color is the sky?"),
                                                     temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(text) > 2 and "".join(text) == SINGLE["What color is the sky?"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(tokenizer.encode("The sky is blue.")) + 1
    assert len({c.id for c in chunks}) == 1


def test_sampling_parameters(server):
    client = server.client()
    cut = client.chat.completions.create(model="tiny-chat", messages=_user("Count to three."), temperature=0, max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    stopped = client.chat.completions.create(model="tiny-chat", messages=_user("Count to three."), temperature=0, stop=[", three"])
    assert stopped.choices[0].message.content == "One, two" and stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="tiny-chat", messages=_user("Count to three."), temperature=0,
                                              stop=", th", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "One, two"
    two = client.chat.completions.create(model="tiny-chat", messages=_user("hello"), temperature=0, n=2, max_completion_tokens=64)
    assert [c.index for c in two.choices] == [0, 1] and {c.message.content for c in two.choices} == {SINGLE["hello"]}
    hot = dict(model="tiny-chat", messages=_user(ENDLESS_QUESTION + " zz"), temperature=2.0, top_p=0.99, max_tokens=24)
    first, again = (client.chat.completions.create(**hot, seed=11).choices[0].message.content for _ in range(2))
    assert first == again  # a seed repeats: a seeded request runs in a batch of its own
    assert any(client.chat.completions.create(**hot, seed=12).choices[0].message.content != first for _ in range(3))


def test_the_search_tool_through_the_api(server, chat_model):
    client = server.client()
    reply = client.chat.completions.create(model="tiny-chat", messages=_user(SEARCH_QUESTION), temperature=0)
    message = reply.choices[0].message
    assert message.content == SEARCH_ANSWER
    assert message.model_extra["parts"] == [
        {"type": "search", "query": SEARCH_QUERY},
        {"type": "search_results", "text": chat_model.search_results},
        {"type": "text", "text": SEARCH_ANSWER},
    ]
    # Sent back as the assistant's content, the parts give the model its own turn again.
    follow = [*_user(SEARCH_QUESTION), {"role": "assistant", "content": message.model_extra["parts"]}, *_user("hello")]
    assert client.chat.completions.create(model="tiny-chat", messages=follow, temperature=0, max_tokens=4).choices
    chunks = list(client.chat.completions.create(model="tiny-chat", messages=_user(SEARCH_QUESTION), temperature=0, stream=True))
    deltas = [c.choices[0].delta.model_extra for c in chunks if c.choices]
    assert "".join(d.get("search_query", "") for d in deltas) == SEARCH_QUERY
    assert "".join(d.get("search_results", "") for d in deltas) == chat_model.search_results


# --- bad requests -------------------------------------------------------------------------------


BAD_REQUESTS = [
    ("{not json", 400, "not valid JSON"),
    ("[1, 2]", 400, "must be a JSON object"),
    ({}, 400, "messages: Field required"),
    ({"messages": []}, 400, "messages: List should have at least 1 item"),
    ({"messages": "hello"}, 400, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role 'tool' is not supported"),
    ({"messages": [{"role": "user", "content": ""}]}, 400, "messages[0]: empty content"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content must be a string or a list"),
    ({"messages": [{"content": "hi"}]}, 400, "messages[0].role: Field required"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "part type 'image_url'"),
    ({"messages": _user("hi"), "temperature": -1}, 400, "temperature: Input should be greater than or equal to 0"),
    ({"messages": _user("hi"), "top_p": 0}, 400, "top_p"),
    ({"messages": _user("hi"), "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": _user("hi"), "n": 99}, 400, "n must be at most 8"),
    ({"messages": _user("hi"), "stop": ["a", "b", "c", "d", "e"]}, 400, "stop takes up to 4"),
    ({"messages": _user("hi"), "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools is not supported"),
    ({"messages": _user("hi"), "model": "gpt-4o"}, 404, "The model 'gpt-4o' does not exist"),
    ({"messages": _user("word " * 400)}, 400, "maximum context length is 192 tokens"),
]


def test_malformed_and_too_long_requests_get_4xx_json_errors(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for body, status, message in BAD_REQUESTS:
            content = body if isinstance(body, str) else json.dumps(body)
            response = http.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert message in error["message"] and error["type"] in ("invalid_request_error", "not_found_error"), error
        too_long = http.post("/v1/chat/completions", json={"messages": _user("word " * 400)}).json()["error"]
        assert too_long["code"] == "context_length_exceeded" and too_long["param"] == "messages"
        huge = http.post("/v1/chat/completions", json={"messages": _user("x" * 1_100_000)})
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
        assert http.get("/v1/nothing").status_code == 404 and http.get("/v1/nothing").json()["error"]["type"] == "not_found_error"
        assert http.delete("/v1/models").status_code == 405
    client = server.client()
    with pytest.raises(BadRequestError, match="context_length_exceeded|maximum context length"):
        client.chat.completions.create(model="tiny-chat", messages=_user("word " * 400))
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="other", messages=_user("hello"))
    # ... and the server goes on serving.
    assert client.chat.completions.create(model="tiny-chat", messages=_user("hello"), temperature=0).choices[0].message.content == SINGLE["hello"]
    assert server.process.poll() is None


# --- batching and disconnects ---------------------------------------------------------------


CONCURRENT = [
    (_user(question), answer) for question, answer in SINGLE.items()
] + [
    ([{"role": "system", "content": PIRATE_SYSTEM}, *_user("hello")], PIRATE_REPLY),
    ([*_user("My name is Alice."), {"role": "assistant", "content": "Nice to meet you, Alice."}, *_user("What is my name?")],
     "Your name is Alice."),
    (_user(SEARCH_QUESTION), SEARCH_ANSWER),
]


def test_concurrent_requests_share_batches_and_each_gets_its_own_reply(server):
    before = server.metrics()
    client = server.client()
    start = threading.Barrier(len(CONCURRENT))
    replies: dict[int, str] = {}

    def ask(i: int, messages: list[dict], stream: bool) -> None:
        start.wait()
        if stream:
            chunks = client.chat.completions.create(model="tiny-chat", messages=messages, temperature=0, stream=True)
            replies[i] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            replies[i] = client.chat.completions.create(model="tiny-chat", messages=messages, temperature=0).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i, messages, i % 2 == 0)) for i, (messages, _) in enumerate(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert replies == {i: answer for i, (_, answer) in enumerate(CONCURRENT)}
    after = server.metrics()
    new = {int(rows): count - before["batch_rows"].get(rows, 0) for rows, count in after["batch_rows"].items()}
    assert sum(rows * count for rows, count in new.items()) == len(CONCURRENT) == after["jobs"] - before["jobs"]
    assert max(rows for rows, count in new.items() if count > 0) > 1, new  # some ran together
    assert after["batches"] - before["batches"] < len(CONCURRENT)
    assert re.search(r"batch: [2-8] job\(s\), [2-8] row\(s\)", server.log.read_text())


def test_a_client_that_hangs_up_mid_stream_is_cancelled(server):
    before = server.metrics()
    body = {"model": "tiny-chat", "messages": _user(ENDLESS_QUESTION), "temperature": 0, "stream": True, "max_tokens": 150}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            got = [next(lines) for _ in range(8)]
            assert all(line.startswith("data: ") or line == "" for line in got)
    for _ in range(100):  # the worker notices between two tokens
        after = server.metrics()
        if after["cancelled_rows"] > before["cancelled_rows"]:
            break
        time.sleep(0.05)
    assert after["cancelled_rows"] == before["cancelled_rows"] + 1
    assert after["tokens"] - before["tokens"] < 150
    assert server.client().chat.completions.create(model="tiny-chat", messages=_user("hello"), temperature=0).choices[0].message.content == SINGLE["hello"]


def test_the_batch_worker_cancels_waiting_jobs_and_bounds_its_queue(chat_model, one_thread):
    model, tokenizer = load_for_inference(chat_model.checkpoint)
    worker = BatchWorker(Engine(model, tokenizer), max_batch_rows=4, batch_window_s=0, max_queued=2)
    got: dict[int, list] = {0: [], 1: []}
    prompt = render_prompt(tokenizer, _user("hello"))
    gone = worker.submit(prompt, SamplingParams(temperature=0), sink=got[0].append)
    kept = worker.submit(prompt, SamplingParams(temperature=0), sink=got[1].append)
    with pytest.raises(QueueFull):
        worker.submit(prompt, SamplingParams(temperature=0))
    gone.cancel()  # before the worker started: it never runs
    worker.start()
    for _ in range(200):
        if got[1] and isinstance(got[1][-1], JobEnd):
            break
        time.sleep(0.05)
    worker.close()
    assert got[0] == [JobEnd()]
    assert isinstance(got[1][-1], JobEnd) and got[1][-1].error is None
    assert "".join(item.event.text for item in got[1] if isinstance(item, JobToken)) == SINGLE["hello"]
    assert worker.stats()["jobs"] == 1


# --- the web page ---------------------------------------------------------------------------


def _chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; `make test` does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[test]')")
    return sync_api


def test_the_web_page_streams_replies_in_chromium(server, chat_model):
    sync_api = _chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.startsWith('tiny-chat')")
            # Record the assistant text's lengths as it grows: streamed, it grows many times.
            page.evaluate("""() => { window.lengths = new Set();
                new MutationObserver(() => { const boxes = document.querySelectorAll('.message.assistant');
                  if (boxes.length) window.lengths.add(boxes[boxes.length - 1].textContent.length); })
                .observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); }""")

            def send(text: str) -> str:
                done = page.locator(".message.assistant[data-done=true]").count()
                page.fill("#input", text)
                page.click("#send")
                page.wait_for_selector(f".message.assistant[data-done=true] >> nth={done}", timeout=60_000)
                return page.locator(".message.assistant").nth(done).locator(".text").all_inner_texts()

            page.fill("#temperature", "0")
            page.fill("#max-tokens", "120")
            laugh = send(ENDLESS_QUESTION)
            assert set("".join(laugh).split()) == {"ha"} and len("".join(laugh).split()) > 50
            assert page.evaluate("window.lengths.size") > 5  # the reply arrived in many pieces
            assert page.locator(".message.assistant .note").last.inner_text() == "(cut at max tokens)"

            page.click("#new-chat")
            assert page.locator(".message").count() == 0
            assert send("My name is Bob.") == ["Nice to meet you, Bob."]
            assert send("What is my name?") == ["Your name is Bob."]  # the page keeps the conversation

            page.click("#new-chat")
            assert send(SEARCH_QUESTION) == [SEARCH_ANSWER]
            assert page.locator(".message.assistant .search").inner_text() == SEARCH_QUERY
            assert "1889" in page.locator(".message.assistant .results").inner_text()
        finally:
            browser.close()

