"""`bertkit data download` and the named datasets' splits: downloads land in the cache, never the data directory,
checked against pinned SHA-256 sums and written atomically; MRPC's dev split carved from train; and the suite's own
rule that a missing requirement skips locally but fails under CI=true.

Downloads are served by a local http.server on 127.0.0.1 (a free port, in a thread, stopped after each test)."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import DATA, require_data, require_module
from clihelp import run_cli
from servehelp import free_port

from bertkit.errors import UserError
from bertkit.tasks import datasets
from bertkit.tasks.datasets import (
    DATASETS,
    DatasetInfo,
    Download,
    carved_rows,
    download,
    load_dataset,
    save_as,
    split_squad_dev,
    unzip,
)

TRAIN = b"sentence\tlabel\ngood film\t1\nfine acting\t1\n"
DEV = b"sentence\tlabel\nbad film\t0\ndull\t0\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def error(call) -> str:
    with pytest.raises(UserError) as e:
        call()
    return str(e.value)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones too) -> its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sst2_zip(train: bytes = TRAIN, dev: bytes = DEV) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("SST-2/train.tsv", train)
        z.writestr("SST-2/dev.tsv", dev)
        z.writestr("SST-2/test.tsv", "index\tsentence\n")
    return archive.getvalue()


@dataclass
class Server:
    url: str
    files: dict[str, bytes]  # path -> body; any other path is a 404
    requests: list[str]


@pytest.fixture
def server(monkeypatch):
    """A local HTTP server in a thread; no proxy is ever asked (no_proxy=*), so nothing leaves 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    files: dict[str, bytes] = {}
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_port}", files, requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """(data dir, cache dir), both set in the environment: the data dir holds one unrelated file to stay as it is."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    (data / "wnut17").mkdir(parents=True)
    (data / "wnut17" / "train.conll").write_text("Hello O\n")
    monkeypatch.setenv("BERTKIT_DATA_DIR", str(data))
    monkeypatch.setenv("BERTKIT_CACHE_DIR", str(cache))
    return data, cache


def serve_sst2(monkeypatch, server: Server, body: bytes, pins: dict | None = None) -> str:
    """DATASETS["sst2"] fetched from the local server, with `pins` (default: the sums of TRAIN and DEV)."""
    server.files["/SST-2.zip"] = body
    url = f"{server.url}/SST-2.zip"
    pins = {"train.tsv": sha256(TRAIN), "dev.tsv": sha256(DEV)} if pins is None else pins
    source = Download(url, unzip({"train.tsv": "SST-2/train.tsv", "dev.tsv": "SST-2/dev.tsv"}), pins)
    monkeypatch.setitem(DATASETS, "sst2", replace(DATASETS["sst2"], downloads=(source,)))
    return url


# ---------------------------------------------------------------------------------------------------------------
# Download: into the cache, checked, atomic


def test_download_lands_in_the_cache_and_leaves_the_data_directory_alone(server, dirs, monkeypatch):
    data, cache = dirs
    before = tree(data)
    serve_sst2(monkeypatch, server, sst2_zip())
    folder = download("sst2")
    assert folder == cache / "datasets" / "sst2"
    assert tree(folder) == {"train.tsv": TRAIN, "dev.tsv": DEV}  # no temporary files beside them
    assert tree(data) == before
    dev = load_dataset("sst2", "dev")  # the data dir has no sst2/: found in the cache
    assert dev.path == folder / "dev.tsv" and [e.text for e in dev.examples] == ["bad film", "dull"]
    assert [e.label for e in dev.examples] == ["negative", "negative"]
    # all there with the pinned sums: nothing is fetched again (this server would give a broken zip now)
    server.files["/SST-2.zip"] = b"not a zip"
    assert download("sst2") == folder and server.requests == ["/SST-2.zip"]
    assert tree(folder) == {"train.tsv": TRAIN, "dev.tsv": DEV}


