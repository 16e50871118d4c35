"""The training stages as the `train` flow runs them: the stage table, launching, skip and resume.

## The stage table

`STAGES` has one entry per stage: its name (also its folder, `<output>/<name>/`), the CLI
sub-command that trains it, which earlier stages' checkpoints it takes (flag -> stage, passed as
that stage's folder: its newest complete checkpoint), its inputs (flag -> a `train` flow
parameter), fixed arguments, and the settings sections that are its own (what its fingerprint
covers and what it is given). `PIPELINES` orders them: pretrain -> sft -> reward -> ppo, or
pretrain -> sft -> dpo / grpo. Adding a stage is one entry here and its place in a pipeline:

    Stage("orpo", "orpo", checkpoints={"--policy": "sft"}, inputs={"--data": "pairs"}, sections=("orpo",))

## Launching

A stage runs as a child process of our own CLI, `python -m flows.cli <command> ...`, or
`python -m torch.distributed.run --standalone --nproc-per-node N -m flows.cli <command> ...`
with one process per GPU (or N CPU processes on gloo when asked), never in the flow's process:
the same command line runs one process and many, so a stage is the command a user would type
(and its checkpoints, metrics and errors the same); a stage that does not exist yet on this
installation is one line, not an import error; the GPU memory and threads of a stage go back
when it ends; and a crash of a stage (out of memory, a kill) leaves the flow alive to report it
and to retry. Its cost is a Python start per stage (about 2 s). Settings reach the child
resolved: every field of the stage's own sections (after preset, config file, environment and
overrides) as `--set`, so the child trains with exactly the settings the fingerprint holds, plus
the user's overrides of shared sections (storage, search, ...); credentials go through its
environment, never its command line. On Linux the child is told to stop (SIGTERM, which the
trainer turns into a checkpoint) if the flow's process dies.

## Skip and resume

`<output>/<stage>/stage.json` records the stage's fingerprint: a hash of what its result
depends on, namely its command, each input's content (a token set's manifest without its
creation time, a data file's sha256), the earlier checkpoints it starts from (their weights'
sha256) and the values of its own settings sections (without bookkeeping that does not change
the weights: log, checkpoint and eval cadence, checkpoints kept, MFU peak). Then:
- same fingerprint and a final checkpoint (`checkpoints/latest.json` with `final`): skipped,
  nothing written;
- same fingerprint, no final checkpoint: resumed from its newest checkpoint (`--resume`);
- another fingerprint, or checkpoints with no record: refused in one line naming what differs,
  unless `force`, which deletes the stage's folder and trains it again (the stages after it then
  see other weights and are retrained with `force` too).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infra.settings import Settings
from infra.storage import Storage, join
from model.checkpoint import CHECKPOINTS_DIR, META_FILE, WEIGHTS_FILE, latest_pointer
from model.shards import manifest_uri
from model.trainer import METRICS_FILE
from tasks.chat.files import resolve_data_files
from tasks.chat.mix import parse_source

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECORD_FILE = "stage.json"
RECORD_VERSION = 1
# Train settings that change how a run is logged and checkpointed, not the weights it makes.
BOOKKEEPING = frozenset({"log_every", "checkpoint_every", "keep_checkpoints", "eval_every", "peak_flops"})


@dataclass(frozen=True)
class Stage:
    name: str
    command: str
    checkpoints: dict[str, str] = field(default_factory=dict)  # flag -> the earlier stage it takes
    inputs: dict[str, str] = field(default_factory=dict)  # flag -> a `train` parameter (one URI or a list)
    args: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()  # settings sections that are this stage's own
    loop: str = "train"  # where its TrainSettings sit (max_steps: the total its progress counts to)


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("pretrain", "pretrain", inputs={"--tokens": "tokens"}, sections=("model", "train"), loop="train"),
    Stage("sft", "sft", checkpoints={"--base": "pretrain"}, inputs={"--data": "sft_data"}, sections=("sft",),
          loop="sft.train"),
    Stage("reward", "reward", checkpoints={"--base": "sft"}, inputs={"--data": "pairs"}, sections=("reward",),
          loop="reward.train"),
    Stage("ppo", "ppo", checkpoints={"--policy": "sft", "--reward": "reward"}, inputs={"--prompts": "prompts"},
          sections=("ppo",), loop="ppo.train"),
    Stage("dpo", "dpo", checkpoints={"--policy": "sft"}, inputs={"--data": "pairs"}, sections=("dpo",), loop="dpo.train"),
    Stage("grpo", "grpo", checkpoints={"--policy": "sft"}, args=("--task", "arithmetic"), sections=("grpo",),
          loop="grpo.train"),
)}
PIPELINES: dict[str, tuple[str, ...]] = {
    "ppo": ("pretrain", "sft", "reward", "ppo"),
    "dpo": ("pretrain", "sft", "dpo"),
    "grpo": ("pretrain", "sft", "grpo"),
}
OWNED_SECTIONS = frozenset(section.split(".")[0] for stage in STAGES.values() for section in stage.sections)


class StageError(ValueError):
    """A stage that cannot run as asked (one line): a missing command, a record of other inputs."""


class StageFailed(RuntimeError):
    """A stage's process failed or stopped before its end (one line; its log has the rest)."""


