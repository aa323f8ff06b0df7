"""`python -m engine` / the `engine` console script.

Subcommands: demo (the main job of `make run`), stats, tail, get, export, import, serve, sync,
pull, init and migrate. Bad input prints one clear line on stderr and exits non-zero:
2 for usage errors, 1 for engine errors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from . import codec, keys
from .errors import (
    AuthError,
    ConfigError,
    EngineError,
    MigrationError,
    NotFoundError,
    RemoteError,
    SyncError,
    ValidationError,
)
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


def _open_for_sync(args: argparse.Namespace) -> Any:
    from . import open as open_engine

    return open_engine(args.path, auto_sync=False, auto_migrate=False)


def register_sync_commands(subparsers: Any) -> None:
    """Add `sync` and `pull` to the `engine` command line."""
    p = subparsers.add_parser("sync", help="replicate the outbox to RedDB now (drain until empty)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.set_defaults(func=cmd_sync)
    p = subparsers.add_parser("pull", help="import a RedDB stream into the local store (not replicated back)")
    p.add_argument("stream")
    p.add_argument("--force", action="store_true", help="append even if the local stream has rows")
    p.add_argument("--batch", type=int, default=1000, help="rows per local transaction")
    p.add_argument("--start", type=int, default=0, help="first remote offset (to resume a pull)")
    p.set_defaults(func=cmd_pull)


def cmd_sync(args: argparse.Namespace) -> int:
    """Drain the outbox until it is empty (or --timeout passes); report sent and duplicates avoided."""
    from .sync import backoff_delay

    eng = _open_for_sync(args)
    try:
        syncer = getattr(eng, "_syncer", None)
        if syncer is None:
            raise ConfigError("nothing to sync: replication is off", hint="set REDDB_URL")
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        before = syncer.status()
        attempt, last = 0, ""
        with Progress(before["backlog"], "sync", unit="entries") as bar:
            while pending := eng.store.outbox_size():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise SyncError(f"sync timed out with {pending:,} entries pending{last}")
                try:
                    bar.advance(syncer.drain_once())
                    attempt = 0
                except (RemoteError, SyncError) as exc:
                    if isinstance(exc, AuthError):
                        raise
                    last = f"; last error: {exc}"
                    pause = max(0.01, backoff_delay(attempt, 0.1, 2.0, syncer._rng))
                    time.sleep(pause if left is None else min(pause, left))
                    attempt += 1
        after = syncer.status()
        sent = after["sent"] - before["sent"]
        dups = after["duplicates_avoided"] - before["duplicates_avoided"]
        print(f"synced: {sent:,} sent, {dups:,} duplicates avoided, backlog {after['backlog']:,}", flush=True)
        return 0
    finally:
        eng.close()


def cmd_pull(args: argparse.Namespace) -> int:
    """Copy a remote stream into the local store without creating outbox entries."""
    from .remote import client_for, remote_end
    from .sync import STREAM_ID_FIELD

    keys.check_name(args.stream, "stream")
    if args.batch < 1 or args.start < 0:
        raise ValidationError("--batch must be >= 1 and --start >= 0")
    eng = _open_for_sync(args)
    try:
        cfg = eng.config
        if not cfg.reddb_url:
            raise ConfigError("pull needs a RedDB server", hint="set REDDB_URL")
        existing = eng.store.stream_length(args.stream)
        if existing and not args.force:
            raise ValidationError(
                f"local stream {args.stream!r} already has {existing:,} rows", hint="use --force to append"
            )
        id_field = STREAM_ID_FIELD.get(args.stream)
        pulled, resume = 0, args.start
        with client_for(cfg.reddb_url, token=cfg.reddb_token, namespace=cfg.namespace) as client:
            total = max(0, remote_end(client, args.stream) - args.start)
            with Progress(total, f"pull {args.stream}") as bar:
                rows: list[tuple[bytes, str | None]] = []
                try:
                    for offset, value in client.iter_stream(args.stream, args.start, page=1000):
                        rid = value.get(id_field) if id_field and isinstance(value, dict) else None
                        ok = isinstance(rid, str) and 0 < len(rid.encode()) <= 400
                        rows.append((codec.encode(value, checked=True), rid if ok else None))
                        if len(rows) >= args.batch:
                            pulled += _append_local(eng, args.stream, rows)
                            bar.advance(len(rows))
                            rows, resume = [], offset + 1
                    pulled += _append_local(eng, args.stream, rows)
                    bar.advance(len(rows))
                except RemoteError as exc:
                    raise SyncError(
                        f"pull stopped after {pulled:,} rows: {exc}",
                        hint=f"resume with `pull {args.stream} --force --start {resume}`",
                    ) from exc
        print(f"pulled {pulled:,} rows from RedDB stream {args.stream!r}", flush=True)
        return 0
    finally:
        eng.close()


def _append_local(eng: Any, stream: str, rows: list[tuple[bytes, str | None]]) -> int:
    with eng.store.write() as b:
        for row, rid in rows:
            eng.store.append(b, stream, row, record_id=rid, replicate=False)
    return len(rows)


# ---------------------------------------------------------------------------------------------------
# CLI: `engine init`, `engine migrate [--to VERSION] [--status] [--json]`.


@contextmanager
def _opened_for_migrations(args: argparse.Namespace) -> Iterator[Any]:
    from . import open as open_engine

    eng = open_engine(args.path, auto_migrate=False)
    try:
        yield eng
    finally:
        eng.close()


def _emit(args: argparse.Namespace, report: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in lines))


def _describe(manager: Any, verb: str, versions: list[str]) -> list[str]:
    return [f"{verb} {v}: {manager.migrations[v].description}" for v in versions]


def _status_lines(status: dict[str, Any]) -> list[str]:
    lines = [
        f"current version: {status['current_version'] or 'none'} (latest {status['latest_version']})",
        f"applied: {', '.join(status['applied']) or 'none'}",
        f"pending: {', '.join(status['pending']) or 'none'}",
    ]
    if "error" in status:
        lines.append(f"error: {status['error']}")
    return lines


def cmd_migrate(args: argparse.Namespace) -> int:
    """`engine migrate` / `engine init`: to the latest version or `--to VERSION` (lower rolls back)."""
    from . import migrations

    with _opened_for_migrations(args) as eng:
        manager = migrations.get_migration_manager(eng)
        applied: list[str] = []
        rolled_back: list[str] = []
        if args.status:
            status = manager.status()
            _emit(args, status, _status_lines(status))
            return 0
        if args.to is None:
            applied = manager.apply_pending_migrations()
        else:
            target = migrations.parse_version(args.to)
            if args.to not in manager.migrations and any(target):
                known = ", ".join(sorted(manager.migrations, key=migrations.parse_version))
                raise MigrationError(
                    f"unknown version {args.to}", hint=f"known: {known}; 0.0.0 rolls back all"
                )
            current = manager.get_current_version()
            if current is not None and target < migrations.parse_version(current):
                rolled_back = manager.rollback(args.to)
            else:
                applied = manager.apply_pending_migrations(up_to=args.to)
        status = manager.status()
    lines = _describe(manager, "applied", applied) + _describe(manager, "rolled back", rolled_back)
    lines = (lines or ["nothing to do"]) + [f"schema version: {status['current_version'] or 'none'}"]
    _emit(args, {"applied_now": applied, "rolled_back": rolled_back, **status}, lines)
    return 0


def register_migration_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `init` and `migrate` subcommands to the `engine` command line."""
    p = subparsers.add_parser("init", help="apply every pending schema migration")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_migrate, to=None, status=False)

    p = subparsers.add_parser("migrate", help="migrate the schema to the latest or a given version")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--to", metavar="VERSION", default=None, help="target version (lower rolls back)")
    group.add_argument("--status", action="store_true", help="show current, applied and pending versions")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_migrate)


def _layer_commands() -> list[Callable[[Any], None]]:
    return [register_migration_commands, register_sync_commands]


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
