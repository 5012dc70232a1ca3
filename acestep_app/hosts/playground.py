"""``/playground``: a page to try every served endpoint in a browser, and the two routes it reads.

* ``GET /playground``: the page (open; it asks for the API key and keeps it in ``sessionStorage``).
  Plain HTML, JS and CSS shipped as package data (``hosts/static/``): no build step, no CDN.
* ``GET /playground/assets/<name>``: its scripts (ES modules: ``playground.js`` imports ``forms.js``)
  and style sheet.
* ``GET /playground/endpoints``: the served families and their endpoints with the input JSON schema
  each form is generated from (behind the key, as ``/openapi.json``).
* ``GET /requests?limit=N``: the caller's latest requests, newest first (behind the key; each key
  sees its own).

The page submits through fal's queue routes like any client (``application/json`` bodies,
``Authorization: Key <key>``), so it needs nothing else from the server.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from acestep_app.hosts.routes import host_of
from acestep_app.serving import auth, protocol
from acestep_app.serving.endpoints import EndpointRegistry
from acestep_app.serving.jobs import Job

ASSETS = {"playground.js": "text/javascript; charset=utf-8", "forms.js": "text/javascript; charset=utf-8",
          "playground.css": "text/css; charset=utf-8"}
PAGE = "playground.html"
OWNER = "fal-ai"  # the owner in the paths the page submits to (any owner is served)
HISTORY_LIMIT = 100
# Same-origin everything: the page runs no inline script and loads nothing from elsewhere.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",  # signed file links never leak through a Referer
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


def asset(name: str) -> str:
    return resources.files("acestep_app.hosts").joinpath("static", name).read_text(encoding="utf-8")


def catalog(registry: EndpointRegistry) -> dict[str, Any]:
    """What the page builds its tabs and forms from: per family, its app id and endpoints' input schemas."""
    families = []
    for family in registry.families:
        app_id = f"{OWNER}/{family.app_name}"
        endpoints = [{"name": endpoint.name, "app_id": app_id,
                      "submit_path": f"/{app_id}{endpoint.path}".rstrip("/"),
                      "summary": endpoint.summary, "description": endpoint.description,
                      "input_schema": endpoint.input_model.model_json_schema()}
                     for endpoint in registry.endpoints_of(family)]  # as served: with `loras` when per-request
        families.append({"name": family.name, "app_id": app_id, "title": family.title, "endpoints": endpoints})
    return {"families": families}


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def history_item(job: Job, app_ids: dict[str, str], base_url: str) -> dict[str, Any]:
    app_id = app_ids.get(job.endpoint, f"{OWNER}/unknown")
    return {"request_id": job.request_id, "endpoint": job.endpoint, "app_id": app_id, "status": job.status.value,
            "created_at": iso_time(job.created_at), "finished_at": iso_time(job.finished_at),
            "billable_seconds": job.billable_seconds, "error_type": job.error_type,
            **protocol.queue_urls(base_url, app_id, job.request_id)}


def playground_router(registry: EndpointRegistry) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    app_ids = {endpoint.name: f"{OWNER}/{family.app_name}"
               for family in registry.families for endpoint in registry.endpoints_of(family)}
    endpoints = catalog(registry)
    page_html = asset(PAGE)  # read once: a package missing its assets fails at startup, not on a visit
    assets = {name: asset(name) for name in ASSETS}

    @router.get("/playground")
    async def page(request: Request):
        key_required = "true" if auth.keys_of(request).required else "false"
        return HTMLResponse(page_html.replace("__KEY_REQUIRED__", key_required), headers=PAGE_HEADERS)

    @router.get("/playground/assets/{name}")
    async def static_asset(name: str):
        if name not in assets:
            return protocol.error_response(404, f"Path /playground/assets/{name} not found")
        return Response(assets[name], media_type=ASSETS[name], headers={"cache-control": "no-cache",
                                                                       "x-content-type-options": "nosniff"})

    @router.get("/playground/endpoints", dependencies=[Depends(auth.owner)])
    async def served_endpoints():
        return JSONResponse(endpoints)

    @router.get("/requests")
    async def recent_requests(request: Request, limit: int = Query(20, ge=1, le=HISTORY_LIMIT),
                              owner: str = Depends(auth.owner)):
        jobs = await asyncio.to_thread(host_of(request).queue.recent, owner, limit)
        base_url = str(request.base_url)
        return {"requests": [history_item(job, app_ids, base_url) for job in jobs]}

    return router
