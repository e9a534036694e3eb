"""The HTTP app: `create_app(models, settings)` builds a FastAPI app serving checkpoints through their pipelines.

    app = create_app([ModelSpec("sst2", "runs/sst2")], Settings(api_key="secret"))

Routes validate and translate; `batcher.Batcher` forms batches; the pipelines (`bertkit.tasks`) tokenize, run
and decode exactly as `bertkit.pipeline()` and `bertkit predict` do, so results are theirs. Every error is
JSON `{"error", "error_type"}`; nothing a client sends gives a 5xx.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bertkit.errors import UserError
from bertkit.serving import schemas
from bertkit.serving.batcher import Batcher, BatchedModel, Cancelled, Draining, Overloaded
from bertkit.serving.metrics import Metrics

log = logging.getLogger("bertkit.serve")
STATIC = Path(__file__).parent / "static"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EMBEDDING_TASKS = ("feature-extraction", "sentence-similarity")


@dataclass
class Settings:
    """Limits and batching of a server; the `bertkit serve` flags of the same names."""

    api_key: str | None = None
    backend: str = "torch"
    int8: bool = False
    device: str | None = None  # None: CUDA when there is one (torch backend), else CPU
    max_batch_tokens: int | None = None  # padded tokens per forward; None: 16384 on CUDA, 4096 on CPU
    max_batch_size: int = 256  # rows per forward; 1 turns batching off
    max_wait_ms: float = 2.0
    max_queue_tokens: int | None = None  # real tokens waiting per model; None: 2 batches' worth
    max_concurrent_requests: int = 512
    max_inputs_per_request: int = 64
    max_input_chars: int = 20000
    payload_limit: int = 2_000_000  # bytes of a request body
    load_in_background: bool = True  # answer /health (and 503s) while the weights load


@dataclass
class ModelSpec:
    name: str
    path: str


@dataclass
class Served:
    """One served checkpoint: its task(s), and once loaded, its batcher."""

    name: str
    path: str
    tasks: dict  # task name -> Task (an embedding model has two)
    config: object
    directory: Path
    batcher: Batcher | None = None
    device: str = "cpu"
    failed: str | None = None

    @property
    def task_name(self) -> str:
        return next(iter(self.tasks))

    @property
    def labels(self) -> list[str] | None:
        task = self.tasks[self.task_name]
        space = getattr(task, "space", None)
        labels = getattr(space, "labels", None) if space is not None else getattr(task, "labels", None)
        return list(labels) if labels else None


class ApiError(Exception):
    def __init__(self, status: int, message: str, error_type: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_type, self.headers = status, message, error_type, headers or {}


def error_response(status: int, message: str, error_type: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status, headers=headers)


ERRORS = {code: {"model": schemas.Error, "description": text} for code, text in (
    (401, "missing or wrong API key"), (404, "unknown model"),
    (413, "payload, input count or input length over the server's limits"),
    (422, "a body that does not match the schema, or inputs the task cannot take"),
    (429, "the queue is full: retry after the Retry-After header's seconds"),
    (503, "loading or draining"))}
MODEL_ERRORS = {code: doc for code, doc in ERRORS.items() if code != 404}  # a served model's route exists


# ---- app state -------------------------------------------------------------------------------------------


@dataclass
class State:
    settings: Settings
    models: dict[str, Served]
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    loaded: bool = False
    in_flight: int = 0
    limiter: anyio.CapacityLimiter | None = None

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining and all(m.failed is None for m in self.models.values())


def resolve(specs: list[ModelSpec]) -> dict[str, Served]:
    """Each checkpoint's config, tokenizer and task(s): everything but the weights, so bad paths fail at once."""
    from bertkit.inference.pipeline import load_task
    from bertkit.tasks import get_task

    names = [spec.name for spec in specs]
    for name in names:
        if not NAME.match(name):
            raise UserError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        if names.count(name) > 1:
            raise UserError(f"model name {name!r} is given twice; name them NAME=DIR")
    models: dict[str, Served] = {}
    for spec in specs:
        directory, config, task = load_task(spec.path)
        tasks = {task.name: task}
        if task.name in EMBEDDING_TASKS:  # one encoder, both embedding routes
            for other in EMBEDDING_TASKS:
                if other not in tasks:
                    tasks[other] = get_task(other).from_config(task.tokenizer, config)
        models[spec.name] = Served(spec.name, spec.path, tasks, config, Path(directory))
    return models


