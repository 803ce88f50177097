"""`python -m tests.soak` (`make soak`): the chaos soak; exits 1 on any violation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .driver import Options, faults_available, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to run (default 10,000)")
    parser.add_argument("--workers", type=int, default=3, help="`sqsjobs work` subprocesses (default 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument(
        "--async-workers", type=int, default=1, help="how many of the workers run `sqsjobs work --async` (default 1)"
    )
    parser.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between SIGKILLs; 0: none")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=None,
        help="share of AWS calls that get a fault (default 0.1 when sqsjobs/testing/faults.py exists, else 0)",
    )
    parser.add_argument(
        "--kill-grace",
        type=float,
        default=15.0,
        help="seconds after the last dispatch that kills go on (default 15); then the tail drains",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before the run gives up (default 1800)")
    parser.add_argument("--max-depth", type=int, default=60, help="queue depth the driver keeps under")
    parser.add_argument("--workdir", type=Path, default=None, help="markers and logs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write figures and violations here")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--no-ddb-lock",
        action="store_true",
        help="let moto answer DynamoDB requests concurrently (it is not atomic then; see tests/soak/moto_server.py)",
    )
    args = parser.parse_args(argv)
    if args.fault_rate and not faults_available():
        parser.error("--fault-rate needs sqsjobs/testing/faults.py and boot.py")
    options = Options(
        jobs=args.jobs,
        workers=args.workers,
        concurrency=args.concurrency,
        async_workers=args.async_workers,
        kill_every=args.kill_every,
        kill_grace=args.kill_grace,
        fault_rate=args.fault_rate,
        seed=args.seed,
        timeout=args.timeout,
        max_depth=args.max_depth,
        workdir=args.workdir,
        quiet=args.quiet,
        ddb_lock=not args.no_ddb_lock,
    )
    result = run(options)
    print("\n== figures ==")
    for name, value in result.figures.items():
        print(f"{name:40} {value}")
    print(f"workdir (markers, worker logs)           {result.workdir}")
    if result.violations:
        print(f"\n== {len(result.violations)} violation(s) ==")
        for v in result.violations:
            print(json.dumps(v, indent=2, default=str))
    else:
        print("\nno violations")
    if args.json:
        args.json.write_text(json.dumps({"figures": result.figures, "violations": result.violations}, default=str))
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
