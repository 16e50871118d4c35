"""Turn a stage's stats into what a person reads: a funnel table and a short summary.

Used twice: as Prefect artifacts (the run's page in the UI shows the funnel of every stage) and
as the text the CLI prints at the end of a run.
"""

from __future__ import annotations

from typing import Any


def funnel_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per step: documents in, out, dropped, the top drop reasons, seconds."""
    rows = []
    for name, step in stats.get("steps", {}).items():
        reasons = sorted(step["dropped"].items(), key=lambda item: -item[1])
        rows.append(
            {
                "step": name,
                "docs_in": step["docs_in"],
                "docs_out": step["docs_out"],
                "dropped": step["docs_in"] - step["docs_out"],
                "top_reasons": ", ".join(f"{reason}={count}" for reason, count in reasons[:4]),
                "extra": ", ".join(f"{key}={value}" for key, value in step.get("counts", {}).items()),
                "seconds": step.get("seconds", 0.0),
            }
        )
    return rows


def funnel_text(stats: dict[str, Any]) -> str:
    """A plain-text funnel for the terminal."""
    rows = funnel_rows(stats)
    lines = [f"{'step':<20}{'in':>9}{'out':>9}{'dropped':>9}  reasons"]
    for row in rows:
        reasons = "; ".join(part for part in (row["top_reasons"], row["extra"]) if part)
        lines.append(f"{row['step']:<20}{row['docs_in']:>9}{row['docs_out']:>9}{row['dropped']:>9}  {reasons}")
    return "\n".join(lines)


def publish_stage_artifacts(stage: str, stats: dict[str, Any]) -> None:
    """Attach the funnel table and a summary to the current Prefect run (a no-op outside one)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import get_run_context

    try:
        get_run_context()
    except Exception:  # noqa: BLE001 - not inside a flow or task run: nothing to attach to
        return
    key = stage.replace("_", "-")
    rows = funnel_rows(stats)
    if rows:
        create_table_artifact(rows, key=f"{key}-funnel", description=f"{stage}: documents per step and why they were dropped")
    summary = "\n".join(f"- **{name}**: {value}" for name, value in stats.get("totals", {}).items() if not isinstance(value, dict))
    failed = stats.get("inputs_failed") or {}
    if failed:
        summary += "\n\n**Inputs that failed** (a rerun retries them):\n" + "\n".join(f"- `{uri}`: {error}" for uri, error in failed.items())
    quarantined = stats.get("inputs_quarantined") or {}
    if quarantined:
        summary += "\n\n**Inputs quarantined** (their process crashed on every attempt; `--force` retries them):\n" + "\n".join(
            f"- `{uri}`: {error}" for uri, error in quarantined.items()
        )
    create_markdown_artifact(
        f"## {stage}\n\noutput: `{stats.get('output')}`, wall time {stats.get('wall_seconds')} s\n\n{summary}",
        key=f"{key}-summary",
        description=f"{stage} summary",
    )


def dedup_report(stats: dict[str, Any], output: str) -> dict[str, Any]:
    """The dedup stage's stats in the common report shape: a funnel of its three removals."""
    docs = stats["documents_in"]
    steps = {}
    for step, reason, key in (
        ("exact_dedup", "exact_duplicate", "exact_duplicates"),
        ("url_dedup", "duplicate_url", "url_duplicates"),
        ("near_dedup", "near_duplicate", "near_duplicates"),
        ("index_dedup", "seen_in_earlier_snapshot", "index_duplicates"),
    ):
        removed = stats.get(key, 0)
        steps[step] = {"docs_in": docs, "docs_out": docs - removed, "dropped": {reason: removed} if removed else {}, "counts": {}}
        docs -= removed
    steps["near_dedup"]["counts"] = {"clusters": stats.get("near_duplicate_clusters", 0)}
    totals = {
        key: stats.get(key)
        for key in ("documents_in", "documents_out", "exact_duplicates", "near_duplicates", "near_duplicate_clusters", "too_short")
    }
    return {"output": output, "wall_seconds": stats.get("wall_seconds"), "steps": steps, "totals": totals,
            "inputs_failed": stats.get("files_failed"), "inputs_quarantined": stats.get("files_quarantined")}


def tokenize_report(report: dict[str, Any]) -> dict[str, Any]:
    """The tokenize stage's report in the common shape: documents and tokens per split."""
    splits = report.get("splits", {})
    totals = {
        "documents": sum(split["docs"] for split in splits.values()),
        "tokens": sum(split["tokens"] for split in splits.values()),
        **{f"{name}_tokens": split["tokens"] for name, split in splits.items()},
        **{f"{name}_shards": split["shards"] for name, split in splits.items()},
        "tokenizer": report.get("tokenizer_sha256", "")[:12],
        "manifest": report.get("manifest"),
    }
    return {"output": report.get("output"), "wall_seconds": report.get("seconds"), "totals": totals,
            "inputs_failed": report.get("failed"), "inputs_quarantined": report.get("quarantined")}
