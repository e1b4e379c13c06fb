"""``agentic-obs``: the command line. Each subcommand is a small function; errors print one clear line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from agentic_observability import __version__
from agentic_observability.config import CONFIG_ENV, ServerConfig, load_config
from agentic_observability.errors import AgenticObsError, BadInputError

EXIT_ERROR = 2


def _cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from agentic_observability.service import init_app
    from agentic_observability.service.heap import limit_fragmentation
    from agentic_observability.telemetry import setup_logging

    config = load_config(args.config)
    setup_logging(config.secrets.values())
    limit_fragmentation()
    server = config.file.server
    app = init_app(config, os.environ)
    print(
        f"agentic-obs {__version__} starting on {server.host}:{server.port} (config: {config.source})",
        file=sys.stderr,
        flush=True,
    )
    web.run_app(
        app,
        host=server.host,
        port=server.port,
        shutdown_timeout=server.shutdown_timeout,
        access_log=None,
        print=None,
        **http_options(server),
    )
    return 0


def http_options(server: ServerConfig) -> dict[str, Any]:
    """How the HTTP server treats slow clients. aiohttp has no header-read timeout; its keep-alive
    timer is the one that works: armed when a connection opens (aiohttp >= 3.14.4) and after each
    response, it closes a connection still waiting for a complete request line and headers. So a
    client gets ``server.header_timeout`` for its headers, and an idle keep-alive connection is closed
    after as long. Bodies have ``server.body_timeout`` in the handlers that read them."""
    return {"keepalive_timeout": server.header_timeout}


def _cmd_check_config(args: argparse.Namespace) -> int:
    # The check lives in the pipeline, which the cli reaches only through the service (the layering
    # of tests/test_architecture.py); it is the one init_app runs at startup.
    from agentic_observability.service.app import check_config_queries

    config = load_config(args.config)
    check_config_queries(config)
    print(yaml.safe_dump(config.masked(), sort_keys=False), end="")
    print(f"OK: {config.source} is valid", file=sys.stderr)
    return 0


def _cmd_provision(args: argparse.Namespace) -> int:
    """Push the bundled dashboards into Grafana now (the service also does this at startup)."""
    from agentic_observability.integrations.delivery import sink_guard
    from agentic_observability.integrations.grafana import GrafanaSink
    from agentic_observability.outbox.sinks import bundled_dashboards

    config = load_config(args.config)
    grafana = config.file.actions.grafana
    if not grafana.url:
        raise AgenticObsError(f"{config.source}: actions.grafana.url is not set; nothing to provision into")
    token = config.secrets.grafana_token
    sink = GrafanaSink.create(
        grafana.url,
        token.get_secret_value() if token else None,
        config.file.actions.timeout,
        sink_guard("grafana", 1, 1.0),
    )
    saved = asyncio.run(sink.provision(grafana.folder, bundled_dashboards()))
    print(f"provisioned {len(saved)} dashboards into folder {grafana.folder!r}: {', '.join(saved)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from agentic_observability.demo.run import run_demo
    from agentic_observability.telemetry import setup_logging

    setup_logging(level="WARNING")
    try:
        return asyncio.run(run_demo(keep_running=args.keep_running, approve=args.approve))
    except KeyboardInterrupt:
        return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from agentic_observability.replay import read_body, replay_body

    config = load_config(args.config)
    raw = read_body(Path(args.file))
    storage = args.store or tempfile.mkdtemp(prefix="agentic-obs-replay-")
    reports = asyncio.run(replay_body(raw, config, storage))
    for report in reports:
        print(json.dumps(report, indent=2) if args.json else report["summary"])
        print()
    return 0


def _cmd_rca(args: argparse.Namespace) -> int:
    from agentic_observability.offline.rca import run_rca

    return run_rca(Path(args.case_dir), Path(args.output))


def _cmd_backtest(args: argparse.Namespace) -> int:
    if args.task == "rca":
        from agentic_observability.offline.rca import backtest_rca

        backtest_rca([Path(args.dir), *map(Path, args.more_dirs)], shift=args.shift)
        return 0
    if args.more_dirs:
        raise BadInputError(f"backtest {args.task} takes one directory", field="DIR")
    if args.task == "servers":
        from agentic_observability.offline.servers import backtest_servers

        backtest_servers(Path(args.dir), args.detector, _threshold())
        return 0
    from agentic_observability.offline.detect import backtest_nab

    backtest_nab(Path(args.dir), args.detector, _threshold())
    return 0


def _threshold() -> float:
    return load_config(
        None, environ={k: v for k, v in os.environ.items() if k == "ANOMALY_THRESHOLD"}
    ).tunables.anomaly_threshold


def _cmd_mcp(args: argparse.Namespace) -> int:
    """The MCP tools over stdio: a bridge to a running service's /mcp (service/mcp_bridge.py says why).
    Stdout carries the protocol; everything else goes to stderr."""
    import anyio

    from agentic_observability.service.mcp_bridge import serve_stdio, service_url
    from agentic_observability.telemetry import setup_logging

    config = load_config(args.config)
    setup_logging(config.secrets.values(), level="WARNING")
    token = config.secrets.webhook_token
    url = service_url(config, args.url)
    with contextlib.suppress(KeyboardInterrupt):  # the agent stopped us: a normal end
        anyio.run(serve_stdio, url, token.get_secret_value() if token else None)
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from agentic_observability.offline.detect import run_detect

    return run_detect(Path(args.input), Path(args.output), args.detector, _threshold())


def build_parser() -> argparse.ArgumentParser:
    from agentic_observability.detectors import DETECTORS

    detector_names = ", ".join(sorted(DETECTORS))
    parser = argparse.ArgumentParser(
        prog="agentic-obs", description="Prometheus/Grafana-native incident analyst."
    )
    parser.add_argument("--version", action="version", version=f"agentic-obs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help=f"YAML config file (default: ${CONFIG_ENV}, else built-in defaults)")
        return p

    with_config(sub.add_parser("serve", help="run the service")).set_defaults(func=_cmd_serve)
    check = with_config(
        sub.add_parser("check-config", help="validate a config file and print it, secrets masked")
    )
    check.add_argument("file", nargs="?", help="config file (same as --config)")
    check.set_defaults(func=_cmd_check_config)
    with_config(
        sub.add_parser("provision", help="push the bundled Grafana dashboards into actions.grafana.url")
    ).set_defaults(func=_cmd_provision)
    demo = sub.add_parser("demo", help="end-to-end demo on a real Prometheus and Alertmanager")
    demo.add_argument("--keep-running", action="store_true", help="leave the stack up and print its URLs")
    demo.add_argument(
        "--approve",
        action="store_true",
        help="approve the proposed remediation as the on-call would in Slack (a signed request), "
        "then show it run and its follow-up",
    )
    demo.set_defaults(func=_cmd_demo)
    replay = with_config(
        sub.add_parser("replay", help="feed a recorded Alertmanager webhook body through the pipeline")
    )
    replay.add_argument("file", help="a JSON webhook body as Alertmanager sends it")
    replay.add_argument("--store", help="state directory to use (default: a fresh temp dir)")
    replay.add_argument("--json", action="store_true", help="print full reports as JSON")
    replay.set_defaults(func=_cmd_replay)
    detect = sub.add_parser("detect", help="score a metrics CSV for anomalies (causal)")
    detect.add_argument("input", help="CSV: timestamp,<series>... (unix seconds ascending)")
    detect.add_argument("--output", required=True, help="CSV written: timestamp,score,anomaly")
    detect.add_argument("--detector", default="default", help=f"one of: {detector_names} (default: default)")
    detect.set_defaults(func=_cmd_detect)
    rca = sub.add_parser("rca", help="rank root-cause services for one offline case")
    rca.add_argument("case_dir", help="directory with metrics.csv and case.json (fault_time, entity_label)")
    rca.add_argument("--output", required=True, help="where to write the ranking JSON")
    rca.set_defaults(func=_cmd_rca)
    backtest = sub.add_parser("backtest", help="score an offline task on labelled data")
    backtest.add_argument(
        "task",
        choices=["rca", "nab", "servers"],
        help="rca: root-cause ranking (AC@1, AC@3, Avg@5); nab: anomaly detection (NAB scores); "
        "servers: detection on multivariate server metrics (point-wise P/R/F1, event recall)",
    )
    backtest.add_argument(
        "--detector",
        default="default",
        help=f"detector for 'nab' and 'servers': {detector_names} (default: default)",
    )
    backtest.add_argument("dir", help="directory of labelled cases")
    backtest.add_argument("more_dirs", nargs="*", metavar="DIR", help="rca: further dataset directories")
    backtest.add_argument(
        "--shift", type=float, default=0.0, help="give the method a fault time this late (s)"
    )
    backtest.set_defaults(func=_cmd_backtest)
    mcp = with_config(
        sub.add_parser("mcp", help="the MCP tools over stdio, bridged to a running service's /mcp")
    )
    mcp.add_argument(
        "--url",
        help="the service (default: server.public_url, else http://127.0.0.1:<server.port>); "
        "token from $AGENTIC_OBS_WEBHOOK_TOKEN",
    )
    mcp.set_defaults(func=_cmd_mcp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "file", None) and args.command == "check-config" and not args.config:
        args.config = args.file
    try:
        return int(args.func(args))
    except AgenticObsError as exc:
        print(f"agentic-obs {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
