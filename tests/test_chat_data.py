"""Chat and preference data (tasks/chat/): every importer on the real samples, with the rows kept
and skipped by reason counted exactly; bad rows of every kind; JSON, JSON Lines, Parquet, gzip,
local and S3; the one-line errors; mixes by weight and seed."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.storage import Storage
from model.chat import num_tokens, problem
from model.tokenizer import BpeTokenizer
from tasks.chat import hh, oasst
from tasks.chat.conversations import load_conversations, write_conversations
from tasks.chat.errors import ChatDataError
from tasks.chat.mix import load_mix, parse_source
from tasks.chat.pairs import PreferencePair, load_pairs, write_pairs
from tests.conftest import REALDATA, needs_realdata

CHAT = REALDATA / "chat"


def funnel(report) -> dict:
    """A file's funnel as {step: (in, out, {reason: count})}."""
    return {name: (step.docs_in, step.docs_out, dict(step.dropped)) for name, step in report.funnel.steps.items()}


@pytest.fixture(scope="module")
def tokenizer() -> BpeTokenizer:
    texts = [json.dumps(row) for row in json.loads((CHAT / "llama_factory" / "alpaca_en_demo.json").read_text())[:300]]
    return BpeTokenizer.train(texts, vocab_size=800)


# --- conversations: the real samples ---------------------------------------------------------------

REAL_CONVERSATIONS = {
    # file: (format found, rows read, kept, skipped by reason)
    "hh_rlhf/harmless-base_test.jsonl.gz": ("hh", 2312, 2308, {"empty_content": 4}),
    "llama_factory/alpaca_en_demo.json": ("alpaca", 999, 999, {}),
    "llama_factory/identity.json": ("alpaca", 91, 91, {}),
    "llama_factory/glaive_toolcall_en_demo.json": ("sharegpt", 300, 147, {"unknown_role:function_call": 153}),
    "llama_factory/kto_en_demo.json": ("messages", 300, 150, {"labelled_undesirable": 150}),
    "llama_factory/v1_sft_demo.jsonl": ("messages", 500, 500, {}),
    "oasst2_openpaws/oasst2_filtered.jsonl": (
        "oasst", 551, 113, {"no_assistant_turn": 371, "tree_state:halted_by_moderator": 49, "tree_state:aborted_low_grade": 18},
    ),
}


@needs_realdata
@pytest.mark.parametrize("path", sorted(REAL_CONVERSATIONS))
def test_real_conversations_are_imported_and_every_skip_counted(path):
    fmt, rows, kept, skipped = REAL_CONVERSATIONS[path]
    data = load_conversations([str(CHAT / path)])
    (report,) = data.reports
    assert report.format == fmt
    assert funnel(report) == {"read": (rows, rows, {}), "import": (rows, kept, skipped)}
    assert len(data.conversations) == kept
    assert all(problem(conversation) is None and conversation[-1]["role"] == "assistant" for conversation in data.conversations)
    # The format forced by name gives the same as the one detected.
    assert load_conversations([str(CHAT / path)], fmt=fmt).conversations == data.conversations


@needs_realdata
def test_typed_parts_and_sharegpt_roles_become_plain_messages():
    v1 = load_conversations([str(CHAT / "llama_factory" / "v1_sft_demo.jsonl")]).conversations
    raw = [json.loads(line) for line in (CHAT / "llama_factory" / "v1_sft_demo.jsonl").read_text().splitlines()]
    assert v1[0] == [{"role": m["role"], "content": m["content"][0]["value"]} for m in raw[0]["messages"]]
    glaive = load_conversations([str(CHAT / "llama_factory" / "glaive_toolcall_en_demo.json")]).conversations
    assert {message["role"] for conversation in glaive for message in conversation} == {"user", "assistant"}
    alpaca = load_conversations([str(CHAT / "llama_factory" / "alpaca_en_demo.json")]).conversations
    rows = json.loads((CHAT / "llama_factory" / "alpaca_en_demo.json").read_text())
    with_input = next(index for index, row in enumerate(rows) if row["input"])
    assert alpaca[with_input][0]["content"] == rows[with_input]["instruction"] + "\n\n" + rows[with_input]["input"]