def test_data_directory_is_read_before_the_cache(server, dirs, monkeypatch):
    data, cache = dirs
    serve_sst2(monkeypatch, server, sst2_zip())
    (data / "sst2").mkdir()
    (data / "sst2" / "dev.tsv").write_text("sentence\tlabel\nmine\t1\n")
    with pytest.warns(UserWarning, match=r"data/sst2/ also holds sst2's files, and they are read first"):
        folder = download("sst2")
    assert (data / "sst2" / "dev.tsv").read_text() == "sentence\tlabel\nmine\t1\n" and tree(folder)
    assert [e.text for e in load_dataset("sst2", "dev").examples] == ["mine"]  # the data directory's
    assert load_dataset("sst2", "train").path == folder / "train.tsv"  # the data dir lacks it: the cache's


def test_wrong_checksum_is_one_line_and_keeps_the_older_good_copy(server, dirs, monkeypatch):
    data, cache = dirs
    folder = cache / "datasets" / "sst2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_bytes(TRAIN)  # an older good copy; dev.tsv is missing, so the zip is fetched
    tampered = DEV.replace(b"dull", b"dull!")
    url = serve_sst2(monkeypatch, server, sst2_zip(dev=tampered))
    message = error(lambda: download("sst2"))
    assert message == (f"sst2: dev.tsv from {url} has SHA-256 {sha256(tampered)}, expected {sha256(DEV)}; "
                       f"nothing was written to {folder}/")
    assert "\n" not in message
    assert tree(folder) == {"train.tsv": TRAIN}  # no dev.tsv, no temporary file, the good train.tsv kept
    # into an empty cache: not even the folder is made
    other = dirs[1].parent / "fresh-cache"
    monkeypatch.setenv("BERTKIT_CACHE_DIR", str(other))
    with pytest.raises(UserError, match="has SHA-256"):
        download("sst2")
    assert not other.exists()


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_an_interrupted_write_leaves_no_temporary_file_and_the_old_file(server, dirs, monkeypatch, failing):
    data, cache = dirs
    folder = cache / "datasets" / "sst2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_bytes(b"sentence\tlabel\nolder\t1\n")  # not the pinned file: fetched again
    serve_sst2(monkeypatch, server, sst2_zip())

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(datasets.os, failing, full_disk)
    message = error(lambda: download("sst2"))
    assert message == (f"cannot write {folder / 'train.tsv'} (No space left on device); no partial file was left, "
                       "and the train.tsv that was there before, if any, is kept")
    assert tree(folder) == {"train.tsv": b"sentence\tlabel\nolder\t1\n"}  # as it was; no temporary file
    # a cache folder this download made is not left behind empty
    monkeypatch.setenv("BERTKIT_CACHE_DIR", str(cache.parent / "fresh-cache"))
    with pytest.raises(UserError, match="No space left on device"):
        download("sst2")
    assert not (cache.parent / "fresh-cache" / "datasets" / "sst2").exists()


def test_offline_or_missing_source_is_one_line_with_the_way_out(server, dirs, monkeypatch):
    data, cache = dirs
    refused = f"http://127.0.0.1:{free_port()}/SST-2.zip"
    monkeypatch.setitem(DATASETS, "sst2", replace(DATASETS["sst2"], downloads=(Download(refused, save_as("x")),)))
    started = time.perf_counter()
    message = error(lambda: download("sst2"))
    assert time.perf_counter() - started < 5
    assert message.startswith(f"cannot download sst2 from {refused} (") and "refused" in message
    assert message.endswith(f"); this machine may be offline: copy the files into {data}/sst2/ by hand")
    assert "\n" not in message and not cache.exists()
    url = serve_sst2(monkeypatch, server, b"")
    del server.files["/SST-2.zip"]
    assert error(lambda: download("sst2")) == (f"cannot download sst2 from {url} (Not Found); this machine may be "
                                               f"offline: copy the files into {data}/sst2/ by hand")
    server.files["/SST-2.zip"] = b"<html>moved</html>"
    assert error(lambda: download("sst2")).startswith(f"{url}: not what sst2 should be (File is not a zip file)")
    assert not cache.exists()