def warm_up(served: Served, net) -> None:
    """Run each task's pipeline once on a small input: lazy imports (the NER word splitter) and first-call
    costs are paid at load, and a checkpoint that cannot run fails here, not on a user's request."""
    from bertkit.inference.pipeline import Pipeline

    for name, task in served.tasks.items():
        samples = {"text-classification": "warm up", "token-classification": "Warm up in Paris.",
                   "question-answering": {"question": "Where?", "context": "In Paris."},
                   "fill-mask": f"warm {task.tokenizer.mask_token}", "feature-extraction": "warm up",
                   "sentence-similarity": {"source_sentence": "warm", "sentences": ["up"]}}
        if name in samples:
            Pipeline(task, net)(samples[name])


def load_weights(state: State) -> None:
    """Load every model and start its batcher (in the background unless settings say otherwise)."""
    import torch

    from bertkit.inference.pipeline import load_model

    s, metrics = state.settings, state.metrics
    for served in state.models.values():
        try:
            device = s.device or ("cuda" if s.backend == "torch" and not s.int8 and torch.cuda.is_available()
                                  else "cpu")
            net = load_model(served.tasks[served.task_name], served.directory, served.config, s.backend, s.int8,
                             device)
            warm_up(served, net)  # the first request then costs what every other does
            served.device = device
            budget = s.max_batch_tokens or (16384 if device.startswith("cuda") else 4096)
            name = served.name
            queue = s.max_queue_tokens or 2 * budget  # accepted requests wait at most ~(queue + 2 batches) of work
            served.batcher = Batcher(net, name, budget, s.max_batch_size, s.max_wait_ms, queue,
                                     on_batch=lambda stats, name=name: metrics.batch(name, stats),
                                     on_drop=lambda n, name=name: metrics.dropped.labels(name).inc(n))
            metrics.queue_limit.labels(name).set(queue)
            log.info("loaded %s (%s) from %s on %s", name, served.task_name, served.path, device)
        except Exception as e:  # noqa: BLE001  (reported by /ready and each request, the server stays up)
            served.failed = f"{served.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            log.error("could not load %s: %s", served.name, served.failed)
    state.loaded = True


# ---- validation messages and limits ---------------------------------------------------------------------

WRONG_BRANCH = {"string_type", "model_type", "dict_type", "list_type", "model_attributes_type", "none_required",
                "int_type", "bool_type", "float_type", "union_tag_invalid"}
TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def validation_message(errors: list[dict]) -> tuple[str, str, str]:
    """(where, what, error type) of pydantic's errors as one line: of a union's alternatives, the error of the one
    the input was meant for (not "should be a string" for a list that is too long), its path without the
    alternatives' names (`inputs[3].context`, not `inputs.list[QAInput].3.QAInput.context`)."""
    if not errors:
        return "body", "invalid request", "invalid"
    relevant = [e for e in errors if e.get("type") not in WRONG_BRANCH] or errors
    best = max(relevant, key=lambda e: len(e.get("loc", ())))  # the deepest: nearest the mistake
    where = ""
    for part in best.get("loc", ()):
        if isinstance(part, int):
            where += f"[{part}]"
        elif part == "body" and not where:
            continue
        elif part[:1].isupper() or "[" in part or "-" in part or part in TYPE_NAMES:
            continue  # a union alternative's name
        else:
            where += f".{part}" if where else part
    message = best.get("msg", "invalid")
    if best.get("type") == "string_pattern_mismatch":
        message = schemas.PATTERN_MESSAGES.get(str(best.get("ctx", {}).get("pattern")), message)
    return where or "body", message, best.get("type", "invalid")



def check_inputs(inputs, settings: Settings, truncate: bool, where: str = "inputs"):
    """Inputs whose texts are within the character limit, or a 413 naming the first that is not; with `truncate`,
    such texts are cut instead. (The input count is bounded by the request schemas: see `request_types`.)"""
    limit = settings.max_input_chars

    def walk(value, path):
        if isinstance(value, str):
            if len(value) <= limit:
                return value
            if truncate:
                return value[:limit]
            raise ApiError(413, f"{path}: {len(value)} characters; the limit is {limit} (send \"truncate\": true to "
                                "cut it)", "payload_too_large")
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
        return value

    return walk(inputs, where)