@needs_realdata
def test_oasst_follows_the_highest_ranked_reply():
    rows = [json.loads(line) for line in (CHAT / "oasst2_openpaws" / "oasst2_filtered.jsonl").read_text().splitlines()]
    checked = 0
    for row in rows:
        replies = [r for r in row["prompt"]["replies"] if r["rank"] is not None and not r["deleted"] and r["review_result"] is not False]
        if len(replies) < 2 or row["tree_state"] in oasst.SKIPPED_TREE_STATES:
            continue
        best = min(replies, key=lambda reply: reply["rank"])
        assert best["rank"] == 0
        assert oasst.conversation(row)[1]["content"] == best["text"]
        checked += 1
    assert checked >= 20  # real trees with ranked sibling replies


@needs_realdata
def test_too_long_conversations_are_skipped_by_the_tokenizers_count(tokenizer):
    path = str(CHAT / "llama_factory" / "alpaca_en_demo.json")
    everything = load_conversations([path]).conversations
    limit = sorted(num_tokens(tokenizer, conversation) for conversation in everything)[len(everything) // 2]
    data = load_conversations([path], tokenizer=tokenizer, max_tokens=limit)
    longer = sum(num_tokens(tokenizer, conversation) > limit for conversation in everything)
    assert 0 < longer < len(everything)
    assert funnel(data.reports[0])["length"] == (999, 999 - longer, {"too_long": longer})
    assert all(num_tokens(tokenizer, conversation) <= limit for conversation in data.conversations)


# --- preference pairs: the real samples --------------------------------------------------------------

REAL_PAIRS = {
    "hh_rlhf/harmless-base_test.jsonl.gz": ("hh", 2312, 2303, {"empty_chosen": 4, "prompt_mismatch": 5}),
    "llama_factory/dpo_en_demo.json": ("sharegpt", 300, 300, {}),
    "llama_factory/v1_dpo_demo.jsonl": ("messages", 10, 10, {}),
}


@needs_realdata
@pytest.mark.parametrize("path", sorted(REAL_PAIRS))
def test_real_preference_pairs_are_imported_and_every_skip_counted(path):
    fmt, rows, kept, skipped = REAL_PAIRS[path]
    data = load_pairs([str(CHAT / path)])
    (report,) = data.reports
    assert report.format == fmt
    assert funnel(report) == {"read": (rows, rows, {}), "import": (rows, kept, skipped)}
    for pair in data.pairs:
        assert pair.prompt[-1]["role"] == "user"
        assert pair.chosen["role"] == pair.rejected["role"] == "assistant"
        assert pair.chosen["content"] != pair.rejected["content"]


@needs_realdata
def test_hh_pairs_split_into_the_shared_prompt_and_the_two_last_replies():
    first = json.loads(gzip.open(CHAT / "hh_rlhf" / "harmless-base_test.jsonl.gz", "rt").readline())
    (pair,) = load_pairs([str(CHAT / "hh_rlhf" / "harmless-base_test.jsonl.gz")]).pairs[:1]
    assert first["chosen"].endswith(pair.chosen["content"]) and first["rejected"].endswith(pair.rejected["content"])
    transcript = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in pair.prompt)
    assert first["chosen"].startswith(transcript + "\n\nAssistant:")


@needs_realdata
def test_pairs_round_trip_through_trl_layout_in_jsonl_and_parquet(tmp_path):
    pairs = load_pairs([str(CHAT / "llama_factory" / "dpo_en_demo.json")]).pairs
    write_pairs(str(tmp_path / "pairs.jsonl"), pairs)
    again = load_pairs([str(tmp_path / "pairs.jsonl")])
    assert again.reports[0].format == "trl" and again.pairs == pairs
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    assert load_pairs([str(tmp_path / "pairs.parquet")]).pairs == pairs