def pipeline(rl: str, until: str | None = None) -> list[Stage]:
    """The stages to run, in order: the `rl` pipeline, up to and including `until`."""
    if rl not in PIPELINES:
        raise StageError(f"unknown rl {rl!r} (known: {', '.join(PIPELINES)})")
    names = PIPELINES[rl]
    if until is not None:
        if until not in names:
            raise StageError(f"--until {until!r} is not a stage of the {rl} pipeline ({' -> '.join(names)})")
        names = names[: names.index(until) + 1]
    return [STAGES[name] for name in names]


def installed_commands() -> set[str]:
    """The sub-commands this installation's CLI has."""
    import argparse

    from flows.cli import build_parser

    parser = build_parser()
    return {name for action in parser._actions if isinstance(action, argparse._SubParsersAction) for name in action.choices}


def check_commands(stages: list[Stage]) -> None:
    missing = [stage for stage in stages if stage.command not in installed_commands()]
    if missing:
        last = stages[stages.index(missing[0]) - 1].name if stages.index(missing[0]) else None
        hint = f" (stop before it with --until {last})" if last else ""
        raise StageError(f"stage {missing[0].name} needs the `crawl2chat {missing[0].command}` command, which this "
                         f"installation does not have{hint}")


# --- settings ----------------------------------------------------------------------------------


def section_values(settings: Settings, dotted: str) -> dict[str, Any] | None:
    """The values of a settings section (`train`, `sft.train`), or None where it does not exist."""
    node: Any = settings
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node.model_dump(mode="json")


def _without_bookkeeping(values: Any) -> Any:
    if isinstance(values, dict):
        return {key: _without_bookkeeping(value) for key, value in values.items() if key not in BOOKKEEPING}
    return values


def flatten(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Nested values as `a.b.c=<json>` pairs, what `--set` parses back."""
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}={json.dumps(value)}"


def stage_overrides(stage: Stage, settings: Settings, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """What the stage's process is given with `--set`: the user's overrides of shared sections,
    and every value of the stage's own sections as resolved here (never another stage's)."""
    given = {key: value for key, value in (overrides or {}).items() if key not in OWNED_SECTIONS}
    for section in stage.sections:
        values = section_values(settings, section)
        if values is not None:
            node = given
            *parents, leaf = section.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = values
    return given


def max_steps(stage: Stage, settings: Settings) -> int | None:
    values = section_values(settings, stage.loop)
    return values.get("max_steps") if values else None


# --- fingerprints ------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_identity(storage: Storage, spec: str) -> dict[str, Any]:
    """What an input is, by content: a token set by its manifest (less its creation time), data
    files by their sha256 (with the mix weight a `FILE:WEIGHT` spec gives)."""
    if storage.exists(manifest_uri(spec)):
        manifest = json.loads(storage.read_text(manifest_uri(spec)))
        manifest.pop("created_at", None)
        return {"tokens": _sha256(json.dumps(manifest, sort_keys=True).encode())}
    source = parse_source(spec)
    files = resolve_data_files([source.data], storage)
    return {"weight": source.weight, "files": {uri.rsplit("/", 1)[-1]: _sha256(storage.read_bytes(uri)) for uri in files}}


def checkpoint_identity(storage: Storage, run: str) -> dict[str, Any]:
    """An earlier stage's final checkpoint, by its weights' sha256."""
    pointer = latest_pointer(storage, run)
    if pointer is None or not pointer.get("final"):
        raise StageError(f"{run} has no final checkpoint to start from; run its stage first")
    record = json.loads(storage.read_text(join(run, CHECKPOINTS_DIR, pointer["path"], META_FILE)))
    return {"stage": record["stage"], "step": record["step"], "weights_sha256": record["files"][WEIGHTS_FILE]["sha256"]}


def as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def made_from(stage: Stage, output: str, inputs: dict[str, Any], settings: Settings, storage: Storage) -> dict[str, Any]:
    """Everything the stage's result depends on (see the module docstring)."""
    missing = [name for name in stage.inputs.values() if not as_list(inputs.get(name))]
    if missing:
        raise StageError(f"stage {stage.name} needs {missing[0]} (no {missing[0]} given, none made)")
    return {
        "command": [stage.command, *stage.args],
        "inputs": {flag: [input_identity(storage, spec) for spec in as_list(inputs[name])] for flag, name in stage.inputs.items()},
        "checkpoints": {flag: checkpoint_identity(storage, join(output, earlier)) for flag, earlier in stage.checkpoints.items()},
        "settings": {section: _without_bookkeeping(section_values(settings, section)) for section in stage.sections},
    }


