"""What the secret scan costs a record: `might_hold_secret` on a 4 KB prompt that holds no secret
(the common case, which sealing skips after this check), and on params-sized strings.

Wall-clock time is noise on a shared machine: count instructions instead, N calls minus 0 calls,
e.g.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/secret_scan.py 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/secret_scan.py 2000

(the "Collected" line of each; the difference divided by 2000 is the cost of one scan;
`--kind prose` for sentences only, the default mixes prose, code and a tool schema).
`--module path/to/redact.py` measures another implementation (an older one, from git show) in
the same way. Without valgrind the script prints the time per scan, for a rough look.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Any

# Prose, code and a tool schema: words like "key", "token", "password" and colons included, no secret.
_PARAGRAPHS = [
    "The key point of the migration is that every task-management request keeps its session. ",
    "Invalid token: expected an identifier after the colon, got a number instead. ",
    "def handler(event: dict, context: Any) -> dict:\n    return {'status': 200, 'body': event['body']}\n",
    '{"name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}, '
    '"page_token": {"type": "string"}, "sort_key": {"type": "string"}}}}\n',
    "Summary: the risk-free rate rose; the password policy requires 12 characters (password_min_length=12). ",
    "Right through the night the thoughtful knight fought; the light was bright and the sight was right. ",
]


_PROSE = [
    "The quarterly review covered the new onboarding flow, which shortened sign-up by a third. ",
    "Customers asked for clearer pricing; the team will publish a comparison page next month. ",
    "Right through the night the thoughtful knight fought; the light was bright and the sight was right. ",
    "Our key finding: most support tickets concern billing, not the product itself. ",
]


def prompt(size: int = 4096, kind: str = "mixed") -> str:
    paragraphs = _PARAGRAPHS if kind == "mixed" else _PROSE
    out: list[str] = []
    n = 0
    while n < size:
        p = paragraphs[len(out) % len(paragraphs)]
        out.append(p)
        n += len(p)
    return "".join(out)[:size]


def load(path: str | None) -> Any:
    if path is None:
        from historymw import redact

        return redact
    spec = importlib.util.spec_from_file_location("redact_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="scans to run (0: the baseline)")
    parser.add_argument("--module", help="a redact.py to measure instead of historymw.redact")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--kind", choices=("mixed", "prose"), default="mixed",
                        help="mixed: prose, code and a tool schema (many ':' and '='); prose: sentences only")
    args = parser.parse_args()
    redact = load(args.module)
    text = prompt(args.size, args.kind)
    check = redact.might_hold_secret
    assert not check(text), "the sample prompt must hold no secret"
    assert redact.redact_text(text) == text, "the sample prompt must come back unchanged"
    t0 = time.perf_counter()
    for _ in range(args.n):
        check(text)
    if args.n:
        print(f"{(time.perf_counter() - t0) / args.n * 1e6:.2f} µs per scan of {len(text)} chars (wall clock)")


if __name__ == "__main__":
    main()
