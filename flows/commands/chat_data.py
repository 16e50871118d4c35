"""The chat data commands: the search index, and looking at and making conversation data.

    crawl2chat index build --input out/deduped [--output s3://bucket/search-index]
    crawl2chat index search --index out/deduped --query "eiffel tower completed" [-k 3]
    crawl2chat chat-data inspect --data convs.jsonl oasst.trees.jsonl [--format auto] [--pairs]
    crawl2chat chat-data qa --docs out/deduped --output qa.jsonl [--count 500 --seed 0]
    crawl2chat chat-data search-examples --index out/deduped --output search.jsonl [--count 200]

`inspect` prints, per file, the format found and the funnel of rows kept and skipped by reason
(with `--tokenizer` and `--max-tokens`, the context-length check too); the other commands
print what they wrote and the funnel of what they left out.
"""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli import add_config_args, parse_overrides


def register(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser("index", help="the search tool's BM25 index over a docs stage")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    build = index_commands.add_parser("build", help="index a docs stage (a rerun over the same input does nothing)")
    build.add_argument("--input", "-i", required=True, dest="input_uri", help="a documents stage (its docs/ parts), local or s3://")
    build.add_argument("--output", "-o", help="where the index goes (default: <input>/search-index), local or s3://")
    add_config_args(build)
    build.set_defaults(handler=_index_build)

    search = index_commands.add_parser("search", help="query an index the way the chat engine does")
    search.add_argument("--index", required=True, help="an index, or the docs stage it sits next to")
    search.add_argument("--query", "-q", required=True)
    search.add_argument("-k", type=int, help="hits to show (default: search.top_k)")
    search.add_argument("--max-chars", type=int, help="length of the results text (default: search.result_chars)")
    add_config_args(search)
    search.set_defaults(handler=_index_search)

    chat_data = commands.add_parser("chat-data", help="conversation and preference data")
    chat_commands = chat_data.add_subparsers(dest="chat_data_command", required=True)
    inspect = chat_commands.add_parser("inspect", help="what each data file gives: rows kept and skipped by reason")
    inspect.add_argument("--data", required=True, nargs="+", action="extend", help="files, globs or folders, local or s3://")
    inspect.add_argument("--format", default="auto", help="auto (per file) or a format name")
    inspect.add_argument("--pairs", action="store_true", help="read preference pairs instead of conversations")
    inspect.add_argument("--tokenizer", help="a tokenizer.json, to check lengths against --max-tokens")
    inspect.add_argument("--max-tokens", type=int, help="context length: longer rows are counted as too_long")
    add_config_args(inspect)
    inspect.set_defaults(handler=_inspect)

    qa = chat_commands.add_parser("qa", help="questions with known answers from a docs stage (for 'I don't know')")
    qa.add_argument("--docs", required=True, help="a documents stage, local or s3://")
    qa.add_argument("--output", "-o", required=True, help="a .jsonl file, local or s3://")
    qa.add_argument("--count", type=int, default=500)
    qa.add_argument("--seed", type=int, default=0)
    qa.add_argument("--per-doc", type=int, default=1, help="questions from one document at most")
    add_config_args(qa)
    qa.set_defaults(handler=_qa)

    examples = chat_commands.add_parser("search-examples", help="SFT conversations that teach the search tool")
    examples.add_argument("--index", required=True, help="an index, or the docs stage it sits next to")
    examples.add_argument("--docs", help="the documents to ask about (default: the stage the index was built from)")
    examples.add_argument("--output", "-o", required=True, help="a .jsonl file of conversations, local or s3://")
    examples.add_argument("--count", type=int, default=200)
    examples.add_argument("--seed", type=int, default=0)
    add_config_args(examples)
    examples.set_defaults(handler=_search_examples)


def _settings(args: argparse.Namespace):
    from infra.settings import load_settings

    return load_settings(args.config, parse_overrides(args.set))


def _print_funnel(title: str, steps: dict[str, Any]) -> None:
    from flows.report import funnel_text

    print(f"\n== {title}")
    print(funnel_text({"steps": steps}))


def _index_build(args: argparse.Namespace) -> int:
    from infra.storage import Storage
    from tasks.search.build import build_index

    settings = _settings(args)
    report = build_index(args.input_uri, args.output, settings.search, Storage(settings.storage))
    state = "up to date, nothing to do" if report["up_to_date"] else f"built in {report['seconds']} s"
    print(f"search index {report['output']}: {report['documents']} documents from {report['parts']} part(s), "
          f"{report['bytes'] / 1e6:.1f} MB, build {report['build']} ({state})")
    return 0


def _index_search(args: argparse.Namespace) -> int:
    from infra.storage import Storage
    from tasks.search.index import SearchIndex
    from tasks.search.results import format_results

    settings = _settings(args)
    index = SearchIndex.open(args.index, Storage(settings.storage), settings.search)
    hits = index.search(args.query, args.k)
    print(format_results(hits, args.max_chars or settings.search.result_chars))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from infra.storage import Storage
    from model.tokenizer import BpeTokenizer

    settings = _settings(args)
    storage = Storage(settings.storage)
    if args.max_tokens and not args.tokenizer:
        raise ValueError("--max-tokens needs --tokenizer to count tokens with")
    tokenizer = BpeTokenizer.load(args.tokenizer, storage) if args.tokenizer else None
    if args.pairs:
        from tasks.chat.pairs import load_pairs

        data = load_pairs(args.data, args.format, storage, tokenizer, args.max_tokens)
        reports, total, noun = data.reports, len(data.pairs), "preference pairs"
    else:
        from tasks.chat.conversations import load_conversations

        data = load_conversations(args.data, args.format, storage, tokenizer, args.max_tokens)
        reports, total, noun = data.reports, len(data.conversations), "conversations"
    for report in reports:
        _print_funnel(f"{report.uri} ({report.format}): {report.kept} kept of {report.funnel['read'].docs_in} rows", report.funnel.to_dict())
    print(f"\n{total} {noun} in {len(reports)} file(s)")
    return 0


def _qa(args: argparse.Namespace) -> int:
    from infra.storage import Storage
    from tasks.chat.qa import generate_qa, stage_documents, write_qa

    settings = _settings(args)
    storage = Storage(settings.storage)
    qas, funnel = generate_qa(stage_documents(storage, args.docs), args.count, args.seed, args.per_doc)
    if not qas:
        raise ValueError(f"no question could be made from the documents of {args.docs}")
    write_qa(args.output, qas, storage)
    _print_funnel(f"{len(qas)} questions -> {args.output}", funnel.to_dict())
    return 0


def _search_examples(args: argparse.Namespace) -> int:
    from infra.storage import Storage
    from tasks.chat.conversations import write_conversations
    from tasks.chat.qa import generate_qa, stage_documents
    from tasks.chat.search_examples import build_search_examples
    from tasks.search.index import SearchIndex

    settings = _settings(args)
    storage = Storage(settings.storage)
    index = SearchIndex.open(args.index, storage, settings.search)
    docs = args.docs or index.manifest["input"]["uri"]
    # Some questions are not backed by what the index returns: ask for more than needed.
    qas, qa_funnel = generate_qa(stage_documents(storage, docs), 4 * args.count, args.seed)
    conversations, funnel = build_search_examples(index, qas, args.count)
    if not conversations:
        raise ValueError(f"no search example could be made from {docs} (questions tried: {len(qas)})")
    write_conversations(args.output, conversations, storage)
    _print_funnel(f"{len(conversations)} search conversations -> {args.output}", {**qa_funnel.to_dict(), **funnel.to_dict()})
    return 0

