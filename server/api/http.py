"""The HTTP adapter: the Open Inference Protocol's REST side and tlserve's own calls.

Runs on the server's event loop (aiohttp) beside gRPC, over the same core. Every route
converts its request (`http_codec`), awaits the core and converts back; domain errors
become HTTP statuses through `status.HTTP_STATUS`, always with a JSON body
`{"error": <what was wrong and what is accepted>, "code": <error kind>}`.

    GET  /v2/health/live | /v2/health/ready            probes (ready: a model is served)
    GET  /v2                                            server metadata
    GET  /v2/models/{name}[/versions/{v}][/ready]       model metadata / readiness
    POST /v2/models/{name}[/versions/{v}]/infer         inference (JSON or binary data)
    POST /v2/repository/index                           every model and its state (Triton's)
    POST /v1/predict                                    image body, or multipart `image` parts
    POST /v1/feedback                                   JSON, or multipart `image` + `label`
    GET  /v1/labels | /v1/suggestions | /v1/models[/{version}] | /v1/model
    GET  /v1/served-models                              the models served, by name
    POST /v1/models/{model}/predict                     as /v1/predict, for a named model
    GET  /v1/models/{model}/model | /versions[/{v}]     as /v1/model and /v1/models[/{v}]
    POST /v1/models/{model}/rollback                    as /v1/rollback (admin)
    POST /v1/models/{model}/experiment[/end]            start / end an experiment (admin)
    ... /v1/models/{model}/feedback | labels[/retract|/approve] | suggestions | training
                                                        as under /v1, for that model
    POST /v1/labels/retract                             undo a label (its labeler, or admin)
    GET  /label (and /)                                 the labeling page (tlserve/server/web)
    POST /v1/rollback | /v1/training | /v1/labels/approve   admin

Every route but the probes (/v2/health/*, /v2, readiness) and the page's files needs a
credential of its role when the server has credentials: `Authorization: Bearer <token>` or a client
certificate; 401 without a valid one, 403 for a lesser role.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tlserve.server import __version__
from tlserve.server.api import http_codec as codec
from tlserve.server.api.common import OFF_LOOP_BYTES, request_id_of
from tlserve.server.api.http_body import BodyLimits, BodyReader
from tlserve.server.api.page import LabelPage
from tlserve.server.api.paths import LIVE_PATH, READY_PATH
from tlserve.server.api.status import http_status_for
from tlserve.server.api.tensors import EXTENSIONS, SERVER_NAME, images_from_input, infer_outputs
from tlserve.server.core import ServingCore
from tlserve.server.errors import InvalidInput, TlserveError, quoted
from tlserve.server.feedback import FeedbackInput
from tlserve.server.metrics import ServerMetrics
from tlserve.server.prediction import ImageInput

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
_FEEDBACK_PARTS = ("image", "label", "idempotency_key", "source")
# Routes anyone may call: the probes, server metadata, model readiness and the page's
# files ("unmatched": a 404 tells nothing).
OPEN_METHODS = frozenset(
    {"ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "LabelPage", "unmatched"}
)


class _OneLineParserRefusals(logging.Filter):
    """aiohttp logs every request its HTTP parser refuses (a control byte in a header, a
    malformed request line) at ERROR with a traceback, and answers it itself (400, plain
    text) before any route: a flood of malformed requests was a flood of tracebacks.
    Such records become one INFO line saying why."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        if isinstance(refused, HttpProcessingError):
            reason = " ".join(str(refused.message).split())
            record.msg = f"{record.msg}: refused by the HTTP parser: %s"
            record.args = (*(record.args or ()), quoted(reason, 160))  # type: ignore[misc]
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_PARSER_LOG = logging.getLogger("aiohttp.server")