def test_trl_string_and_conversational_forms(tmp_path):
    rows = [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        {"chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
         "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}]},
    ]
    (tmp_path / "trl.jsonl").write_text("\n".join(map(json.dumps, rows)))
    data = load_pairs([str(tmp_path / "trl.jsonl")])
    assert data.pairs == [
        PreferencePair([{"role": "user", "content": "What is 2+2?"}], {"role": "assistant", "content": "4"}, {"role": "assistant", "content": "5"}),
        PreferencePair([{"role": "user", "content": "Hi"}], {"role": "assistant", "content": "Hello!"}, {"role": "assistant", "content": "Go away."}),
        PreferencePair([{"role": "user", "content": "Sky?"}], {"role": "assistant", "content": "Blue."}, {"role": "assistant", "content": "Green."}),
    ]


# --- bad rows of every kind --------------------------------------------------------------------------


def test_every_kind_of_bad_conversation_is_counted_by_reason(tmp_path):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "audio", "value": "b64"}]}]}),
        json.dumps({"messages": "not a list"}),
        json.dumps({"messages": [*good["messages"], {"role": "user", "content": "unanswered"}]}),
    ]
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    data = load_conversations([str(tmp_path / "mixed.jsonl")])
    assert funnel(data.reports[0]) == {
        "read": (9, 7, {"invalid_json": 1, "not_an_object": 1}),
        "import": (7, 2, {"unknown_role:robot": 1, "empty_content": 1, "no_assistant_turn": 1, "unsupported_part:audio": 1, "malformed_row": 1}),
    }
    assert data.reports[0].funnel["import"].counts == {"trailing_turns_cut": 1}
    assert data.conversations == [good["messages"], good["messages"]]


def test_every_kind_of_bad_pair_is_counted_by_reason(tmp_path):
    user = {"role": "user", "content": "Q"}
    rows = [
        {"prompt": [user], "chosen": "A", "rejected": "B"},
        {"prompt": [user], "chosen": "Same", "rejected": " Same "},
        {"prompt": [user], "chosen": "", "rejected": "B"},
        {"prompt": [user], "chosen": "A", "rejected": []},
        {"prompt": [], "chosen": "A", "rejected": "B"},
        {"prompt": [user, {"role": "assistant", "content": "A"}], "chosen": "A", "rejected": "B"},
        {"chosen": [user, {"role": "assistant", "content": "A"}], "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "B"}]},
        {"prompt": [user], "chosen": [{"role": "assistant", "content": "A"}, {"role": "assistant", "content": "A2"}], "rejected": "B"},
    ]
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    data = load_pairs([str(tmp_path / "pairs.json")])
    assert funnel(data.reports[0])["import"] == (8, 1, {
        "same_reply": 1, "empty_chosen": 1, "empty_reply": 1, "prompt_no_messages": 1, "prompt_not_ending_in_user": 1,
        "prompt_mismatch": 1, "multi_message_reply": 1,
    })


@needs_realdata
def test_over_long_pairs_are_skipped(tokenizer):
    path = str(CHAT / "llama_factory" / "v1_dpo_demo.jsonl")
    pairs = load_pairs([path]).pairs
    longest = sorted(max(num_tokens(tokenizer, [*p.prompt, r]) for r in (p.chosen, p.rejected)) for p in pairs)
    data = load_pairs([path], tokenizer=tokenizer, max_tokens=longest[4])
    assert funnel(data.reports[0])["length"] == (10, 5, {"too_long": 5})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("\n".join(json.dumps({"messages": [{"role": "user", "content": "x"}]}) for _ in range(3)), "no usable conversations (messages format; no_assistant_turn=3)"),
        ("", "no usable conversations (auto format; the file is empty)"),
        ('{"a": 1,\n "b": 2}', "one JSON object, not rows"),
        ('[{"a": 1}, ', "not valid JSON"),
        (json.dumps({"text": "a web page"}), "cannot tell its format from the fields ['text']"),
    ],
)
def test_unusable_files_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(ChatDataError) as error:
        load_conversations([str(tmp_path / "bad.jsonl")])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_inputs_and_unknown_formats_are_one_line_errors(tmp_path):
    with pytest.raises(ChatDataError, match="no data files at"):
        load_conversations([str(tmp_path / "nothing-here.jsonl")])
    (tmp_path / "a.jsonl").write_text("{}")
    with pytest.raises(ChatDataError, match="unknown conversations format 'chatml'"):
        load_conversations([str(tmp_path / "a.jsonl")], fmt="chatml")


# --- files: layouts, folders, S3 ----------------------------------------------------------------------


