"""``helpline serve`` with one cost taken out, to measure what a proposed change would gain.

Benchmark-only instrumentation: it patches the running process, never the code under helpline/.

    --gc         gc.freeze() after imports and gc.set_threshold(50_000, 50, 100): what tuning the
                 cyclic collector in the server's start-up would gain
    --no-store   StoreSink accepts nothing: the ceiling of a store that costs (almost) nothing on the loop
    --no-metrics MetricsSink ignores events

    python -m bench.run --only helpline \\
        --helpline-cmd ".venv/bin/python -m bench.helpline_variant --gc --config {config}"
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--gc", action="store_true")
    parser.add_argument("--no-store", action="store_true")
    parser.add_argument("--no-metrics", action="store_true")
    args = parser.parse_args()

    from helpline import cli
    from helpline.events.metrics import MetricsSink
    from helpline.store.sink import StoreSink

    def ignore(self: Any, event: Any) -> None:
        return None

    if args.no_store:
        StoreSink.__call__ = ignore  # type: ignore[method-assign]
    if args.no_metrics:
        MetricsSink.__call__ = ignore  # type: ignore[method-assign]
    if args.gc:
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
    return cli.main(["serve", "--config", str(args.config)])


if __name__ == "__main__":
    sys.exit(main())
