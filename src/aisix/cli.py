"""The `aisix` command: serve, validate, export, schema, demo-upstream (contract §1.2).

Exit codes: `serve` 0 after a clean shutdown, 2 for an invalid configuration (one stderr line
naming the key), 1 for any other startup failure; `validate` 0 valid, 1 invalid, 2 usage;
`export` 0, 1 when the store cannot be read, 2 usage; `schema` 0, or 2 for an unknown kind.
Accepted keys that have no effect yet are named once on stderr by `serve` and `validate`.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from aisix import __version__
from aisix.resources import KINDS
from aisix.settings import ConfigError, Settings, load_settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"aisix: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aisix", description="aisix AI gateway")
    parser.add_argument("--version", action="version", version=f"aisix {__version__}")
    parser.add_argument("--config", help="path to config.yaml (or set AISIX_CONFIG)")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="start the gateway")
    serve.add_argument("--config", default=argparse.SUPPRESS)
    validate = sub.add_parser("validate", help="check config and resources without serving")
    validate.add_argument("--config", default=argparse.SUPPRESS)
    validate.add_argument("--resources", help="resources file to check")
    export = sub.add_parser("export", help="print the current resources as a resources.yaml")
    export.add_argument("--config", default=argparse.SUPPRESS)
    export.add_argument("--output", help="write the file here instead of stdout")
    export.add_argument(
        "--env-file", help="also write the secrets as VAR=value lines here (mode 0600)"
    )
    schema = sub.add_parser(
        "schema",
        help="print resource JSON Schemas",
        description="Print the JSON Schema (draft 2020-12) of one resource kind, or of all.",
    )
    schema.add_argument(
        "kind",
        nargs="?",
        help=f"one of: {', '.join(KINDS)} (apikeys is accepted for api_keys); "
        "all kinds when omitted",
    )
    sub.add_parser(
        "demo-upstream", help="fake OpenAI upstream for demos and load tests", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] == "demo-upstream":
        from aisix.demo_upstream import main as demo_main

        return demo_main(args_in[1:])
    args = _parser().parse_args(args_in)
    config = getattr(args, "config", None) or os.environ.get("AISIX_CONFIG")
    if args.command == "schema":
        return _schema(args.kind)
    if args.command == "validate":
        return _validate(config, args.resources)
    if args.command == "export":
        return _export(config, args.output, args.env_file)
    return serve(config)


def _schema(kind: str | None) -> int:
    from aisix.admin.openapi import resource_schemas

    schemas = resource_schemas()
    if kind is not None:
        normalised = "api_keys" if kind == "apikeys" else kind
        if normalised not in schemas:
            print(f"aisix: unknown kind {kind!r} (one of {', '.join(schemas)})", file=sys.stderr)
            return EXIT_USAGE
        return _print(orjson.dumps(schemas[normalised], option=orjson.OPT_INDENT_2).decode())
    return _print(orjson.dumps(schemas, option=orjson.OPT_INDENT_2).decode())


def _print(text: str) -> int:
    """Print to stdout; a reader that went away (`aisix schema | head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # nothing more can be written: point stdout at /dev/null so the exit flush is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_OK


INERT_WARNING = "accepted, no effect yet: "


def _validate(config: str | None, resources: str | None) -> int:
    if config is None and resources is None:
        print("aisix: validate needs --config (or AISIX_CONFIG) or --resources", file=sys.stderr)
        return EXIT_USAGE
    path: Path | None = Path(resources) if resources is not None else None
    if config is not None:
        try:
            settings = load_settings(config, os.environ)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_FAIL
        if inert := settings.inert_keys():
            print("warning: " + INERT_WARNING + ", ".join(inert), file=sys.stderr)
        if path is None and settings.resources_file is not None:
            path = settings.resolve(settings.resources_file)
        from aisix.app import check_startup

        try:
            check_startup(settings)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_FAIL
    if path is not None:
        from aisix.store.file import validate_resources_file

        problems = validate_resources_file(path, os.environ)
        if problems:
            for problem in problems:
                print(problem, file=sys.stderr)
            return EXIT_FAIL
    print("ok")
    return EXIT_OK


def _export(config: str | None, output: str | None, env_file: str | None) -> int:
    try:
        settings = load_settings(config, os.environ)
    except ConfigError as exc:
        print(f"aisix: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import asyncio

    import yaml

    from aisix.store.export import export_document

    try:
        records = asyncio.run(_read_records(settings))
    except Exception as exc:
        print(f"aisix: cannot read the resources: {exc}", file=sys.stderr)
        return EXIT_FAIL
    exported = export_document(records)
    text = yaml.safe_dump(exported.document, sort_keys=False, allow_unicode=True)
    if output is None:
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
    if env_file is not None:
        lines = "".join(f"{name}={value}\n" for name, value in exported.secrets.items())
        descriptor = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(lines)
    for note in exported.notes:
        print(f"note: {note}", file=sys.stderr)
    if exported.secrets:
        print("secrets are placeholders: " + ", ".join(exported.secrets), file=sys.stderr)
    return EXIT_OK


async def _read_records(settings: Settings) -> list[Any]:
    from aisix.app import make_store

    store = make_store(settings)
    await store.open()
    try:
        records, _ = await store.load_all()
    finally:
        await store.close()
    return records


def _configure_logging(settings: Settings) -> None:
    logging.addLevelName(5, "TRACE")
    service = settings.observability.service_name
    logging.basicConfig(
        level=settings.observability.python_log_level,
        stream=sys.stderr,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )


def serve(config: str | None) -> int:
    try:
        settings = load_settings(config, os.environ)
    except ConfigError as exc:
        print(f"aisix: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from aisix.app import check_startup

    try:
        warnings = check_startup(settings)
    except ConfigError as exc:
        print(f"aisix: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(settings)
    if inert := settings.inert_keys():
        logging.getLogger("aisix").warning(INERT_WARNING + "%s", ", ".join(inert))
    for warning in warnings:
        logging.getLogger("aisix").warning("%s", warning)
    links = [multiprocessing.get_context("spawn").Pipe() for _ in range(settings.proxy.workers - 1)]
    workers = [_spawn_worker(config, worker_end) for _, worker_end in links]

    def stop_workers() -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()

    try:
        main_ends = [main_end for main_end, _ in links]
        return _run_gateway(
            settings, serve_admin=True, on_stop=stop_workers, worker_conns=main_ends
        )
    finally:
        stop_workers()
        for worker in workers:
            worker.join(timeout=settings.proxy.shutdown_grace_secs + 5)


def _run_gateway(
    settings: Settings,
    serve_admin: bool,
    on_stop: Callable[[], None] | None = None,
    worker_conns: list[Connection] | None = None,
    metrics_conn: Connection | None = None,
) -> int:
    import uvloop

    from aisix.app import Gateway, StartupError

    try:
        gateway = Gateway(
            settings,
            serve_admin=serve_admin,
            on_stop=on_stop,
            worker_conns=worker_conns,
            metrics_conn=metrics_conn,
        )
        return uvloop.run(gateway.run())
    except StartupError as exc:
        print(f"aisix: startup failed: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _spawn_worker(config: str | None, conn: Connection) -> multiprocessing.process.BaseProcess:
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(target=_worker_main, args=(config, conn), daemon=True)
    process.start()
    return process


def _worker_main(config: str | None, conn: Connection) -> None:
    """An extra proxy worker: proxy listener only, sharing the port with SO_REUSEPORT; it
    answers the main process's metrics requests on `conn`."""
    settings = load_settings(config, os.environ)
    _configure_logging(settings)
    raise SystemExit(_run_gateway(settings, serve_admin=False, metrics_conn=conn))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["main"]
