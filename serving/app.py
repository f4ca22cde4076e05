"""TF Serving's REST API over a ``Repository``, as a Starlette (ASGI) app served by uvicorn.

    GET  /v1/models/{name}[/versions/{v}]            version status
    GET  /v1/models/{name}[/versions/{v}]/metadata   signatures
    POST /v1/models/{name}[/versions/{v}]:predict    {"instances": [...]} or {"inputs": ...},
                                                     optional "signature_name"
    GET  /metrics                                    Prometheus: requests, latency, versions

Answers have TF Serving's shapes (``predictions`` for rows, ``outputs`` for
columns), so a TF Serving client works unchanged. Every client mistake is a
4xx with ``{"error": "..."}`` naming the problem; a 500 means a server bug.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.text import among, listed
from serving.inputs import RequestError, named
from serving.models import NotFound, Repository

log = logging.getLogger("serving.access")



@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 * 2**20
    max_batch: int = 1024
    read_seconds: float = 30.0
    max_predicting: int = 4  # requests read, parsed and predicted at once; more are answered 503 at once


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("serving_requests", "Requests by model and HTTP code", ["model", "code"],
                                registry=self.registry)
        self.latency = Histogram("serving_request_seconds", "Predict latency, request in to response out", ["model"],
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5),
                                 registry=self.registry)
        self.examples = Counter("serving_examples", "Examples predicted", ["model"], registry=self.registry)
        self.version = Gauge("serving_model_version", "Newest loaded version", ["model"], registry=self.registry)


class _TooLarge(Exception):
    """The body is over ``Limits.max_body_bytes``."""


class _Slow(Exception):
    """The body did not arrive in time (a client that sends half a body would hold a connection forever)."""


class _Busy(Exception):
    """``Limits.max_predicting`` requests are in flight: a parsed body can take 30x its size in memory, so
    a burst of large bodies is refused rather than queued (TF Serving answers 503 UNAVAILABLE the same way)."""


# Answers to client mistakes: HTTP code per exception type, the message as {"error": ...}, cut to a few lines.
CLIENT_ERRORS = {NotFound: 404, RequestError: 400, _TooLarge: 413, _Slow: 408, _Busy: 503}
MAX_ERROR_CHARS = 500
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')  # a JSON string, escapes included
UNKNOWN_MODEL = "(not found)"  # the metrics label of every request for a model that is not served


def create_app(repository: Repository, limits: Limits = Limits()) -> Starlette:
    metrics = Metrics()
    in_flight = 0  # requests past the busy check; only the event loop's thread changes it

    def error(code: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=code)

    async def status(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        servable = repository.get(name, version)
        if request.url.path.endswith("/metadata"):
            return JSONResponse(servable.metadata())
        versions = [version] if version is not None else sorted(repository.models()[name], reverse=True)
        return JSONResponse({"model_version_status": [
            {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in versions]})

    async def predict(request: Request) -> Response:
        nonlocal in_flight
        started = time.perf_counter()
        name = request.path_params["name"]
        code, batch = 500, 0
        counted = False
        try:
            if request.path_params["verb"] != "predict":
                raise RequestError(f"Unsupported method :{request.path_params['verb']}; this server answers :predict")
            if in_flight >= limits.max_predicting:
                await _within(_discard(request), limits.read_seconds)
                raise _Busy(f"{in_flight} requests are being predicted (--max-predicting); retry shortly")
            in_flight, counted = in_flight + 1, True
            raw = await _within(_read(request, limits.max_body_bytes), limits.read_seconds)
            servable = repository.get(name, request.path_params.get("version"))
            body = await run_in_threadpool(_parse, raw, servable.max_objects(limits.max_batch),  # off the event loop
                                          servable.max_arrays(2 * limits.max_batch))  # room to say a batch's size
            answer, batch = await run_in_threadpool(_predict, servable, body, limits.max_batch)
            code = 200
            return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")
        except Exception as exc:
            code = CLIENT_ERRORS.get(type(exc), 500)
            if code == 500:
                log.exception("predict failed for %s", request.url.path)
            raise
        finally:
            in_flight -= counted
            seconds = time.perf_counter() - started
            if name not in repository.models():  # a label per made-up name would grow /metrics without bound
                name = UNKNOWN_MODEL
            metrics.requests.labels(name, str(code)).inc()
            if code == 200:
                metrics.latency.labels(name).observe(seconds)
                metrics.examples.labels(name).inc(batch)
            log.info("POST %s %d %.2fms batch=%d", request.url.path, code, seconds * 1000, batch)

    async def metrics_page(request: Request) -> Response:
        for model, versions in repository.models().items():
            metrics.version.labels(model).set(max(versions))
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    async def client_error(request: Request, exc: Exception) -> Response:
        message = str(exc)  # never echo a megabyte of the request back
        message = message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS] + "..."
        answer = error(CLIENT_ERRORS[type(exc)], message)
        if isinstance(exc, _Busy):
            answer.headers["Retry-After"] = "1"
        return answer

    async def unknown_path(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, f"Unknown path {request.method} {request.url.path}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, "Internal error while predicting (the server log has the details)")

    model, version = "/v1/models/{name}", "/v1/models/{name}/versions/{version:int}"
    return Starlette(
        routes=[
            Route(model, status, methods=["GET"]),
            Route(version, status, methods=["GET"]),
            Route(f"{model}/metadata", status, methods=["GET"]),
            Route(f"{version}/metadata", status, methods=["GET"]),
            Route(model + ":{verb}", predict, methods=["POST"]),
            Route(version + ":{verb}", predict, methods=["POST"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ],
        exception_handlers={**{kind: client_error for kind in CLIENT_ERRORS},
                            404: unknown_path, 405: unknown_path, Exception: server_error},
    )


async def _within(work, seconds: float):
    """Await reading a body, or 408: a client that sends half a body would hold a connection forever."""
    try:
        return await asyncio.wait_for(work, timeout=seconds)
    except asyncio.TimeoutError:
        raise _Slow(f"The request body did not arrive within {seconds:g} s") from None


def _parse(raw: bytearray, max_objects: int | None, max_arrays: int | None) -> dict:
    """The JSON body, refused as soon as it holds more objects or arrays than any request to this model needs.

    ``[{},{},...]`` or ``[[],[],...]`` in 8 MB is millions of Python objects. Objects are counted as
    they are built, and the parse ends at the first one too many; arrays (``json`` has no hook for
    them) are counted in the raw text first, outside strings, so such a body is never built at all.
    """
    if max_arrays is not None and raw.count(b"[") > max_arrays:
        arrays = _STRINGS.sub(b"", raw).count(b"[")  # a "[" inside a string is text, not an array
        if arrays > max_arrays:
            raise RequestError(f"The body holds {arrays} JSON arrays, more than the {max_arrays} a batch of "
                               "examples to this model can need")
    built = 0

    def count(obj: dict) -> dict:
        nonlocal built
        built += 1
        if max_objects is not None and built > max_objects:
            raise RequestError(f"The body holds more than {max_objects} JSON objects, more than a batch of "
                               "examples to this model can need")
        return obj

    try:
        body = json.loads(raw, object_hook=count)
    except RequestError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"Malformed JSON body: {exc}") from None
    except RecursionError:
        raise RequestError("Malformed JSON body: nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError('The body must be a JSON object with "instances" or "inputs"')
    return body


async def _discard(request: Request) -> None:
    """Read a refused request's body away, keeping none of it, so the client sees the answer, not a reset."""
    async for _ in request.stream():
        pass