def plain(value):
    """Request models as the plain Python the pipelines take."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return {k: v for k, v in value.model_dump().items() if v is not None}
    return value


def task_params(body: schemas.Request) -> dict:
    """The pipeline parameters a request set: unset ones take the pipeline's defaults; null means "default"
    except for text-classification's top_k, where it means every label (as transformers)."""
    parameters = body.parameters.model_dump(exclude_unset=True)
    keep_null = ("top_k",) if isinstance(body.parameters, schemas.ClassificationParameters) else ()
    params = {k: v for k, v in parameters.items() if v is not None or k in keep_null}
    if getattr(body, "normalize", None) is not None:  # feature-extraction's top-level parameter
        params["normalize"] = body.normalize
    params.pop("truncate", None)
    return params


# ---- running a pipeline for a request -------------------------------------------------------------------


async def run_pipeline(state: State, served: Served, task_name: str, inputs, params: dict, request: Request):
    """The task's pipeline on `inputs`, its model batched with other requests'; (result, the request's
    BatchedModel with its timings). A client that disconnects has its rows dropped."""
    from bertkit.inference.pipeline import Pipeline

    if state.draining:
        raise ApiError(503, "the server is stopping", "unavailable", {"Retry-After": "5"})
    if served.failed:
        raise ApiError(503, f"model {served.name} failed to load: {served.failed}", "unavailable")
    if served.batcher is None:
        raise ApiError(503, f"model {served.name} is loading", "unavailable", {"Retry-After": "2"})
    if state.in_flight >= state.settings.max_concurrent_requests:
        raise ApiError(429, f"{state.in_flight} requests in flight; the limit is "
                            f"{state.settings.max_concurrent_requests}", "overloaded",
                       {"Retry-After": str(served.batcher.retry_after())})
    model = BatchedModel(served.batcher)
    pipe = Pipeline(served.tasks[task_name], model)
    watcher = asyncio.ensure_future(_watch_disconnect(request, model.cancel))
    state.in_flight += 1
    state.metrics.in_flight.set(state.in_flight)
    try:
        result = await anyio.to_thread.run_sync(lambda: pipe(inputs, **params), limiter=state.limiter)
    except UserError as e:
        raise ApiError(422, str(e), "validation") from None
    except Overloaded as e:
        raise ApiError(429, str(e), "overloaded", {"Retry-After": str(e.retry_after)}) from None
    except Draining as e:
        raise ApiError(503, str(e), "unavailable", {"Retry-After": "5"}) from None
    except Cancelled:
        raise ApiError(499, "the client disconnected", "cancelled") from None
    finally:
        watcher.cancel()
        state.in_flight -= 1
        state.metrics.in_flight.set(state.in_flight)
    m = state.metrics
    tokenizing = (model.submitted or time.perf_counter()) - model.created
    m.tokenization.labels(served.name).observe(tokenizing)
    m.queue.labels(served.name).observe(model.queue_seconds)
    m.inference.labels(served.name).observe(model.inference_seconds)
    model.tokenizing = tokenizing
    return result, model


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set `cancel` when the client goes away (the body is read: the next message is the disconnect)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                cancel.set()
                return
    except (asyncio.CancelledError, Exception):  # noqa: BLE001  (the request ended first)
        return


def timing_headers(model: BatchedModel, started: float) -> dict[str, str]:
    return {"x-tokenization-time-ms": f"{model.tokenizing * 1000:.2f}",
            "x-queue-time-ms": f"{model.queue_seconds * 1000:.2f}",
            "x-inference-time-ms": f"{model.inference_seconds * 1000:.2f}",
            "x-total-time-ms": f"{(time.perf_counter() - started) * 1000:.2f}",
            "x-tokens": str(model.tokens)}


def shape(task_name: str, result, inputs):
    """The HF Inference API's response shape from the pipeline's: text-classification is always a list per
    input (a list of lists); everything else is the pipeline's own."""
    if task_name != "text-classification":
        return result
    per_input = result if isinstance(inputs, list) else [result]
    return [r if isinstance(r, list) else [r] for r in per_input]


# ---- the app --------------------------------------------------------------------------------------------


