"""The report card of a run: one markdown page from crawl to chat model, in the Prefect UI and on disk.

    card = publish_report_card(output, training, config_file, overrides)   # at the end of a flow

Sections, each from what the run left under `output` (so a card can be redrawn from any run):
- the data funnel (filtered/ and deduped/ stats.json: records read, documents after each step,
  drops by reason, duplicates and their clusters) with a bar chart, and the tokens (tokens/
  manifest and tokenizer report);
- the chat data made from the run's documents (chat-data/manifest.json);
- per training stage: status (trained or skipped), steps, tokens, time, final and held-out
  metrics from its metrics.jsonl, and its training curves;
- held-out questions: the share of held-out pages whose site each stage's model names (site
  questions of pages no stage trained on), against chance;
- sample generations before and after each stage: pretraining's own continuations at step 0
  and at its end (samples.jsonl), and the greedy replies of every stage's model to the same chat
  prompts (the base model is "before SFT", and so on);
- links to the artifacts of the run and its subflows (funnels, progress, metrics tables).

The images are PNGs under `<output>/report/`, next to `report.md` (which names them by relative
path). The Prefect UI only shows images from URLs its browser can load, and uploads nothing, so
the card in the UI carries each image inline as a `data:image/png;base64,...` URI, which its
markdown renderer shows (checked by docs/screenshots.py): no object store or URL that expires
has to be reachable from the browser. Report files are rewritten only when their content changes.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from uuid import UUID

from flows.credentials import run_settings
from flows.plots import data_funnel, training_curves
from flows.progress import in_prefect_run
from flows.report import dedup_report
from flows.stages import read_metrics
from infra.storage import Storage, join

log = logging.getLogger(__name__)

REPORT_DIR = "report"
ARTIFACT_KEY = "report-card"
CHAT_PROMPTS = ("Hello!", "Who are you?")
SAMPLE_HELDOUT = 2  # held-out questions shown as samples (all are scored)
REPLY_TOKENS = 48


def cell(value: Any) -> str:
    """A value as one markdown table cell."""
    if isinstance(value, float):
        value = f"{value:.4g}"
    text = " ".join(str(value if value is not None else "").split())
    return text.replace("|", "\\|") or " "


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _read_json(storage: Storage, uri: str) -> dict[str, Any] | None:
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


# --- data --------------------------------------------------------------------------------------


def data_section(storage: Storage, output: str) -> tuple[str, list[tuple[str, int]]]:
    """The data funnel and tokens as markdown, and the funnel's (step, documents) for the chart."""
    filtered = _read_json(storage, join(output, "filtered", "stats.json"))
    deduped = _read_json(storage, join(output, "deduped", "stats.json"))
    manifest = _read_json(storage, join(output, "tokens", "manifest.json"))
    tokenizer = _read_json(storage, join(output, "tokens", "tokenizer_report.json"))
    if not (filtered or deduped or manifest):
        return "", []
    parts, chart, rows = ["## Data funnel"], [], []
    for stats in ([filtered] if filtered else []) + ([dedup_report(deduped, join(output, "deduped"))] if deduped else []):
        for step, counts in stats["steps"].items():
            if not chart:
                chart.append(("records read" if step == "read_warc" else f"into {step}", counts["docs_in"]))
            chart.append((step, counts["docs_out"]))
            reasons = ", ".join(f"{reason}={n}" for reason, n in sorted(counts["dropped"].items(), key=lambda kv: -kv[1])[:3])
            rows.append([step, counts["docs_in"], counts["docs_out"], counts["docs_in"] - counts["docs_out"], reasons])
    if filtered:
        parts.append(f"{filtered['inputs']} WARC file(s), {filtered['totals']['records_in']:,} records read, "
                     f"{filtered['totals']['docs_out']:,} documents kept by the filters.")
    if deduped:
        parts.append(f"Deduplication: {deduped['documents_in']:,} in, {deduped['documents_out']:,} out "
                     f"({deduped.get('exact_duplicates', 0)} exact and {deduped.get('near_duplicates', 0)} near duplicates "
                     f"in {deduped.get('near_duplicate_clusters', 0)} clusters).")
    parts.append(table(["step", "in", "out", "dropped", "top reasons"], rows))
    if manifest:
        splits = manifest["splits"]
        parts.append("## Tokens")
        token_rows = [[name, split["n_docs"], split["n_tokens"], len(split.get("shards", []))] for name, split in splits.items()]
        parts.append(table(["split", "documents", "tokens", "shards"], token_rows))
        if tokenizer:
            parts.append(f"Tokenizer: byte-level BPE, {tokenizer['vocab_size']:,} tokens (of {tokenizer['vocab_size_requested']:,} "
                         f"asked), {tokenizer['bytes_per_token']:.2f} bytes per token on held-out pages.")
    return "\n\n".join(parts), chart