def test_download_without_a_public_source_says_to_copy_by_hand(dirs):
    data, _ = dirs
    assert error(lambda: download("conll2003")) == \
        f"conll2003 has no public download in this format; copy its files (train.txt, valid.txt) into {data}/conll2003/"
    r = run_cli("data", "download", "conll2003", env={"BERTKIT_DATA_DIR": str(data)}, check=False, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"bertkit data: error: conll2003 has no public download in this format; copy its files (train.txt, "
        f"valid.txt) into {data}/conll2003/")


def test_a_file_without_a_pinned_sum_is_written_with_a_warning(server, dirs, monkeypatch):
    _, cache = dirs
    url = serve_sst2(monkeypatch, server, sst2_zip(), pins={"train.tsv": sha256(TRAIN)})
    with pytest.warns(UserWarning) as caught:
        download("sst2")
    assert [str(w.message) for w in caught] == [
        f"sst2: dev.tsv from {url} has no pinned SHA-256, so it is unverified (its SHA-256 is {sha256(DEV)})"]
    assert tree(cache / "datasets" / "sst2") == {"train.tsv": TRAIN, "dev.tsv": DEV}


def test_every_download_pins_every_file_it_writes():
    for name, info in DATASETS.items():
        if not info.downloads:
            continue
        pins = {f: s for d in info.downloads for f, s in d.sha256.items()}
        assert set(pins) == set(info.splits.values()), name
        assert all(isinstance(s, str) and len(s) == 64 and int(s, 16) >= 0 for s in pins.values()), name


@pytest.mark.needs_data(*sorted({i.folder for i in DATASETS.values() if i.downloads}))
def test_pinned_sums_are_those_of_the_shared_copies():
    for name, info in DATASETS.items():
        for source in info.downloads:
            for file_name, pinned in source.sha256.items():
                assert sha256((DATA / info.folder / file_name).read_bytes()) == pinned, (name, file_name)


@pytest.mark.needs_data("squad/train.json", "squad/dev.json")
def test_squad_download_of_the_official_file_writes_the_pinned_split(server, dirs, monkeypatch):
    """The official dev-v1.1.json, rebuilt from shared/data's articles 0-42 (plus 5 stand-ins for 43-47, which
    are not kept) in its own layout ("data" first, \\u escapes): download's split writes the pinned bytes."""
    train, dev = (json.loads((DATA / "squad" / f).read_bytes()) for f in ("train.json", "dev.json"))
    stand_ins = [{"title": f"held_out_{i}", "paragraphs": []} for i in range(5)]
    official = json.dumps({"data": train["data"] + dev["data"] + stand_ins, "version": "1.1"}).encode()
    assert official.isascii() and not (DATA / "squad" / "train.json").read_bytes().isascii()
    pins = DATASETS["squad"].downloads[0].sha256
    assert {f: sha256(b) for f, b in split_squad_dev(official).items()} == pins
    server.files["/dev-v1.1.json"] = official
    source = replace(DATASETS["squad"].downloads[0], url=f"{server.url}/dev-v1.1.json")
    monkeypatch.setitem(DATASETS, "squad", replace(DATASETS["squad"], downloads=(source,)))
    folder = download("squad")
    assert {f: sha256(b) for f, b in tree(folder).items()} == pins


# ---------------------------------------------------------------------------------------------------------------
# MRPC: test is the test file, dev is carved from train


