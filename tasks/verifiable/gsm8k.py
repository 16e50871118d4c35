"""GSM8K (Cobbe et al. 2021) as problems: `{question, answer}` rows whose answer ends `#### <n>`.

    rows, report = read_problems(["test.jsonl.gz"])     # JSON Lines (gzipped or not), JSON, Parquet
    rows[0].answer      # "18": the gold answer, by the same strict extractor that scores replies
    rows[0].solution    # the worked answer without GSM8K's <<48/2=24>> calculator annotations

The gold answer is read with `rewards.extract_answer`, so a reply that copies GSM8K's own
format is scored exactly as the dataset states its answers (every answer in the real train and
test files extracts to its `#### ` line; tests/test_verifiable.py checks). Any file of rows in
this layout works, e.g. generated arithmetic problems written out. A row is skipped and counted
when it is not an object, has no question, or its answer has no final answer by those rules;
a file with no usable row is a one-line error.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence

from infra.storage import Storage
from tasks.chat.errors import ChatDataError
from tasks.chat.files import BadRow, read_rows, resolve_data_files
from tasks.verifiable.problems import Problem
from tasks.verifiable.rewards import extract_answer

log = logging.getLogger(__name__)
CALCULATOR = re.compile(r"<<[^<>]*>>")


def problem_from_row(row: dict) -> Problem | str:
    """The row as a Problem, or the reason it is skipped."""
    question, answer = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        return "no_question"
    if not isinstance(answer, str):
        return "no_answer"
    gold = extract_answer(answer)
    if gold is None:
        return "no_final_answer"
    return Problem(question.strip(), gold, CALCULATOR.sub("", answer).strip())


def read_problems(data: Sequence[str], storage: Storage | None = None) -> tuple[list[Problem], dict[str, dict]]:
    """Every usable problem of the files `data` names, and per file {read, kept, skipped by reason}."""
    storage = storage or Storage()
    problems: list[Problem] = []
    report: dict[str, dict] = {}
    for uri in resolve_data_files(data, storage):
        skipped: Counter = Counter()
        read = kept = 0
        for row in read_rows(storage, uri):
            read += 1
            made = problem_from_row(row) if not isinstance(row, BadRow) else row.reason
            if isinstance(made, str):
                skipped[made] += 1
                continue
            problems.append(made)
            kept += 1
        if not kept:
            why = ", ".join(f"{reason}={n}" for reason, n in skipped.most_common(3)) or "the file is empty"
            raise ChatDataError(f"{uri}: no usable problems ({{question, answer ending '#### <number>'}} rows; {why})")
        report[uri] = {"read": read, "kept": kept, "skipped": dict(skipped)}
        log.info("%s: %d problems kept of %d rows%s", uri, kept, read,
                 f" (skipped: {dict(skipped)})" if skipped else "")
    return problems, report