class HttpApi:
    def __init__(
        self,
        core: ServingCore,
        metrics: ServerMetrics,
        *,
        body_limits: BodyLimits,
        max_json_bytes: int,
    ) -> None:
        self.core = core
        self.body_limits = body_limits
        self.max_json_bytes = max_json_bytes
        self.metrics = metrics
        self.app = web.Application(
            client_max_size=body_limits.max_bytes, middlewares=[self._middleware]
        )
        # The metrics' `method` label per handler: the same names the gRPC services use.
        self._method_names: dict[Handler, str] = {}
        self._add_routes(self.app.router)
        for handler in LabelPage(core.models.default_name).add_routes(self.app.router):
            self._method_names[handler] = "LabelPage"
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(
        self,
        host: str,
        port: int,
        shutdown_seconds: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> int:
        if not any(isinstance(f, _OneLineParserRefusals) for f in _PARSER_LOG.filters):
            _PARSER_LOG.addFilter(_OneLineParserRefusals())
        runner = web.AppRunner(
            self.app,
            access_log=None,
            shutdown_timeout=shutdown_seconds,
            # Bodies are inflated by BodyReader, in bounded steps, within the request's
            # budget; aiohttp would inflate the unread rest of a refused one on the loop.
            auto_decompress=False,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno, f"could not bind HTTP to {host}:{port}: {exc.strerror}"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the site's shutdown timeout)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        routes: list[tuple[str, str, Handler, str]] = [
            ("GET", LIVE_PATH, self.server_live, "ServerLive"),
            ("GET", READY_PATH, self.server_ready, "ServerReady"),
            ("GET", "/v2", self.server_metadata, "ServerMetadata"),
            ("GET", model, self.model_metadata, "ModelMetadata"),
            ("GET", versioned, self.model_metadata, "ModelMetadata"),
            ("GET", f"{model}/ready", self.model_ready, "ModelReady"),
            ("GET", f"{versioned}/ready", self.model_ready, "ModelReady"),
            ("POST", f"{model}/infer", self.model_infer, "ModelInfer"),
            ("POST", f"{versioned}/infer", self.model_infer, "ModelInfer"),
            ("POST", "/v2/repository/index", self.repository_index, "RepositoryIndex"),
            ("POST", "/v1/predict", self.predict, "Predict"),
            ("POST", "/v1/feedback", self.submit_feedback, "SubmitFeedback"),
            ("GET", "/v1/labels", self.list_labels, "ListLabels"),
            ("POST", "/v1/labels/approve", self.approve_labels, "ApproveLabels"),
            ("POST", "/v1/labels/retract", self.retract_label, "RetractLabel"),
            ("GET", "/v1/suggestions", self.suggest_labels, "SuggestLabels"),
            ("GET", "/v1/models", self.list_models, "ListModels"),
            ("GET", "/v1/model", self.get_model, "GetModel"),
            ("GET", "/v1/models/{version}", self.get_model, "GetModel"),
            ("GET", "/v1/served-models", self.served_models, "ListServedModels"),
            ("POST", "/v1/models/{model}/predict", self.predict, "Predict"),
            ("GET", "/v1/models/{model}/model", self.get_model, "GetModel"),
            ("GET", "/v1/models/{model}/versions", self.list_models, "ListModels"),
            ("GET", "/v1/models/{model}/versions/{version}", self.get_model, "GetModel"),
            ("POST", "/v1/models/{model}/rollback", self.rollback, "Rollback"),
            ("POST", "/v1/models/{model}/experiment", self.start_experiment, "StartExperiment"),
            ("POST", "/v1/models/{model}/experiment/end", self.end_experiment, "EndExperiment"),
            ("POST", "/v1/models/{model}/feedback", self.submit_feedback, "SubmitFeedback"),
            ("GET", "/v1/models/{model}/labels", self.list_labels, "ListLabels"),
            ("POST", "/v1/models/{model}/labels/approve", self.approve_labels, "ApproveLabels"),
            ("POST", "/v1/models/{model}/labels/retract", self.retract_label, "RetractLabel"),
            ("GET", "/v1/models/{model}/suggestions", self.suggest_labels, "SuggestLabels"),
            ("POST", "/v1/models/{model}/training", self.trigger_training, "TriggerTraining"),
            ("GET", "/v1/models/{model}/training", self.training_status, "GetTrainingStatus"),
            ("POST", "/v1/rollback", self.rollback, "Rollback"),
            ("POST", "/v1/training", self.trigger_training, "TriggerTraining"),
            ("GET", "/v1/training", self.training_status, "GetTrainingStatus"),
        ]
        for method, path, handler, name in routes:
            router.add_route(method, path, handler)
            self._method_names[handler] = name

    # ---- KServe v2 ------------------------------------------------------------------

    async def server_live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def server_ready(self, request: web.Request) -> web.Response:
        ready = self.core.is_ready()
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        return web.json_response({"ready": ready}, status=status)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
        )

    async def model_metadata(self, request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info.get("version", "")
        signature = self.core.served_signature(codec.presented(request), name, version)
        return web.json_response(codec.model_metadata(signature))

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info.get("version", "")
        ready = await self.core.is_model_ready(name, version)
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        return web.json_response({"name": name, "ready": ready}, status=status)

    async def model_infer(self, request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info.get("version", "")
        body = await self._body(request).body()
        header_length = request.headers.get(codec.HEADER_LENGTH)
        infer, images = await _off_loop_if_large(
            len(body), _infer_images, body, header_length, self.max_json_bytes, self.core.max_images
        )
        del body
        result = await self.core.predict(
            codec.presented(request), images, top_k=1, version=version, model=name
        )
        outputs = infer_outputs(infer.outputs, result)
        payload, json_length = codec.infer_response(infer, result, outputs)
        if json_length is None:
            return web.Response(body=payload, content_type="application/json")
        return web.Response(
            body=payload,
            content_type="application/octet-stream",
            headers={codec.HEADER_LENGTH: str(json_length)},
        )

    # ---- tlserve ----------------------------------------------------------------------

    async def predict(self, request: web.Request) -> web.Response:
        top_k = _int_query(request, "top_k", 0)
        keep = _bool_query(request, "keep", True)
        if request.content_type.startswith("multipart/"):
            # One part per image, and one more: an over-full request is then refused by
            # its image count, with the same message as over gRPC.
            fields = await self._body(request).parts(self.core.max_images + 1)
            images = [ImageInput(encoded=data) for key, data in fields if key == "image"]
        else:
            images = [ImageInput(encoded=await self._body(request).body())]
        if not any(image.encoded for image in images):
            raise InvalidInput(
                "no image: POST the encoded image as the body (Content-Type image/jpeg, "
                "image/png, ...) or as multipart/form-data parts named `image`"
            )
        result = await self.core.predict(
            codec.presented(request),
            images,
            top_k,
            keep=keep,
            model=_model(request),
            routing_key=request.query.get("routing_key", ""),
        )
        return web.json_response(codec.predict_response(result))

    async def submit_feedback(self, request: web.Request) -> web.Response:
        item: FeedbackInput
        if request.content_type.startswith("multipart/"):
            fields = dict(await self._body(request).parts(len(_FEEDBACK_PARTS)))
            image = fields.get("image")
            if not image:
                raise InvalidInput("multipart feedback needs an `image` part and a `label` field")
            item = FeedbackInput(
                label=_text_part(fields, "label"),
                encoded=image,
                idempotency_key=_text_part(fields, "idempotency_key"),
                source=_text_part(fields, "source"),
                model=_model(request),
            )
        else:
            body = await self._body(request).body()
            document = await _off_loop_if_large(len(body), codec.parse_json, body, "feedback")
            item = codec.feedback_from_json(document, _model(request))
        stored = await self.core.submit_feedback(codec.presented(request), item)
        return web.json_response(codec.feedback_response(stored))

    async def list_labels(self, request: web.Request) -> web.Response:
        added_after = _float_query(request, "added_after")
        overview = await self.core.labels(codec.presented(request), added_after, _model(request))
        return web.json_response(codec.labels_response(overview))

    async def retract_label(self, request: web.Request) -> web.Response:
        sample_id = _optional_string_field(await self._body(request).body(), "sample_id")
        retraction = await self.core.retract_label(
            codec.presented(request), sample_id, _model(request)
        )
        return web.json_response(codec.retraction_response(retraction))

    async def approve_labels(self, request: web.Request) -> web.Response:
        document = codec.parse_json(await self._body(request).body(), "the request body")
        approved = await self.core.approve_labels(
            codec.presented(request), codec.approve_labels_request(document), _model(request)
        )
        return web.json_response(codec.approved_labels_response(approved))

    async def suggest_labels(self, request: web.Request) -> web.Response:
        suggestions = await self.core.suggest(
            codec.presented(request),
            _int_query(request, "count", 10),
            codec.suggest_strategy(request.query.get("strategy", "")),
            with_images=_bool_query(request, "images", True),
            model=_model(request),
        )
        return web.json_response(codec.suggestions_response(suggestions))

    async def list_models(self, request: web.Request) -> web.Response:
        listing = await self.core.list_models(codec.presented(request), _model(request))
        return web.json_response(codec.list_models_response(listing))

    async def get_model(self, request: web.Request) -> web.Response:
        info = await self.core.model_info(
            codec.presented(request), request.match_info.get("version", ""), _model(request)
        )
        return web.json_response(codec.model_info(info))

    async def served_models(self, request: web.Request) -> web.Response:
        served = self.core.served_models(codec.presented(request))
        return web.json_response(codec.served_models_response(served))

    async def repository_index(self, request: web.Request) -> web.Response:
        served = self.core.served_models(codec.presented(request))
        return web.json_response(codec.repository_index(served))

    async def training_status(self, request: web.Request) -> web.Response:
        status = await self.core.training_status(codec.presented(request), _model(request))
        return web.json_response(codec.training_status(status))

    async def rollback(self, request: web.Request) -> web.Response:
        version = _optional_string_field(await self._body(request).body(), "version")
        rollback = await self.core.rollback(codec.presented(request), version, _model(request))
        return web.json_response(codec.rollback_response(rollback))

    async def start_experiment(self, request: web.Request) -> web.Response:
        fields = codec.start_experiment_request(await self._body(request).body())
        report = await self.core.start_experiment(
            codec.presented(request), **fields, model=_model(request)
        )
        return web.json_response(codec.experiment_document(report))

    async def end_experiment(self, request: web.Request) -> web.Response:
        body = await self._body(request).body()
        outcome = _optional_string_field(body, "outcome")
        reason = _optional_string_field(body, "reason")
        report = await self.core.end_experiment(
            codec.presented(request), outcome, reason, model=_model(request)
        )
        return web.json_response(codec.experiment_document(report))

    async def trigger_training(self, request: web.Request) -> web.Response:
        reason = _optional_string_field(await self._body(request).body(), "reason")
        request_id = await self.core.trigger_training(
            codec.presented(request), reason, _model(request)
        )
        return web.json_response(codec.training_request_response(request_id))

    # ---- every request -------------------------------------------------------------

    def _body(self, request: web.Request) -> BodyReader:
        return BodyReader(request, self.body_limits)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        method = self._method_names.get(request.match_info.route.handler, "unmatched")
        in_flight = self.metrics.in_flight.labels(protocol="http", method=method)
        in_flight.inc()
        started = time.perf_counter()
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value
        with self.core.admission.request():
            try:
                if method not in OPEN_METHODS:
                    # Before any body is read: a caller without a credential meets no parser.
                    self.core.identify(codec.presented(request))
                try:
                    response = await handler(request)
                except (HttpProcessingError, web.RequestPayloadError) as exc:
                    # A body that is not what its Content-Encoding says, or cut short.
                    raise InvalidInput(
                        f"the request body cannot be read ({quoted(str(exc).strip(), 120)}); "
                        "send it as its Content-Type and Content-Encoding (gzip, deflate) say"
                    ) from None
                status = response.status
                return response
            except TlserveError as exc:
                kind = http_status_for(exc)
                status = kind.value
                request_id = request_id_of(request.headers.get("X-Request-Id"))
                log.info("request %s HTTP %s refused: %d: %s", request_id, method, status, exc)
                headers = {"X-Request-Id": request_id}
                if kind == HTTPStatus.UNAUTHORIZED:
                    headers["WWW-Authenticate"] = 'Bearer realm="tlserve"'
                if exc.retry_after_seconds is not None:
                    # Whole seconds (RFC 9110), rounded up so a client waiting that long succeeds.
                    headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_seconds)))
                refusal = _error(kind.value, str(exc), type(exc).__name__, headers)
                if not request.content.is_eof():
                    # The rest of a refused body is not read (aiohttp would drain it for
                    # up to 10 s to keep the connection): the connection closes instead.
                    refusal.force_close()
                return refusal
            except web.HTTPException as exc:
                status = exc.status
                return _error(exc.status, exc.text or exc.reason, exc.reason, dict(exc.headers))
            except Exception:
                log.exception("unhandled error in HTTP %s %s", request.method, method)
                return _error(status, f"internal error in {method}; see the server log", "Internal")
            finally:
                in_flight.dec()
                self.metrics.observe_request(
                    "http", method, str(status), time.perf_counter() - started
                )