@pytest.mark.needs_data("mrpc")
def test_mrpc_dev_is_408_train_pairs_carved_out_without_overlap():
    train, dev, test = (load_dataset("mrpc", split, DATA) for split in ("train", "dev", "test"))
    assert (len(train.examples), len(dev.examples), len(test.examples)) == (3668, 408, 1725)
    assert train.path == dev.path == DATA / "mrpc" / "train.txt" and test.path == DATA / "mrpc" / "test.txt"
    train_rows, dev_rows = {e.source for e in train.examples}, {e.source for e in dev.examples}
    assert not train_rows & dev_rows and len(train_rows | dev_rows) == 4076  # every train.txt row, once
    assert not {(e.text, e.text_pair) for e in test.examples} & {(e.text, e.text_pair) for e in dev.examples}
    # the fixed rule: the 408 rows with the smallest of random.Random(0).random()'s draws, one a row
    assert sorted(int(s.rsplit(":", 1)[1]) - 2 for s in dev_rows) == sorted(carved_rows(4076, 408))
    assert sorted(carved_rows(4076, 408))[:5] == [35, 40, 52, 75, 97]  # the same on every machine and Python
    assert sum(e.label == "equivalent" for e in dev.examples) == 268  # 65.7% (train.txt: 67.5%)
    assert [e.source for e in load_dataset("mrpc", "validation", DATA).examples] == [e.source for e in dev.examples]


def test_carved_dev_is_a_field_any_dataset_can_use(tmp_path, monkeypatch):
    rows = [f"row {i}\t{i % 2}\n" for i in range(10)]
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    monkeypatch.setitem(DATASETS, "sst2", replace(DATASETS["sst2"], splits={"train": "train.tsv", "dev": "train.tsv"},
                                                  carve_dev=3))
    train, dev = (load_dataset("sst2", split, tmp_path).examples for split in ("train", "dev"))
    chosen = carved_rows(10, 3)
    assert [e.text for e in dev] == [f"row {i}" for i in sorted(chosen)]
    assert [e.text for e in train] == [f"row {i}" for i in range(10) if i not in chosen]
    assert carved_rows(10, 3) == chosen and len(chosen) == 3
    monkeypatch.setitem(DATASETS, "sst2", replace(DATASETS["sst2"], carve_dev=10))
    assert error(lambda: load_dataset("sst2", "dev", tmp_path)) == \
        f"{tmp_path / 'sst2' / 'train.tsv'}: 10 examples, too few to carve a dev split of 10 from"
    with pytest.raises(ValueError, match="carve_dev needs"):
        DatasetInfo("text-classification", "en", "x", {"train": "a.tsv", "dev": "b.tsv"}, lambda p: [], carve_dev=5)


# ---------------------------------------------------------------------------------------------------------------
# The suite's requirements: skip locally, fail under CI=true


def test_missing_requirements_skip_locally_and_fail_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no .*no-such-folder: set BERTKIT_DATA_DIR"):
        require_data("no-such-folder")
    with pytest.raises(pytest.skip.Exception, match="cannot import no_such_module_for_bertkit"):
        require_module("no_such_module_for_bertkit")
    assert require_module("json") is json
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_data("no-such-folder")
    with pytest.raises(pytest.fail.Exception, match="cannot import no_such_module_for_bertkit.*CI=true"):
        require_module("no_such_module_for_bertkit")


def test_the_needs_data_mark_skips_locally_and_fails_under_ci(tmp_path):
    """A small suite run with this conftest: the mark's missing path is a skip, or an error under CI=true."""
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "data" / "present").mkdir(parents=True)
    (tmp_path / "test_inner.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.needs_data('present')\ndef test_present():\n    pass\n\n"
        "@pytest.mark.needs_data('present', 'absent')\ndef test_absent():\n    pass\n")

    def outcome(ci: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "BERTKIT_DATA_DIR": str(tmp_path / "data"), "CI": ci}
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    local, ci = outcome(""), outcome("true")
    assert local.returncode == 0 and "1 passed, 1 skipped" in local.stdout, local.stdout
    assert f"no {tmp_path / 'data' / 'absent'}: set BERTKIT_DATA_DIR" in local.stdout
    assert ci.returncode == 1 and "1 passed, 1 error" in ci.stdout and "CI=true" in ci.stdout, ci.stdout