@needs_realdata
def test_folders_globs_parquet_and_s3_give_the_same_conversations(tmp_path, seaweed, s3_prefix):
    source = str(CHAT / "llama_factory" / "v1_sft_demo.jsonl")
    expected = load_conversations([source]).conversations
    rows = [json.loads(line) for line in open(source, encoding="utf-8")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sft.parquet")
    (tmp_path / "more").mkdir()
    write_conversations(str(tmp_path / "more" / "sft.jsonl"), expected)
    (tmp_path / "more" / "notes.txt").write_text("not data")
    assert load_conversations([str(tmp_path / "sft.parquet")]).conversations == expected
    assert load_conversations([str(tmp_path / "more")]).conversations == expected
    assert load_conversations([str(tmp_path / "*.parquet")]).conversations == expected
    storage = Storage(seaweed)
    storage.write_bytes(f"{s3_prefix}/chat/sft.parquet", (tmp_path / "sft.parquet").read_bytes())
    storage.write_bytes(f"{s3_prefix}/chat/hh.jsonl.gz", (CHAT / "hh_rlhf" / "harmless-base_test.jsonl.gz").read_bytes())
    data = load_conversations([f"{s3_prefix}/chat/"], storage=storage)
    assert [report.format for report in data.reports] == ["hh", "messages"]
    assert data.conversations[-len(expected):] == expected and len(data.conversations) == 2308 + len(expected)


# --- mixes --------------------------------------------------------------------------------------------


def test_source_specs_take_an_optional_weight():
    assert parse_source("data/a.jsonl") == parse_source("data/a.jsonl:1")
    assert parse_source("s3://bucket/x.jsonl:2.5").data == "s3://bucket/x.jsonl"
    assert parse_source("s3://bucket/x.jsonl:2.5").weight == 2.5
    assert parse_source("s3://bucket/x.jsonl").weight == 1.0
    with pytest.raises(ChatDataError, match="must be above 0"):
        parse_source("a.jsonl:0")


@needs_realdata
def test_mix_weights_sources_and_is_deterministic_by_seed():
    glaive = str(CHAT / "llama_factory" / "glaive_toolcall_en_demo.json")  # 147 usable conversations
    v1 = str(CHAT / "llama_factory" / "v1_dpo_demo.jsonl")
    sft = str(CHAT / "llama_factory" / "v1_sft_demo.jsonl")  # 500
    mix = load_mix([f"{glaive}:2", f"{sft}:0.5"], seed=3)
    assert mix.composition == {
        glaive: {"loaded": 147, "weight": 2.0, "in_mix": 294},
        sft: {"loaded": 500, "weight": 0.5, "in_mix": 250},
    }
    assert len(mix.conversations) == 544
    assert load_mix([f"{glaive}:2", f"{sft}:0.5"], seed=3).conversations == mix.conversations
    other = load_mix([f"{glaive}:2", f"{sft}:0.5"], seed=4).conversations
    assert other != mix.conversations and sorted(map(json.dumps, other)) != sorted(map(json.dumps, mix.conversations))
    in_mix = Counter(map(json.dumps, mix.conversations))
    assert all(in_mix[key] == 2 * count for key, count in Counter(map(json.dumps, load_conversations([glaive]).conversations)).items())
    with pytest.raises(ChatDataError, match="no usable conversations|cannot tell"):
        load_mix([v1])


def test_hh_transcripts_parse_into_turns():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: See you."
    assert hh.parse_transcript(text) == [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."},
    ]


@needs_realdata
def test_cli_inspect_prints_each_files_funnel(tmp_path, tokenizer, capsys):
    from flows.cli import main

    hh_file, oasst_file = str(CHAT / "hh_rlhf" / "harmless-base_test.jsonl.gz"), str(CHAT / "oasst2_openpaws" / "oasst2_filtered.jsonl")
    assert main(["chat-data", "inspect", "--data", hh_file, oasst_file]) == 0
    out = capsys.readouterr().out
    assert "(hh): 2308 kept of 2312 rows" in out and "empty_content=4" in out
    assert "(oasst): 113 kept of 551 rows" in out and "no_assistant_turn=371" in out and "trailing_turns_cut=28" in out
    assert "2421 conversations in 2 file(s)" in out
    assert main(["chat-data", "inspect", "--pairs", "--data", hh_file]) == 0
    assert "prompt_mismatch=5, empty_chosen=4" in capsys.readouterr().out
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert main(["chat-data", "inspect", "--data", hh_file, "--tokenizer", str(tmp_path / "tokenizer.json"), "--max-tokens", "256"]) == 0
    assert "too_long=" in capsys.readouterr().out
    assert main(["chat-data", "inspect", "--data", str(CHAT / "llama_factory" / "dataset_info.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crawl2chat: error:") and "one JSON object, not rows" in err and err.count("\n") == 1
