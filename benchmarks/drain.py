"""Drain benchmark: SIGTERM to a server process under load, many times over.

    python benchmarks/drain.py [--drains 10] [--clients 16] [--store sqlite|postgres]
                               [--output FILE]

Each drain starts a fresh `tlserve-server` (free ports, a temporary data dir, the default
10 s grace), loads it for a second from two kinds of client that predict and send
feedback in a loop and carry on through refusals: tlserve's client (which watches the
server's health and so stops sending to a draining replica) and a plain generated stub
with no service config (as grpcurl or another language's stub calls). Then SIGTERM, and
the load goes on until the process has exited. Counted per kind of client: every answer
by status. Target: no status but OK and UNAVAILABLE (which clients retry on another
replica), over at least 10 drains, and every drain well inside its grace period. A plain
stub can still meet gRPC's own race (grpc/grpc#41785: calls that reached the server in
the instant of its stop are CANCELLED); a client that watches the `liveness` health
service, as tlserve's does, has stopped sending by then.

Prints a table and writes JSON (default benchmarks/results/drain.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_report  # noqa: E402
from examples.colour_model import publish_colour_version  # noqa: E402
from tests.support import Load, ServerProcess  # noqa: E402
from tlserve.server.registry import Registry  # noqa: E402

GRACE_SECONDS = 10.0


def one_drain(data_dir: Path, clients: int, store_url: str) -> dict[str, object]:
    server = ServerProcess(data_dir, store_url=store_url, drain_seconds=GRACE_SECONDS)
    with server.start():
        loads = {
            "tlserve_client": Load(server.target).start(clients // 2),
            "plain_stub": Load(server.target, plain=True).start(clients - clients // 2),
        }
        time.sleep(1.0)
        signalled = time.monotonic()
        server.terminate()
        exit_code = server.wait(GRACE_SECONDS + 30)
        drained = time.monotonic() - signalled
        time.sleep(0.3)
        codes = {kind: dict(load.stop()) for kind, load in loads.items()}
    return {"exit_code": exit_code, "drain_seconds": round(drained, 3), "codes": codes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drains", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/drain.json")
    args = parser.parse_args()
    store_url = (
        os.environ.get("TLSERVE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
        if args.store == "postgres"
        else ""
    )
    drains = []
    with tempfile.TemporaryDirectory(prefix="tlserve-drain-") as scratch:
        publish_colour_version(Registry.local(Path(scratch) / "registry"))
        for n in range(args.drains):
            result = one_drain(Path(scratch), args.clients, store_url)
            drains.append(result)
            print(f"drain {n + 1}: {result['drain_seconds']:.2f}s {result['codes']}", flush=True)
    totals: dict[str, Counter[str]] = {}
    for result in drains:
        for kind, codes in result["codes"].items():  # type: ignore[attr-defined]
            totals.setdefault(kind, Counter()).update(codes)
    wrong = {
        kind: sum(n for code, n in codes.items() if code not in ("OK", "UNAVAILABLE"))
        for kind, codes in totals.items()
    }
    seconds = [float(result["drain_seconds"]) for result in drains]  # type: ignore[arg-type]
    print(f"\n{'client':16} {'OK':>8} {'UNAVAILABLE':>12} {'other':>6}")
    for kind, codes in totals.items():
        print(f"{kind:16} {codes['OK']:>8} {codes['UNAVAILABLE']:>12} {wrong[kind]:>6}")
    print(f"drain seconds: max {max(seconds):.2f}, grace {GRACE_SECONDS:.0f}")
    report = {
        "benchmark": "drain",
        "store": args.store,
        "drains": args.drains,
        "clients": args.clients,
        "grace_seconds": GRACE_SECONDS,
        "totals": {kind: dict(codes) for kind, codes in totals.items()},
        "wrong_answers": wrong,
        "target_met": {kind: n == 0 for kind, n in wrong.items()},
        "drain_seconds_max": max(seconds),
        "every_exit_clean": all(result["exit_code"] == 0 for result in drains),
        "per_drain": drains,
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
