"""``acestep-app serve``: the local fal-compatible server (see :mod:`acestep_app.hosts.local`).

Exposure is explicit (docs/security.md): a bind beyond loopback needs ``--api-key`` (or
``--insecure-no-auth``, said out loud), and only the ``Host`` names in ``[server].allowed_hosts`` (by
default the bound address plus localhost) are answered.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from pathlib import Path

from acestep_app.cli.common import add_engine_options, add_lora_option

HELP = "serve the endpoint locally with fal's queue protocol (fal_client works against it)"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--model", action="append", default=None, metavar="FAMILY",
                        help="model family to serve (repeatable; the first is primary; default: infra.toml "
                             "[app].families)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="the primary family's checkpoint dir (default: its configured or pulled weights, "
                             "else the tiny demo)")
    parser.add_argument("--tiny", action="store_true", help="serve the tiny random demo checkpoint (its audio is noise)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="jobs database and generated audio (default ./data)")
    parser.add_argument("--api-key", action="append", default=None,
                        help="require 'Authorization: Key <key>'; repeat for several isolated keys "
                             "(default: env ACESTEP_API_KEY, else no auth)")
    parser.add_argument("--ssl-certfile", type=Path, default=None, help="TLS certificate (PEM); fal_client needs https")
    parser.add_argument("--ssl-keyfile", type=Path, default=None, help="TLS private key (PEM)")
    parser.add_argument("--max-body-bytes", action="append", default=None, metavar="ENDPOINT=N",
                        help="request body limit of one endpoint, by name (e.g. audio-to-audio=52428800; repeatable; "
                             "413 above it; default: each endpoint's own)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="serve without API keys on a non-loopback address (anyone who can reach it can "
                             "generate, read results and fill the disk)")
    parser.add_argument("--allow-private-urls", action="store_true", default=None,
                        help="let audio_url downloads and webhooks reach loopback/private addresses "
                             "(local use; sets [security].allow_private_urls)")
    add_lora_option(parser)
    add_engine_options(parser)


def serve_app(app, host: str, port: int, ssl_certfile: Path | None = None, ssl_keyfile: Path | None = None) -> None:
    """Run an ASGI app with uvicorn (blocking) until SIGINT/SIGTERM."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        proxy_headers=True,
        log_level="info",
    )
    uvicorn.Server(config).run()


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings, bind: str) -> list[str]:
    """``[server].allowed_hosts``, else the bound address plus localhost (a wildcard bind: this machine's names)."""
    if settings.server.allowed_hosts:
        return list(settings.server.allowed_hosts)
    names = {"localhost", "127.0.0.1", "::1", bind.strip("[]").lower()}
    if bind in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    return sorted(names - {""})


def body_limits(values: list[str] | None, registry) -> dict[str, int]:
    """``--max-body-bytes ENDPOINT=N`` values as {endpoint name: bytes}; ValueError naming what is wrong."""
    limits = {}
    for value in values or ():
        name, _, size = value.partition("=")
        if registry.by_name(name) is None:
            names = ", ".join(endpoint.name for endpoint in registry.endpoints)
            raise ValueError(f"--max-body-bytes {value}: no endpoint {name!r} (served: {names})")
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"--max-body-bytes {value}: the limit must be a positive number of bytes")
        limits[name] = int(size)
    return limits


def exposure_error(bind: str, keys, insecure_no_auth: bool) -> str | None:
    """Why serving on ``bind`` without keys is refused, or None."""
    if keys or is_loopback(bind) or insecure_no_auth:
        return None
    return (f"refusing to serve on {bind} without an API key: anyone who can reach it could run jobs, read every "
            "result and fill the disk. Set --api-key (or ACESTEP_API_KEY), bind 127.0.0.1, or pass "
            "--insecure-no-auth if that is really what you want.")


def local_url(host: str, port: int, tls: bool, path: str) -> str:
    """A URL of the server as seen from this machine (a wildcard bind is reached at loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"{'https' if tls else 'http'}://{shown}:{port}{path}"


def announce(args: argparse.Namespace, settings) -> None:
    """The playground's (and /metrics') address, printed once the engines are loaded, before uvicorn starts."""
    tls = args.ssl_certfile is not None
    print(f"Playground: {local_url(args.host, args.port, tls, '/playground')}", flush=True)
    if settings.metrics.enabled:
        who = (f"needs its scrape key ({settings.metrics.key_env})" if os.environ.get(settings.metrics.key_env)
               else f"loopback clients only; set {settings.metrics.key_env} for a scrape key")
        print(f"Metrics: {local_url(args.host, args.port, tls, '/metrics')} ({who})", flush=True)


def api_keys(args: argparse.Namespace) -> list[str] | None:
    keys = args.api_key or ([os.environ["ACESTEP_API_KEY"]] if os.environ.get("ACESTEP_API_KEY") else None)
    return keys


def allow_private_urls(settings, allow: bool | None):
    """``settings`` with ``[security].allow_private_urls`` switched on when ``--allow-private-urls`` is given."""
    if not allow:
        return settings
    security = settings.security.model_copy(update={"allow_private_urls": True})
    return settings.model_copy(update={"security": security})


def load_engines(settings, families, weights: Path | None, tiny: bool) -> dict:
    """One engine per served family; ``weights`` is the primary family's checkpoint."""
    from acestep_app.cli.common import choose_weights

    engines = {}
    for family in families:
        chosen = choose_weights(settings, weights if family is families[0] else None, tiny, family)
        engines[family.name] = family.load_engine(settings, weights_dir=chosen)
    return engines


def run(args: argparse.Namespace) -> int:
    from acestep_app.cli.common import apply_engine_options
    from acestep_app.engine.family import served_families
    from acestep_app.hosts.local import create_app
    from acestep_app.serving.endpoints import EndpointRegistry
    from acestep_app.serving.stores.sqlite import SqliteJobStore
    from acestep_app.settings import Settings

    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        logger.error("--ssl-certfile and --ssl-keyfile go together")
        return 2
    keys = api_keys(args)
    refused = exposure_error(args.host, keys, args.insecure_no_auth)
    if refused:
        logger.error("%s", refused)
        return 2
    if not keys and not is_loopback(args.host):
        logger.warning("serving on %s WITHOUT authentication (--insecure-no-auth)", args.host)
    settings = allow_private_urls(apply_engine_options(Settings.load(), args), args.allow_private_urls)
    families = served_families(settings, args.model)
    try:
        limits = body_limits(args.max_body_bytes, EndpointRegistry(families))
    except ValueError as error:
        logger.error("%s", error)
        return 2
    try:  # an unusable data dir fails now, not after minutes of loading weights
        SqliteJobStore(args.data_dir).close()
    except RuntimeError as error:
        logger.error("%s", error)
        return 1
    engines = load_engines(settings, families, args.weights, args.tiny)
    app = create_app(engines, settings, args.data_dir, api_key=keys, max_body_bytes=limits,
                     allowed_hosts=allowed_hosts(settings, args.host))
    announce(args, settings)
    serve_app(app, args.host, args.port, args.ssl_certfile, args.ssl_keyfile)
    return 0