def chat_data_section(manifest: dict[str, Any] | None) -> str:
    if not manifest:
        return ""
    rows = [[entry["uri"].rsplit("/", 1)[-1], kind, entry["rows"]] for kind, entries in manifest["files"].items() for entry in entries]
    return "## Chat data made from the run's documents\n\n" + table(["file", "for", "rows"], rows)


# --- training ----------------------------------------------------------------------------------

HELD_OUT_METRICS = ("val_loss", "val_bpb", "val_accuracy", "reward_mean", "judge_mean", "kl")


def stage_rows(storage: Storage, stages: dict[str, Any]) -> tuple[list[list[Any]], dict[str, list[dict[str, Any]]]]:
    rows, records_by_stage = [], {}
    for name, result in stages.items():
        records = read_metrics(storage, result["uri"])
        records_by_stage[name] = records
        last = records[-1] if records else {}
        evals = [r for r in records if any(key in r for key in HELD_OUT_METRICS)]
        first_eval, last_eval = (evals[0], evals[-1]) if evals else ({}, {})
        shown = ", ".join(f"{key} {first_eval[key]:.4g} -> {last_eval[key]:.4g}" for key in HELD_OUT_METRICS
                          if isinstance(first_eval.get(key), float) and isinstance(last_eval.get(key), float))
        rows.append([name, result["status"], result.get("steps"), f"{last.get('tokens', 0):,}",
                     f"{last.get('elapsed_seconds', 0):.0f} s", last.get("train_loss"), shown])
    return rows, records_by_stage


def chat_replies(checkpoint: str, storage: Storage, questions: list[str], index_uri: str | None, settings) -> list[str]:
    """Greedy replies of a checkpoint's model to single-turn questions (with the search tool
    when the run has an index), as the chat shows them: search calls as `[search: query]`."""
    import torch

    from model.chat import render_prompt
    from model.checkpoint import load_model
    from model.engine import Engine, SamplingParams
    from model.reply import ReplyParser

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, _ = load_model(checkpoint, storage, device)
    tools = {}
    if index_uri:
        from tasks.search.index import SearchIndex
        from tasks.search.results import search_tool

        tools = {"search": search_tool(SearchIndex.open(index_uri, storage, settings.search))}
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": question}]) for question in questions]
    room = model.config.seq_len - max(len(prompt) for prompt in prompts) - 1
    params = SamplingParams(max_tokens=max(1, min(REPLY_TOKENS, room)), temperature=0.0)
    parsers = [ReplyParser(tokenizer) for _ in prompts]
    for event in Engine(model, tokenizer).stream(prompts, params, tools=tools):
        parsers[event.row].feed(event)
    replies = []
    for parser in parsers:
        parser.finish()
        shown = [f"[search: {part['query']}]" if part["type"] == "search" else part.get("text", "")
                 for part in parser.parts if part["type"] != "search_results"]
        replies.append(" ".join(piece for piece in shown if piece))
    return replies


def pretrain_samples(storage: Storage, stage_uri: str) -> str:
    uri = join(stage_uri, "samples.jsonl")
    if not storage.exists(uri):
        return ""
    samples = [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]
    steps = sorted({s["step"] for s in samples})
    first, last = steps[0], steps[-1]
    by = {(s["step"], s["prompt"]): s["text"] for s in samples}
    prompts = list(dict.fromkeys(s["prompt"] for s in samples))
    rows = [[prompt, by.get((first, prompt), ""), by.get((last, prompt), "")] for prompt in prompts]
    return f"Pretraining's greedy continuations, before (step {first}) and after (step {last}):\n\n" + \
        table(["prompt", f"step {first}", f"step {last}"], rows)


def samples_section(storage: Storage, output: str, stages: dict[str, Any], chat: dict[str, Any] | None, settings) -> str:
    from tasks.chat.from_docs import heldout_questions
    from tasks.search.layout import read_manifest as read_index_manifest

    parts = ["## Sample generations, before and after each stage"]
    if "pretrain" in stages:
        parts.append(pretrain_samples(storage, stages["pretrain"]["uri"]))
    heldout = heldout_questions(storage, chat) if chat else []
    questions = list(CHAT_PROMPTS) + [qa.question for qa in heldout[:SAMPLE_HELDOUT]]
    docs = join(output, "deduped")
    index_uri = docs if read_index_manifest(storage, join(docs, "search-index")) else None
    replies: dict[str, list[str]] = {}
    scores: list[list[Any]] = []
    for name, result in stages.items():
        if not result.get("checkpoint"):
            continue
        asked = questions + [qa.question for qa in heldout[SAMPLE_HELDOUT:]]
        answers = chat_replies(result["checkpoint"], storage, asked, None if name == "pretrain" else index_uri, settings)
        replies[name] = answers[: len(questions)]
        if heldout:
            right = sum(qa.answer in answer for qa, answer in zip(heldout, answers[len(CHAT_PROMPTS):]))
            scores.append([name, f"{right} of {len(heldout)}", f"{right / len(heldout):.0%}"])
    if replies:
        names = list(replies)
        parts.append("The same chat prompts to each stage's model (greedy; the base model is what SFT starts from; "
                     "the last rows are held-out questions):\n\n" +
                     table(["prompt", *names], [[question, *(replies[n][i] for n in names)] for i, question in enumerate(questions)]))
    held = ""
    if scores:
        chance = 1 / max(1, len(chat.get("hosts", [])))
        held = ("## Held-out questions\n\nWhich site published a page no stage trained on (the right host named in "
                f"the greedy reply; chance about {chance:.0%}):\n\n" + table(["model", "right", "share"], scores))
    return "\n\n".join(part for part in parts if part) + ("\n\n" + held if held else "")


