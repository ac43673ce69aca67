"""The session lifecycle in memory: 100,000 sessions of 20 calls on a simulated clock.

Each step records one call (hm.call inside hm.history(session=...)) and advances the
simulated clock one second. `concurrent` sessions run side by side, round-robin; when one
has made its 20 calls a new one takes its place. Every `check_every` calls hm.sessions() is
compared with the truth the script keeps (which sessions are within the idle time, and each
one's calls, errors, tokens and cost), so a session released late or early, or a wrong
count, is a mismatch. bytes_held is read at every check, RSS at the end.

  python benchmarks/sessions.py            # 100,000 sessions (2,000,000 calls)
  python benchmarks/sessions.py --quick    # 2,000 sessions (1,000 at a time under pressure)

Scenarios: 'steady' (50 sessions at a time: everything fits the 16 MiB budget, sessions
leave only by the idle time) and 'pressure' (5,000 at a time: the budget binds, the least
recently active sessions are released early and counted).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import historymw as hm

IDLE_S = 600.0
CALLS_PER_SESSION = 20


def rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def run(sessions: int, concurrent: int, check_every: int) -> dict[str, Any]:
    hm.configure(max_bytes="16MiB", session_idle=IDLE_S)
    clock = Clock()
    hm.ring().clock = clock
    max_bytes = hm.settings().max_bytes
    truth: dict[str, list[Any]] = {}  # id -> [last, calls, errors, tokens, cost]
    slots: list[tuple[str, int]] = []  # (session id, calls made)
    started = 0
    worst = checks = mismatches = 0
    rss_start = 0
    total_calls = sessions * CALLS_PER_SESSION
    tick = min(1.0, 300.0 / concurrent)  # a session calls every `concurrent * tick` s, within the idle time
    t0 = time.perf_counter()
    for step in range(total_calls):
        clock.now += tick
        k = step % concurrent
        if k >= len(slots) or slots[k][1] == CALLS_PER_SESSION:
            sid = f"session-{started:06d}"
            started += 1
            if k >= len(slots):
                slots.append((sid, 0))
            else:
                slots[k] = (sid, 0)
        sid, made = slots[k]
        slots[k] = (sid, made + 1)
        fail = made % 10 == 9
        with hm.history(session=sid):
            try:
                with hm.call(provider="openai", model="gpt-4o-mini",
                             messages=[{"role": "user", "content": f"question {made} of {sid}"}]) as c:
                    if fail:
                        raise TimeoutError("simulated")
                    c.output(f"answer {made}", usage={"prompt_tokens": 12, "completion_tokens": 8}, cost=0.001)
            except TimeoutError:
                pass
        t = truth.get(sid)
        if t is None or t[0] <= clock.now - tick - IDLE_S:  # new, or back after its release
            t = truth[sid] = [clock.now, 0, 0, 0, 0.0]
        t[0] = clock.now
        t[1] += 1
        if fail:
            t[2] += 1
        else:
            t[3] += 20
            t[4] += 0.001
        if step == total_calls // 10:
            gc.collect()
            rss_start = rss()
        if step % check_every == check_every - 1 or step == total_calls - 1:
            checks += 1
            worst = max(worst, hm.stats().bytes_held)
            live = {s.id: s for s in hm.sessions()}
            expected = {sid for sid, t in truth.items() if t[0] > clock.now - IDLE_S}
            for sid in [sid for sid, t in truth.items() if t[0] <= clock.now - IDLE_S]:
                del truth[sid]  # released in the truth too: it must be gone from memory
            wrong = set(live) - expected  # a session kept past its idle time
            fits = concurrent * CALLS_PER_SESSION * 1500 < max_bytes  # the whole working set fits
            for sid, s in live.items():
                t = truth.get(sid)
                if t is None:
                    continue
                if fits and ((s.calls, s.errors, s.total_tokens) != (t[1], t[2], t[3])
                             or abs((s.cost or 0.0) - t[4]) > 1e-9):
                    wrong.add(sid)
                elif not fits and s.calls > t[1]:  # released early, it starts afresh: never more
                    wrong.add(sid)
            if fits:  # none may be released early
                wrong |= expected - set(live)
            mismatches += bool(wrong)
    elapsed = time.perf_counter() - t0
    gc.collect()
    released, evicted = hm.ring().sessions_released
    return {"sessions": sessions, "concurrent": concurrent, "calls": total_calls,
            "worst_bytes_held": worst, "max_bytes": max_bytes, "rss_growth": rss() - rss_start,
            "released_idle": released, "evicted_early": evicted, "checks": checks,
            "mismatches": mismatches, "seconds": elapsed, "live_at_end": len(hm.sessions())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 sessions instead of 100,000")
    args = ap.parse_args(argv)
    n = 2_000 if args.quick else 100_000
    pressure = 1_000 if args.quick else 5_000
    rows = [("steady", run(n, 50, 1_000)), ("pressure", run(n, pressure, 5_000))]
    head = ("scenario", "sessions", "at once", "calls", "worst bytes_held", "budget", "RSS growth",
            "released idle", "evicted early", "sessions() checks", "mismatches", "s")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    ok = True
    for name, r in rows:
        print(" | ".join(str(x) for x in (
            name, f"{r['sessions']:,}", f"{r['concurrent']:,}", f"{r['calls']:,}",
            f"{r['worst_bytes_held'] / 2**20:.2f} MiB", f"{r['max_bytes'] / 2**20:.0f} MiB",
            f"{r['rss_growth'] / 2**20:.1f} MiB", f"{r['released_idle']:,}", f"{r['evicted_early']:,}",
            f"{r['checks']:,}", r["mismatches"], f"{r['seconds']:.1f}")))
        ok &= r["worst_bytes_held"] <= r["max_bytes"] and r["mismatches"] == 0
    if not ok:
        print("FAILED: a budget exceeded or hm.sessions() disagreed with the truth", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
