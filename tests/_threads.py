"""A test helper: run work(i) on n threads at once and wait for all of them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def run_in_threads(work: Callable[[int], Any], n: int) -> None:
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