def _text_part(fields: dict[str, bytes], name: str) -> str:
    """A text field of a multipart body; InvalidInput unless it is UTF-8 (as over gRPC)."""
    try:
        return fields.get(name, b"").decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the multipart `{name}` field must be UTF-8 text") from None


def _model(request: web.Request) -> str:
    """The model a /v1/models/{model}/... route names; "" (the default) elsewhere."""
    return request.match_info.get("model", "")


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    headers = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
    return web.json_response({"error": message, "code": code}, status=status, headers=headers)


def _infer_images(
    body: bytes, header_length: str | None, max_json_bytes: int, max_images: int
) -> tuple[codec.InferRequest, list[ImageInput]]:
    """The request (without its input tensors) and its images. A big parsed document
    (millions of JSON elements) is freed here, in the worker thread, not on the event
    loop: a refusal carries no traceback that would keep it alive."""
    error: TlserveError | None = None
    try:
        infer = codec.infer_request(body, header_length, max_json_bytes)
        images = images_from_input(infer.inputs, max_images)
        return dataclasses.replace(infer, inputs=[]), images
    except TlserveError as exc:
        error = exc.with_traceback(None)
    raise error


async def _off_loop_if_large(size: int, parse: Callable[..., Any], *args: Any) -> Any:
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse, *args)
    return parse(*args)


