"""How long to wait before retrying a request that failed for a reason that may pass.

Every retry loop of the project (object storage, HTTP downloads of WARCs) waits with the same
rule: exponential backoff with jitter. The n-th wait is drawn uniformly from [d/2, d] with
d = first * 2**(n-1), capped, so many tasks that failed together (a storage server restarting,
Common Crawl answering 503 Slow Down to every worker) do not all come back at the same instant,
and none retries sooner than half its nominal wait.
"""

from __future__ import annotations

import random

MAX_WAIT_SECONDS = 60.0


def backoff_seconds(attempt: int, first: float, cap: float = MAX_WAIT_SECONDS) -> float:
    """The wait before retry number `attempt` (1 for the first retry)."""
    nominal = min(cap, first * 2 ** (attempt - 1))
    return random.uniform(nominal / 2, nominal)
