"""`python -m engine` / the `engine` console script.

Subcommands: demo (the main job of `make run`), stats, tail, get, export,
import, serve, and the ones the sync and migrations layers register (sync,
pull, init, migrate). Bad input prints one clear line on stderr and exits non-zero:
2 for usage errors, 1 for engine errors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from . import codec, keys
from .errors import EngineError, NotFoundError, ValidationError
from .progress import Progress

Handler = Callable[[argparse.Namespace], int]


@contextmanager
def _open(args: argparse.Namespace, **extra: Any) -> Iterator[Any]:
    from . import open as open_engine

    eng = open_engine(args.path, **extra)
    try:
        yield eng
    finally:
        eng.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoSizes, run_demo

    if args.fresh and args.path and Path(args.path).exists():
        shutil.rmtree(args.path)
    sizes = DemoSizes(actions=args.actions, logs=args.logs, embeddings=args.embeddings)
    with _open(args, durable=not args.fast) as eng:
        run_demo(eng, sizes, sys.stdout)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .stats import collect_stats, format_stats

    with _open(args) as eng:
        report = collect_stats(eng)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_stats(report))
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    with _open(args) as eng:
        n = eng.store.stream_length(args.stream)
        if n == 0:
            raise NotFoundError(f"stream {args.stream!r} is empty or does not exist")
        for off, value in eng.read(args.stream, max(0, n - args.n), args.n):
            sys.stdout.write(f"{off}\t{orjson.dumps(value).decode()}\n")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with _open(args) as eng:
        value = eng.get_or_raise(args.key)
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer if args.output in (None, "-") else open(args.output, "wb")
    try:
        with _open(args) as eng:
            total = eng.store.stream_length(args.stream)
            with Progress(total, f"export {args.stream}") as bar:
                start = 0
                while start < total:
                    rows = eng.store.read(args.stream, start, 4096)
                    if not rows:
                        break
                    for _, raw in rows:
                        out.write(bytes(raw) + b"\n")
                    bar.advance(len(rows))
                    start = rows[-1][0] + 1
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    src = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    try:
        lines = [ln for ln in src.read().splitlines() if ln.strip()]
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"line {i} is not JSON: {exc}") from None
        rows.append(codec.encode(value))
    keys.check_name(args.stream, "stream")
    with _open(args) as eng, Progress(len(rows), f"import {args.stream}") as bar, eng.store.write() as batch:
        # one transaction: a bad file imports nothing
        for row in rows:
            eng.store.append(batch, args.stream, row)
            bar.advance()
    print(f"imported {len(rows):,} rows into {args.stream}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import main as server_main

    argv = list(args.extra)
    if args.path and "--path" not in argv:
        argv += ["--path", args.path]
    return server_main(argv)


def _layer_commands() -> list[Callable[[Any], None]]:
    from . import migrations, sync

    return [migrations.register_cli, sync.register_cli]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine", description="reddb-engine: local-first agent telemetry store"
    )
    parser.add_argument("--path", default=None, help="store directory (default: ENGINE_PATH or the data dir)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="write a simulated agent session and read it back")
    p.add_argument("--actions", type=int, default=50_000)
    p.add_argument("--logs", type=int, default=20_000)
    p.add_argument("--embeddings", type=int, default=2_000)
    p.add_argument("--fresh", action="store_true", help="delete the store directory first")
    p.add_argument("--fast", action="store_true", help="durable=False (no fsync per commit)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("stats", help="counts and bytes per stream and key space, LMDB info")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("tail", help="the newest rows of a stream")
    p.add_argument("stream")
    p.add_argument("-n", type=int, default=10)
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("get", help="one key-value entry")
    p.add_argument("key")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("export", help="a stream as JSON lines")
    p.add_argument("stream")
    p.add_argument("--format", choices=["jsonl"], default="jsonl")
    p.add_argument("-o", "--output", default=None)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="a RedDB-compatible HTTP server (the [server] extra)")
    p.set_defaults(func=cmd_serve, passthrough=True)  # its own options: see `python -m engine.server --help`

    p = sub.add_parser("import", help="append JSON lines to a stream (all or nothing)")
    p.add_argument("stream")
    p.add_argument("file", help="a .jsonl file, or - for stdin")
    p.set_defaults(func=cmd_import)

    for register in _layer_commands():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    handler: Handler = args.func
    try:
        return handler(args)
    except EngineError as exc:
        print(f"engine: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"engine: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("engine: interrupted", file=sys.stderr)
        return 130