def _optional_string_field(body: bytes, name: str) -> str:
    """`name` of a JSON object body; an empty body or a missing field is ""."""
    if not body:
        return ""
    document = codec.parse_json(body, "the request body")
    if not isinstance(document, dict):
        raise InvalidInput(f'the request body must be a JSON object, such as {{"{name}": ...}}')
    value = document.get(name, "")
    if not isinstance(value, str):
        raise InvalidInput(f"`{name}` must be a string")
    return value


def _query(request: web.Request, name: str, parse: Callable[[str], T], accepted: str) -> T | None:
    """The query parameter parsed, None when absent or empty; InvalidInput naming what is
    `accepted` when `parse` raises ValueError."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return parse(value)
    except ValueError:
        raise InvalidInput(
            f"query parameter {name} must be {accepted}, got {quoted(value, 32)}"
        ) from None


def _boolean(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(value)


def _int_query(request: web.Request, name: str, default: int) -> int:
    parsed = _query(request, name, int, "an integer")
    return default if parsed is None else parsed


def _float_query(request: web.Request, name: str) -> float | None:
    return _query(request, name, float, "a number")


def _bool_query(request: web.Request, name: str, default: bool) -> bool:
    parsed = _query(request, name, _boolean, "true or false")
    return default if parsed is None else parsed