def fingerprint(parts: dict[str, Any]) -> str:
    return _sha256(json.dumps(parts, sort_keys=True).encode())[:16]


def _leaves(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        return {key: value for name, item in values.items() for key, value in _leaves(item, f"{prefix}{name}.").items()}
    if isinstance(values, list) and values and all(isinstance(item, dict) for item in values):
        return {key: value for i, item in enumerate(values) for key, value in _leaves(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): values}


def differences(recorded: dict[str, Any], now: dict[str, Any], limit: int = 3) -> str:
    """The first few dotted keys whose values differ, e.g. `settings.train.max_steps 300 -> 20`."""
    before, after = _leaves(recorded), _leaves(now)
    keys = [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
    shown = [f"{key} {json.dumps(before.get(key))} -> {json.dumps(after.get(key))}" for key in keys[:limit]]
    return "; ".join(shown) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


# --- the record --------------------------------------------------------------------------------


def read_record(storage: Storage, stage_uri: str) -> dict[str, Any] | None:
    uri = join(stage_uri, RECORD_FILE)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def write_record(storage: Storage, stage_uri: str, record: dict[str, Any]) -> None:
    storage.write_text(join(stage_uri, RECORD_FILE), json.dumps(record, indent=1, sort_keys=True))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Decision:
    action: str  # "skip" | "resume" | "start"
    record: dict[str, Any]
    reason: str


def decide(storage: Storage, stage: Stage, stage_uri: str, parts: dict[str, Any], force: bool) -> Decision:
    """Skip, resume or start the stage, from its record and checkpoints (see the module docstring).
    With `force`, a stage made from other inputs is deleted here, to start again."""
    made = fingerprint(parts)
    record = read_record(storage, stage_uri)
    pointer = latest_pointer(storage, stage_uri)
    if record is not None and record.get("fingerprint") == made:
        if pointer is not None and pointer.get("final"):
            return Decision("skip", record, f"finished at step {pointer['step']} from the same inputs and settings")
        return Decision("resume", record, f"from step {pointer['step']}" if pointer else "from the start (no checkpoint yet)")
    if record is None and pointer is None:
        return Decision("start", {}, "first run")
    if record is not None:
        why = f"was trained from other inputs or settings ({differences(record.get('made_from', {}), parts)})"
    else:
        why = f"holds checkpoints (step {pointer['step']}) with no {RECORD_FILE}, so it is not known what made them"
    if not force:
        raise StageError(f"{stage_uri} {why}: pass --force to train {stage.name} again, or choose another --output")
    storage.delete_tree(stage_uri)
    return Decision("start", {}, f"forced: {stage_uri} {why}")


def preflight(stages: list[Stage], output: str, inputs: dict[str, Any], settings: Settings, storage: Storage,
              force: bool) -> None:
    """Before any flow starts: refuse (StageError) a stage whose record says it was made from
    other inputs or settings, as far as that can be told now (stages whose inputs and earlier
    checkpoints exist); the stage's task checks again when it runs."""
    if force:
        return
    for stage in stages:
        stage_uri = join(output, stage.name)
        if read_record(storage, stage_uri) is None and latest_pointer(storage, stage_uri) is None:
            continue
        try:
            parts = made_from(stage, output, inputs, settings, storage)
        except (StageError, ValueError, OSError):  # an input not made yet: nothing to compare with
            return
        decide(storage, stage, stage_uri, parts, force=False)


def begin_record(stage: Stage, parts: dict[str, Any], previous: dict[str, Any], command: list[str]) -> dict[str, Any]:
    return {
        "version": RECORD_VERSION, "stage": stage.name, "fingerprint": fingerprint(parts), "made_from": parts,
        "command": command, "status": "running", "attempts": previous.get("attempts", 0) + 1,
        "started_at": previous.get("started_at") or now(),
    }


# --- launching ---------------------------------------------------------------------------------


def stage_argv(stage: Stage, output: str, inputs: dict[str, Any], config_file: str | None,
               overrides: dict[str, Any]) -> list[str]:
    """The CLI arguments of one stage (after `crawl2chat`)."""
    argv = [stage.command, *stage.args]
    for flag, earlier in stage.checkpoints.items():
        argv += [flag, join(output, earlier)]
    for flag, name in stage.inputs.items():
        argv += [flag, *as_list(inputs[name])]
    argv += ["--output", join(output, stage.name), "--resume"]
    if config_file:
        argv += ["--config", config_file]
    for pair in flatten(overrides):
        argv += ["--set", pair]
    return argv


def shown(argv: list[str], stage: Stage) -> str:
    """The command line for a log: the stage's own settings counted, not listed (stage.json has them)."""
    own = {section.split(".")[0] for section in stage.sections}
    words, hidden, skip = [], 0, False
    for i, word in enumerate(argv):
        if skip:
            skip = False
        elif word == "--set" and i + 1 < len(argv) and argv[i + 1].split(".", 1)[0] in own:
            hidden, skip = hidden + 1, True
        else:
            words.append(word)
    return "crawl2chat " + " ".join(words) + (f" (+ {hidden} --set of {', '.join(stage.sections)})" if hidden else "")


def default_processes() -> int:
    """One process per GPU where there are GPUs, else one."""
    import torch

    return max(1, torch.cuda.device_count())


def launch_command(argv: list[str], processes: int) -> list[str]:
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                "-m", "flows.cli", *argv]
    return [sys.executable, "-m", "flows.cli", *argv]


def stage_environment(settings: Settings) -> dict[str, str]:
    """Ours, with the project importable and the storage credentials this run resolved (from
    the environment or a Prefect Secret block) where the child reads them."""
    from infra.storage import reveal

    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    if str(PROJECT_ROOT) not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), path) if p)
    storage = settings.storage
    for name, variable in (("access_key_id", "AWS_ACCESS_KEY_ID"), ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                           ("session_token", "AWS_SESSION_TOKEN")):
        value = reveal(getattr(storage, name, None))
        if value:
            env[variable] = value
    return env