async def _read(request: Request, limit: int) -> bytearray:
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        if int(declared) <= 8 * limit:
            await _discard(request)
        raise _TooLarge(f"Request body of {int(declared)} bytes is over the limit of {limit}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise _TooLarge(f"Request body is over the limit of {limit} bytes")
    return raw


def _predict(servable, body: dict, max_batch: int) -> tuple[dict, int]:
    """A parsed request -> (TF Serving's answer, batch size). Rows in, rows out; columns in, columns out."""
    unknown = set(body) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise RequestError(f"Unknown request field {sorted(unknown)[0]!r}; expected instances or inputs, "
                           "and optionally signature_name")
    if ("instances" in body) == ("inputs" in body):
        raise RequestError('Give exactly one of "instances" (rows) or "inputs" (columns)')
    if not isinstance(body.get("signature_name", ""), str):
        raise RequestError('"signature_name" must be a string')
    signature = servable.signature(body.get("signature_name"))
    names = list(servable.inputs[signature])
    if "instances" in body:
        columns = _rows_to_columns(body["instances"], servable.inputs[signature],
                                   functools.partial(servable.by_input, signature))
    else:
        inputs = body["inputs"]  # named inputs, or the value of the only input
        if isinstance(inputs, dict):
            columns = servable.by_input(signature, inputs)
        elif len(names) == 1:
            columns = {names[0]: inputs}
        else:
            raise RequestError(f'"inputs" must be an object of named inputs ({", ".join(names)})')
    arrays, batch = servable.convert(signature, columns, max_batch)
    outputs = servable.call(signature, arrays)
    for name, values in outputs.items():  # NaN and Infinity are no JSON: say so instead of writing them
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise RequestError(f"The model's output {name!r} is not finite (NaN or infinity) for this input: "
                               "check the input's values against the training data's range")
    plain = {k: _plain(v) for k, v in outputs.items()}
    if "instances" in body:
        if len(plain) == 1:
            return {"predictions": next(iter(plain.values()))}, batch
        return {"predictions": [dict(zip(plain, row)) for row in zip(*plain.values())]}, batch
    return {"outputs": next(iter(plain.values())) if len(plain) == 1 else plain}, batch


def _rows_to_columns(instances, inputs: dict, by_input) -> dict:
    """Rows of named ``inputs`` as one list per input (``by_input(row, where)``: a row under its input names)."""
    names = list(inputs)
    if not isinstance(instances, list):
        raise RequestError('"instances" must be a list of examples')
    if not instances:
        raise RequestError("Empty batch: send at least one example")
    if len(names) == 1 and not (isinstance(instances[0], dict) and set(instances[0]) != {"b64"}):
        return {names[0]: instances}  # rows of the only input's values (a {"b64": ...} object is a value)
    columns: dict[str, list] = {}
    known = set(names)  # a row of a thousand columns: a list's test per key would cost a million a row
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise RequestError(f"instances[{i}] must be an object of named inputs ({listed(names, 20)})")
        row = by_input(row, f"instances[{i}]: ")
        if unknown := [key for key in row if key not in known]:
            raise RequestError(f"instances[{i}]: {named('unknown', list(map(repr, unknown)))}; expected: "
                               f"{among(unknown[0], names)}")
        if missing := [key for key in names if key not in row]:
            raise RequestError(f"instances[{i}]: {named('missing', [inputs[key].shown for key in missing])}")
        for key in names:
            columns.setdefault(key, []).append(row[key])
    return columns


def _plain(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b, otypes=[object])(
            array).tolist()
    return array.tolist()