# --- links -------------------------------------------------------------------------------------


def run_artifact_links() -> list[tuple[str, str, str]]:
    """(key, type, link) for each artifact of this flow run and its subflows, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter,
    )
    from prefect.client.schemas.sorting import ArtifactSort
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    run_id = flow_run.id  # the flow run's, from a task of it too (a task's context has no flow_run)
    if run_id is None:
        return []
    with get_client(sync_client=True) as client:
        ids, frontier = [UUID(run_id)], [UUID(run_id)]
        while frontier:  # subflows, and theirs
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            frontier = [child.id for child in children if child.id not in ids]
            ids += frontier
        # (every filter given: the server rejects the client's nulls for the optional ones)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)),
            flow_run_filter=FlowRunFilter(), task_run_filter=TaskRunFilter(), sort=ArtifactSort.CREATED_DESC, limit=200)
    base = (PREFECT_UI_URL.value() or "").rstrip("/")
    seen, links = set(), []
    for artifact in artifacts:  # newest first: a retried stage's latest progress wins
        if artifact.key and artifact.key not in seen and artifact.key != ARTIFACT_KEY:
            seen.add(artifact.key)
            links.append((artifact.key, artifact.type, f"{base}/artifacts/artifact/{artifact.id}"))
    return links[::-1]


# --- the card ----------------------------------------------------------------------------------


def _write_if_changed(storage: Storage, uri: str, data: bytes) -> None:
    if not (storage.exists(uri) and storage.read_bytes(uri) == data):
        storage.write_bytes(uri, data)


def _image(name: str, png: bytes, title: str) -> tuple[str, str]:
    """(markdown for the UI with the image inline, markdown for report.md naming the file)."""
    inline = f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
    return inline, f"![{title}]({name})"


def publish_report_card(output: str, training: dict[str, Any] | None, config_file: str | None = None,
                        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Draw the card of the run under `output`, write it to `<output>/report/`, and attach it to
    the current Prefect run as the `report-card` markdown artifact (with links to the others)."""
    settings = run_settings(config_file, overrides)
    storage = Storage(settings.storage)
    report = join(output, REPORT_DIR)
    stages = (training or {}).get("stages", {})
    chat = (training or {}).get("chat_data") or _read_json(storage, join(output, "chat-data", "manifest.json"))
    ui_parts, file_parts, images = [f"# Report card: `{output}`"], [f"# Report card: `{output}`"], {}

    def add(text: str) -> None:
        if text:
            ui_parts.append(text)
            file_parts.append(text)

    def add_image(name: str, png: bytes | None, title: str) -> None:
        if png:
            images[name] = png
            inline, linked = _image(name, png, title)
            ui_parts.append(inline)
            file_parts.append(linked)

    last = (training or {}).get("last")
    if last and stages.get(last, {}).get("checkpoint"):
        add(f"Talk to the model: `crawl2chat chat --checkpoint {join(output, last)}`")
    data, chart = data_section(storage, output)
    add(data)
    add_image("data-funnel.png", data_funnel(chart), "documents after each data step")
    add(chat_data_section(chat))
    if stages:
        rows, records = stage_rows(storage, stages)
        add("## Training\n\n" + table(["stage", "status", "steps", "tokens", "time", "train loss", "held-out metrics"], rows))
        for name, stage_records in records.items():
            add_image(f"curves-{name}.png", training_curves(name, stage_records), f"{name} training curves")
        add(samples_section(storage, output, stages, chat, settings))
    links = run_artifact_links() if in_prefect_run() else []
    if links:
        ui_parts.append("## Artifacts of this run\n\n" + "\n".join(f"- [{key}]({link}) ({kind})" for key, kind, link in links))
    for name, png in images.items():
        _write_if_changed(storage, join(report, name), png)
    _write_if_changed(storage, join(report, "report.md"), ("\n\n".join(file_parts) + "\n").encode())
    artifact = None
    if in_prefect_run():
        from prefect.artifacts import create_markdown_artifact

        artifact = str(create_markdown_artifact("\n\n".join(ui_parts), key=ARTIFACT_KEY, description=f"report card of {output}"))
    log.info("report card: %s", join(report, "report.md"))
    return {"uri": join(report, "report.md"), "images": [join(report, name) for name in images], "artifact": artifact,
            "links": len(links)}