def _stop_with_parent() -> None:  # runs in the child before exec (Linux)
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_process(command: list[str], env: dict[str, str], on_line: Callable[[str], None]) -> tuple[int, str, list[str]]:
    """Run `command`; hand each stderr line to `on_line` as it comes. Returns (exit code,
    stdout, the last stderr lines)."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, bufsize=1,
        preexec_fn=_stop_with_parent if sys.platform.startswith("linux") else None,
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(process.stdout.read()), daemon=True)
    reader.start()
    tail: list[str] = []
    try:
        for line in process.stderr:
            line = line.rstrip("\n")
            tail = (tail + [line])[-20:]
            on_line(line)
        code = process.wait()
    except BaseException:
        process.terminate()  # the task was cancelled or the flow interrupted: the trainer checkpoints and stops
        process.wait()
        raise
    reader.join()
    return code, "".join(out), tail


def summary_of(stdout: str) -> dict[str, Any]:
    """The JSON summary a training command prints last on stdout ({} if there is none)."""
    start = stdout.rfind("\n{")
    text = stdout[start + 1:] if start >= 0 else stdout
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def read_metrics(storage: Storage, stage_uri: str) -> list[dict[str, Any]]:
    uri = join(stage_uri, METRICS_FILE)
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def failure_line(stage: Stage, code: int, tail: list[str]) -> str:
    errors = [line for line in tail if "error" in line.lower()]
    last = (errors or tail or [""])[-1].strip()
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"stage {stage.name} {how}: {last}" if last else f"stage {stage.name} {how}"
