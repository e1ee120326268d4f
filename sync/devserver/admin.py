"""`/_dev/...`: what tests and demos use to look inside and steer the server.

No authentication: the server listens on loopback unless told otherwise, and these routes
exist to be convenient. They never pass through the fault rules or rate limits.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chatledger.sync.devserver.actions import perform
from chatledger.sync.devserver.context import SERVER, error_response, json_response, read_json
from chatledger.sync.devserver.faults import FaultSpecError, fault_from_dict
from chatledger.sync.devserver.seeds import seed
from chatledger.sync.devserver.wire import ApiError


async def _guard(handler: Any, request: web.Request) -> web.Response:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except FaultSpecError as error:
        return error_response(ApiError(400, 4, str(error)))


def guarded(handler: Any) -> Any:
    async def wrapper(request: web.Request) -> web.Response:
        return await _guard(handler, request)
    wrapper.__name__ = handler.__name__
    return wrapper


@guarded
async def get_state(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    return json_response(server.snapshot())


@guarded
async def act(request: web.Request) -> web.Response:
    body = await read_json(request)
    user_id, action = body.pop("user_id", None), body.pop("action", None)
    if not isinstance(action, str):
        raise ApiError(400, 4, "action is required")
    return json_response(perform(request.app[SERVER].state, user_id, action, body), 201)


@guarded
async def post_seed(request: web.Request) -> web.Response:
    body = await read_json(request)
    return json_response(seed(request.app[SERVER].state, body.get("users") or [],
                              body.get("channels") or []), 201)


@guarded
async def get_faults(request: web.Request) -> web.Response:
    return json_response({"faults": request.app[SERVER].faults.list()})


@guarded
async def post_faults(request: web.Request) -> web.Response:
    """One rule, `{"faults": [rules]}`, or `{"spec": "..."}`; optional `rng_seed` reseeds."""
    body = await read_json(request)
    faults = request.app[SERVER].faults
    if "rng_seed" in body:
        faults.reseed(int(body.pop("rng_seed")))
    rules = body.get("faults") if "faults" in body else ([body] if body else [])
    if not isinstance(rules, list):
        raise ApiError(400, 4, "faults must be a list")
    parsed = [fault_from_dict(rule) for rule in rules]  # all or nothing
    added = [faults.add_fault(rule).as_dict() for rule in parsed]
    return json_response({"added": added, "faults": faults.list()}, 201)


@guarded
async def delete_faults(request: web.Request) -> web.Response:
    removed = request.app[SERVER].faults.clear(request.query.get("endpoint") or None)
    return json_response({"removed": removed})


@guarded
async def close_ws(request: web.Request) -> web.Response:
    closed = await request.app[SERVER].hub.close_all(request.query.get("user_id") or None)
    return json_response({"closed": closed})


@guarded
async def get_token(request: web.Request) -> web.Response:
    user_id = request.query.get("user_id")
    if not user_id:
        raise ApiError(400, 4, "user_id is required")
    return json_response({"user_id": user_id, "token": request.app[SERVER].make_token(user_id)})


@guarded
async def get_events(request: web.Request) -> web.Response:
    """The recorded event history (what `/sync` draws from), optionally for one cid."""
    cid = request.query.get("cid")
    history = request.app[SERVER].state.history
    return json_response({"events": [dict(e.event, _only_user=e.only_user) for e in history
                                     if cid is None or e.cid == cid]})


ADMIN_ROUTES = [
    ("GET", "/_dev/state", get_state, "dev_state"),
    ("POST", "/_dev/act", act, "dev_act"),
    ("POST", "/_dev/seed", post_seed, "dev_seed"),
    ("GET", "/_dev/faults", get_faults, "dev_faults_get"),
    ("POST", "/_dev/faults", post_faults, "dev_faults_post"),
    ("DELETE", "/_dev/faults", delete_faults, "dev_faults_delete"),
    ("POST", "/_dev/close_ws", close_ws, "dev_close_ws"),
    ("GET", "/_dev/token", get_token, "dev_token"),
    ("GET", "/_dev/events", get_events, "dev_events"),
]
