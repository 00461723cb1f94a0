"""``make bench``: run every benchmark and print one table (ratios against baselines measured in the same run).

``python -m bench [--only cold_start,webhook,outbound] [--quick]``; each module also runs alone
(``python -m bench.cold_start`` etc.). See bench/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from bench._common import Row, Section, load_average, render

ALL = ("cold_start", "webhook", "outbound")


def _run_one(name: str, quick: bool) -> Section:
    if name == "cold_start":
        from bench import cold_start

        return cold_start.run(runs=5 if quick else 20)
    if name == "webhook":
        from bench import webhook

        return webhook.run(calls=10_000, profile_calls=1_000 if quick else 2_000)
    if name == "outbound":
        from bench import outbound

        return outbound.run(sends=200 if quick else 1_000, profile_sends=50 if quick else 200)
    raise ValueError(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {', '.join(ALL)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, not for numbers)")
    args = parser.parse_args(argv)
    sections: list[Section] = []
    failed = False
    started = time.monotonic()
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        print(f"running bench.{name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            section = _run_one(name, args.quick)
        except Exception as exc:  # noqa: BLE001 - report the failure in the table and go on with the others
            failed = True
            traceback.print_exc()
            section = Section(name, [Row(name, f"FAILED: {type(exc).__name__}: {exc}"[:100], None)])
        section.notes.append(f"({name} took {time.monotonic() - t0:.0f} s)")
        sections.append(section)
    print()
    print(f"load average at the end: {load_average()}: ratios are same-run; absolute times swing with load")
    print(render(sections))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
