"""Running one fuzz target under atheris (libFuzzer), and what every target shares.

A target is a module of this package with a ``check(data: bytes) -> None`` that feeds one input to the
code under test the way the service does, swallows exactly the exceptions its caller handles, and
raises anything else (a crash) or :class:`Finding` (an input that broke a property, e.g. an answer SDP
we could not parse ourselves). ``check`` runs without libFuzzer: the regression test calls it on every
input checked in under ``regressions/<target>/`` (``rtp_session`` decodes its input with atheris'
``FuzzedDataProvider``, so atheris is a test dependency).

``python -m tests.fuzz.<target> [libFuzzer flags] [corpus dirs or files]`` fuzzes it. With no corpus
given, new inputs go to a work directory outside the repository (``$HELPLINE_FUZZ_WORK``, default
``/tmp/helpline-fuzz``) and ``corpus/<target>/`` seeds it read-only; a crashing input is written to
``<work>/crashes/<target>-crash-<sha1>``. Files (not directories) as arguments just run those inputs,
which is how a crash is reproduced.

Only ``helpline`` and ``aiosipua`` code is instrumented for coverage: instrumenting the standard
library would slow every execution for edges we do not own.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"
REGRESSIONS_DIR = FUZZ_DIR / "regressions"
DICTS_DIR = FUZZ_DIR / "dicts"
INSTRUMENTED_PACKAGES = ("helpline", "aiosipua")
TARGETS = ("sip_message", "sip_stream", "sdp", "rtp_packet", "rtp_session")

# libFuzzer flags every run gets unless the command line sets them. ``-timeout`` is per input: any
# single input of at most ``max_len`` bytes taking seconds means super-linear work or a hang.
DEFAULT_FLAGS = {"-timeout": "5", "-rss_limit_mb": "2048", "-print_final_stats": "1"}


class Finding(AssertionError):
    """An input broke a property of the code under test without raising on its own."""


def work_dir() -> Path:
    """Where fuzzing keeps what it learns and finds (never inside the repository)."""
    return Path(os.environ.get("HELPLINE_FUZZ_WORK", "/tmp/helpline-fuzz"))


def _instrument(atheris: types.ModuleType) -> int:
    """Add coverage instrumentation to every loaded function of our packages and aiosipua."""
    count = 0
    for obj in gc.get_objects():
        if not isinstance(obj, types.FunctionType):
            continue
        module = getattr(obj, "__module__", None) or ""
        if module.split(".", 1)[0] in INSTRUMENTED_PACKAGES:
            atheris.instrument_func(obj)
            count += 1
    return count


def _dictionary(target: str, names: tuple[str, ...], work: Path) -> Path:
    """libFuzzer takes one ``-dict``: the target's dictionaries from ``dicts/`` joined in the work dir."""
    joined = work / "dicts" / f"{target}.dict"
    joined.parent.mkdir(parents=True, exist_ok=True)
    joined.write_text("".join((DICTS_DIR / f"{name}.dict").read_text() for name in names))
    return joined


def libfuzzer_args(
    target: str, argv: list[str], max_len: int, dictionaries: tuple[str, ...] = ()
) -> list[str]:
    """``argv`` completed with our defaults, the dictionaries, the work corpus and the seed corpus."""
    flags = [a for a in argv[1:] if a.startswith("-")]
    paths = [a for a in argv[1:] if not a.startswith("-")]
    given = {a.split("=", 1)[0] for a in flags}
    defaults = {**DEFAULT_FLAGS, "-max_len": str(max_len)}
    work = work_dir()
    if dictionaries and "-dict" not in given:
        defaults["-dict"] = str(_dictionary(target, dictionaries, work))
    if "-artifact_prefix" not in given:
        crashes = work / "crashes"
        crashes.mkdir(parents=True, exist_ok=True)
        defaults["-artifact_prefix"] = f"{crashes}/{target}-"
    flags += [f"{name}={value}" for name, value in defaults.items() if name not in given]
    if not paths:
        corpus = work / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        paths = [str(corpus), str(CORPUS_DIR / target)]
    return [argv[0], *flags, *paths]


def fuzz(
    target: str, check: Callable[[bytes], None], *, max_len: int, dictionaries: tuple[str, ...] = ()
) -> None:
    """Fuzz ``check`` with the command line's libFuzzer flags; never returns (libFuzzer exits).

    ``dictionaries`` names files of ``dicts/`` whose tokens the mutator splices in (protocol keywords,
    and values known to break number and text handling).
    """
    import atheris  # type: ignore[import-untyped]

    logging.disable(logging.CRITICAL)  # junk input makes the code under test log on every execution
    started = time.monotonic()
    atheris.enabled_hooks.add("str")  # startswith/endswith comparisons guide the mutator
    count = _instrument(atheris)
    print(f"INFO: {target}: instrumented {count} functions in {time.monotonic() - started:.1f} s",
          file=sys.stderr, flush=True)
    atheris.Setup(libfuzzer_args(target, sys.argv, max_len, dictionaries), check)
    atheris.Fuzz()