def create_app(specs: list[ModelSpec], settings: Settings | None = None) -> FastAPI:
    from contextlib import asynccontextmanager

    settings = settings or Settings()
    state = State(settings, resolve(specs))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.limiter = anyio.CapacityLimiter(settings.max_concurrent_requests + 8)
        loader = threading.Thread(target=load_weights, args=(state,), name="loader", daemon=True)
        loader.start()
        if not settings.load_in_background:
            await anyio.to_thread.run_sync(loader.join)
        yield
        state.draining = True
        for served in state.models.values():
            if served.batcher is not None:
                await anyio.to_thread.run_sync(served.batcher.close, 30.0)

    from bertkit import __version__

    app = FastAPI(title="bertkit serve", version=__version__, lifespan=lifespan,
                  description="BERT models through the Hugging Face Inference API's task payloads and OpenAI's "
                              "embeddings API, with dynamic batching. Errors are `{\"error\", \"error_type\"}`.")
    app.state.bertkit = state

    # ---- errors as {"error", "error_type"} --------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error_response(e.status, e.message, e.error_type, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        where, message, kind = validation_message(e.errors())
        if kind == "too_long" and where.split(".")[0].split("[")[0] in ("inputs", "input"):  # over the input count
            return error_response(413, f"{where}: too many inputs; this server takes at most "
                                       f"{settings.max_inputs_per_request} a request", "payload_too_large")
        return error_response(422, f"{where}: {message}", "validation")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        kinds = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return error_response(e.status_code, str(e.detail), kinds.get(e.status_code, "http"),
                              getattr(e, "headers", None))

    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_exception_handler(StarletteHTTPException, _http)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.exception("internal error on %s", request.url.path)
        return error_response(500, f"internal error: {type(e).__name__}", "internal")

    app.add_middleware(Observe, state=state)
    app.add_middleware(LimitBody, limit=settings.payload_limit)

    # ---- auth ---------------------------------------------------------------------------------------------

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY", "unauthorized",
                           {"WWW-Authenticate": "Bearer"})

    protected = [Depends(authorized)]

    # ---- status routes -----------------------------------------------------------------------------------

    @app.get("/health", response_model=schemas.Status, tags=["status"])
    async def health():
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/ready", response_model=schemas.Status, tags=["status"], responses={503: ERRORS[503]})
    async def ready():
        """Models loaded and not draining: send traffic."""
        if state.ready:
            return {"status": "ready"}
        failed = [m.failed for m in state.models.values() if m.failed]
        why = "draining" if state.draining else (f"failed: {failed[0]}" if failed else "loading")
        return error_response(503, f"not ready: {why}", "unavailable", {"Retry-After": "2"})

    @app.get("/info", response_model=schemas.Info, tags=["status"], dependencies=protected,
             responses={401: ERRORS[401]})
    async def info():
        """Models, their tasks and labels, the limits, and versions."""
        import torch

        return {"bertkit": __version__, "ready": state.ready,
                "versions": {"bertkit": __version__, "torch": torch.__version__,
                             "python": sys.version.split()[0]},
                "models": [{"name": m.name, "task": m.task_name, "tasks": list(m.tasks), "labels": m.labels,
                            "max_length": m.tasks[m.task_name].max_length, "backend": settings.backend,
                            "int8": settings.int8, "device": m.device, "path": str(m.path),
                            "loaded": m.batcher is not None,
                            "max_batch_tokens": m.batcher.max_batch_tokens if m.batcher else None,
                            "max_queue_tokens": m.batcher.max_queue_tokens if m.batcher else None}
                           for m in state.models.values()],
                "limits": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                           "max_concurrent_requests": settings.max_concurrent_requests,
                           "max_inputs_per_request": settings.max_inputs_per_request,
                           "max_input_chars": settings.max_input_chars, "payload_limit": settings.payload_limit}}

    @app.get("/metrics", tags=["status"], dependencies=protected, responses={401: ERRORS[401]},
             response_class=Response)
    async def metrics():
        """Prometheus text format."""
        for m in state.models.values():
            if m.batcher is not None:
                state.metrics.queue_tokens.labels(m.name).set(m.batcher.queued_tokens)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- model routes: one per served model and task, each with its task's schema ------------------------

    requests = schemas.request_types(settings.max_inputs_per_request)

    def model_route(served: Served, task_name: str | None):
        body_type = requests["embedding-model"] if task_name is None and served.task_name in EMBEDDING_TASKS \
            else requests[task_name or served.task_name]

        async def endpoint(request: Request, body: body_type):  # type: ignore[valid-type]
            started = time.perf_counter()
            request.state.model = served.name
            name = task_name or served.task_name
            if task_name is None and served.task_name in EMBEDDING_TASKS:
                name = "feature-extraction" if isinstance(body.inputs, (str, list)) else "sentence-similarity"
            truncate = bool(body.truncate or getattr(body.parameters, "truncate", None))
            inputs = check_inputs(plain(body.inputs), settings, truncate)
            params = task_params(body) if name != "sentence-similarity" else {}  # cosines: nothing to set
            result, model = await run_pipeline(state, served, name, inputs, params, request)
            return JSONResponse(shape(name, result, inputs), headers=timing_headers(model, started))

        endpoint.__annotations__ = {"request": Request, "body": body_type, "return": JSONResponse}
        endpoint.__name__ = f"{served.name}_{(task_name or 'default')}".replace("-", "_").replace(".", "_")
        return endpoint

    for served in state.models.values():
        tasks = ", ".join(served.tasks)
        app.post(f"/models/{served.name}", tags=["models"], dependencies=protected,
                 responses=MODEL_ERRORS,
                 summary=f"{served.name}: {tasks}",
                 description=f"The Hugging Face Inference API's {tasks} payload for `{served.name}`.")(
            model_route(served, None))
        for task_name in served.tasks:
            app.post(f"/models/{served.name}/pipeline/{task_name}", tags=["models"], dependencies=protected,
                     responses=MODEL_ERRORS,
                     summary=f"{served.name} as {task_name}")(model_route(served, task_name))

    @app.post("/models/{name}", tags=["models"], dependencies=protected, include_in_schema=False)
    @app.post("/models/{name}/pipeline/{task}", tags=["models"], dependencies=protected, include_in_schema=False)
    async def unknown_model(name: str, task: str | None = None):
        if name in state.models:
            raise ApiError(404, f"model {name} does not serve {task}; it serves {', '.join(state.models[name].tasks)}",
                           "not_found")
        raise ApiError(404, f"unknown model {name!r}; this server has {', '.join(state.models)}", "not_found")

    # ---- OpenAI -------------------------------------------------------------------------------------------

    embedders = [m.name for m in state.models.values() if m.task_name in EMBEDDING_TASKS]

    async def embeddings(request: Request, body):
        """OpenAI's embeddings API: `input` a text or a list of texts; vectors as floats or base64 float32."""
        started = time.perf_counter()
        served = state.models.get(body.model)
        if served is None or served.task_name not in EMBEDDING_TASKS:
            raise ApiError(404, f"model {body.model!r} is no embedding model of this server; it has "
                                f"{', '.join(embedders) or 'none'}", "not_found")
        request.state.model = served.name
        texts = check_inputs([body.input] if isinstance(body.input, str) else body.input, settings, False, "input")
        vectors, model = await run_pipeline(state, served, "feature-extraction", texts, {}, request)
        if body.encoding_format == "base64":
            data = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        else:
            data = vectors
        content = {"object": "list", "model": served.name,
                   "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data)],
                   "usage": {"prompt_tokens": model.tokens, "total_tokens": model.tokens}}
        return JSONResponse(content, headers=timing_headers(model, started))

    embeddings.__annotations__ = {"request": Request, "body": requests["openai-embeddings"]}
    app.post("/v1/embeddings", response_model=schemas.EmbeddingsResponse, tags=["openai"], dependencies=protected,
             responses=ERRORS)(embeddings)

    @app.get("/v1/models", response_model=schemas.ModelList, tags=["openai"], dependencies=protected,
             responses={401: ERRORS[401]})
    async def list_models():
        """OpenAI's model list: every served model."""
        created = int(time.time())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                            "owned_by": "bertkit"} for name in state.models]}

    # ---- the page -----------------------------------------------------------------------------------------

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        index = STATIC / "index.html"
        if not index.is_file():
            return error_response(404, "no page in this installation", "not_found")
        return FileResponse(index)

    return app


# ---- ASGI middleware ------------------------------------------------------------------------------------


class LimitBody:
    """413 for a body over `limit` bytes: by Content-Length before reading, or as the bytes arrive. A POST whose
    content type is missing or a form's (`curl -d`) is read as the JSON it is."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if scope["method"] == "POST" and headers.get(b"content-type", b"application/x-www-form-urlencoded") \
                .startswith(b"application/x-www-form-urlencoded"):
            headers[b"content-type"] = b"application/json"
            scope = {**scope, "headers": list(headers.items())}
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = error_response(413, f"request body of {length.decode(errors='replace')} bytes; the limit is "
                                           f"{self.limit}", "payload_too_large")
            return await response(scope, receive, send)
        seen = 0

        async def counting():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, counting, send)


class Observe:
    """Counts every request by route template, model and status, and times it."""

    def __init__(self, app, state: State):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            model = scope.get("state", {}).get("model", "")
            if not model and route.startswith("/models/") and "{" not in route:
                model = route.split("/")[2]
            m = self.state.metrics
            m.requests.labels(route, model, str(status[0])).inc()
            m.latency.labels(route, model).observe(time.perf_counter() - started)
