"""crawl2chat's Prefect deployments: what `crawl2chat deploy` puts in the work pools and `serve` serves.

    process pool (CPU)   new-snapshots/scheduled    reads collinfo.json on a cron, runs each new crawl
                         backfill/backfill          on demand: snapshot ids or a date range
                         crawl-to-tokens/on-demand  on demand: any WARC inputs or one snapshot
    gpu pool             train/stages               on demand: the training stages on a run's tokens
                         crawl-to-chat/end-to-end   on demand: crawl to chat model in one run

Every deployment names its flow by module path (`flows.backfill.backfill`), so a worker runs
the crawl2chat installed beside it (or the checkout on its PYTHONPATH: `crawl2chat up` sets
that), with no code upload; one run at a time per deployment, so a slow crawl is never taken
up twice by overlapping schedules. Parameters are what the UI shows and lets a person change:
local paths in them are made absolute (a worker runs flows in a scratch directory) and
credentials are refused there (they belong in the worker's environment).
"""

from __future__ import annotations

import os
from typing import Any

from flows.credentials import refuse_credentials
from infra.settings import ServicesSettings

TAGS = ["crawl2chat"]


def make_deployment(flow, name: str, parameters: dict[str, Any], cron: str | None = None, tags: list[str] | None = None):
    """A RunnerDeployment of `flow`, for `prefect.deploy` (a work pool) or `prefect.serve`."""
    from prefect.deployments.runner import EntrypointType

    return flow.to_deployment(
        name=name, cron=cron, parameters=check_parameters(parameters), concurrency_limit=1,
        tags=TAGS + (tags or []), entrypoint_type=EntrypointType.MODULE_PATH,
    )


def _absolute(location: str) -> str:
    return location if "://" in location else os.path.abspath(location)  # s3://, http(s):// as they are


def check_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Local paths made absolute; a credential in the overrides is an error, not a parameter."""
    refuse_credentials(parameters.get("overrides"))
    checked = dict(parameters)
    if checked.get("output"):
        checked["output"] = _absolute(checked["output"])
    if checked.get("inputs"):
        checked["inputs"] = [_absolute(item) for item in checked["inputs"]]
    if checked.get("config_file"):
        checked["config_file"] = os.path.abspath(checked["config_file"])
    return checked


def crawl_to_tokens_deployment(name: str, parameters: dict[str, Any], cron: str | None = None):
    """The crawl-to-tokens flow as a deployment (`crawl2chat serve` serves this one)."""
    from flows.crawl_to_tokens import crawl_to_tokens

    return make_deployment(crawl_to_tokens, name, parameters, cron, tags=["data"])


def data_deployments(
    output: str, cron: str | None, max_warcs: int | None = None, dedup_across: bool = False,
    config_file: str | None = None, overrides: dict[str, Any] | None = None,
) -> list:
    """The data half's deployments, all writing under `output` (one folder per snapshot)."""
    from flows.backfill import backfill, new_snapshots

    common = {"output": output, "max_warcs": max_warcs, "config_file": config_file, "overrides": overrides or {}}
    return [
        make_deployment(new_snapshots, "scheduled", {**common, "dedup_across": dedup_across}, cron, tags=["data"]),
        make_deployment(backfill, "backfill", {**common, "dedup_across": dedup_across, "snapshots": None}, tags=["data"]),
        crawl_to_tokens_deployment("on-demand", {**common, "inputs": None, "snapshot": None}),
    ]


def training_deployments(output: str, config_file: str | None = None, overrides: dict[str, Any] | None = None,
                         max_warcs: int | None = None) -> list:
    """The training flows' deployments, writing under `output` (a folder of a run's stages)."""
    from flows.crawl_to_chat import crawl_to_chat
    from flows.train import train

    common = {"output": output, "config_file": config_file, "overrides": overrides or {}}
    return [
        make_deployment(train, "stages", common, tags=["train"]),
        make_deployment(crawl_to_chat, "end-to-end", {**common, "inputs": None, "snapshot": None, "max_warcs": max_warcs},
                        tags=["train", "data"]),
    ]


def ensure_pools(settings: ServicesSettings) -> None:
    """Create the CPU and GPU work pools (process type) where the server lacks them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        for pool in (settings.cpu_pool, settings.gpu_pool):
            try:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            except ObjectAlreadyExists:
                pass


def deployments_by_pool(settings: ServicesSettings, output: str, cron: str | None, **data_parameters: Any) -> dict[str, list]:
    """Every deployment `crawl2chat deploy` applies, by work pool.

    The GPU pool exists (ensure_pools) and gets its worker where there is a GPU (`up --gpu`):
    the training flows' deployments go there; their stages use every GPU of the worker's machine
    (flows/stages.py).
    """
    shared = {key: data_parameters.get(key) for key in ("config_file", "overrides", "max_warcs")}
    return {settings.cpu_pool: data_deployments(output, cron, **data_parameters),
            settings.gpu_pool: training_deployments(output, **shared)}


def deploy_all(settings: ServicesSettings, by_pool: dict[str, list]) -> list[str]:
    """Create the pools and apply each pool's deployments; returns `flow/deployment` names."""
    from prefect import deploy

    ensure_pools(settings)
    names = []
    for pool, deployments in by_pool.items():
        if deployments:
            deploy(*deployments, work_pool_name=pool, print_next_steps_message=False, ignore_warnings=True)
            names += [f"{deployment.flow_name}/{deployment.name} ({pool})" for deployment in deployments]
    return names
