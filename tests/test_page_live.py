"""The page's Live mode in the session's headless Chromium, whose fake microphone plays a WAV file in a loop
(conftest.py's `browser` and `microphone_wav`): the page streams it through its AudioWorklet to the session
server's /v1/stream and shows that file's label."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import soundfile as sf
from servers import ARTIFACTS

from ast_audio import AudioClassifier

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

WINDOWS_SEEN = 4  # windows the page shows before the label is read: 1.295 s + 3 hops of 0.6475 s of audio


def window_scores(classifier: AudioClassifier, samples: np.ndarray, rate: int, path) -> tuple[list[str], np.ndarray]:
    """The labels and the scores (windows, labels) of the windows of `samples` as classify gives them, through a
    WAV at `path`."""
    sf.write(path, samples, rate, subtype="FLOAT")
    result = classifier.classify(str(path))
    return result.labels, result.window_scores


def top_labels(labels: list[str], scores: np.ndarray) -> set[str]:
    return {labels[int(np.argmax(window))] for window in scores}


@dataclasses.dataclass(frozen=True)
class Heard:
    """What the engine hears in the microphone's sound: `label`, every window's top one, and an event
    `threshold` below its lowest window score and above every other label's highest (0.01 steps, as the
    page's slider)."""

    label: str
    threshold: float


@pytest.fixture(scope="module")
def heard(served_checkpoint, microphone_wav, tmp_path_factory) -> Heard:
    """The label the engine gives every window of what the browser's fake microphone plays (conftest.py's
    `microphone_wav`: brown noise at 0.1 RMS), with the served model and its default window (1.295 s) and hop.
    Why that sound: on the served tiny random model its every window has one top label, and that label is
    neither silence's nor the one the same noise gets when its samples are taken at a wrong rate (a browser's
    44.1 kHz read as 16 kHz, the model's rate). So a page that sends silence, nothing, or its audio with the wrong
    rate shows another label, or none. Checked here, with the engine, before the browser is asked."""
    import soxr

    folder = tmp_path_factory.mktemp("heard")
    played, rate = sf.read(microphone_wav, dtype="float32")
    classifier = AudioClassifier.from_pretrained(served_checkpoint)
    labels, scores = window_scores(classifier, played, rate, folder / "played.wav")
    silence = top_labels(*window_scores(classifier, np.zeros_like(played), rate, folder / "silence.wav"))
    misread = soxr.resample(played, rate, 44100)[: len(played)]
    misread_tops = top_labels(*window_scores(classifier, misread, rate, folder / "misread.wav"))
    tops = top_labels(labels, scores)
    assert len(tops) == 1, f"the microphone's windows disagree on their top label: {tops}"
    (label,) = tops
    assert label not in silence | misread_tops, (label, silence, misread_tops)
    lowest, others = scores[:, labels.index(label)].min(), np.delete(scores, labels.index(label), axis=1).max()
    threshold = round(float(lowest + others) / 2, 2)
    assert others + 0.02 < threshold < lowest - 0.02, (lowest, others)  # room for the browser's resampling
    return Heard(label, threshold)


def _status(browser) -> tuple[str, bool]:
    from selenium.webdriver.common.by import By

    line = browser.find_element(By.ID, "status")
    return line.text, "error" in (line.get_attribute("class") or "")


def _windows_shown(browser) -> int:
    from selenium.webdriver.common.by import By

    return int(browser.find_element(By.ID, "live-card").get_attribute("data-windows") or 0)


def _live_view(browser) -> dict:
    """The Live card as shown, read in one script (between two windows): the announced top label and its text,
    the current labels in order, the timeline's rows and time ticks, and the Live button's text."""
    return browser.execute_script("""
        const texts = (selector) => Array.from(document.querySelectorAll(selector), (element) => element.textContent);
        const now = document.getElementById('live-now');
        return {now: now.dataset.label, announced: now.textContent, aria_live: now.getAttribute('aria-live'),
                current: texts('#live-labels .label'), rows: texts('#live-rows .heat-row'),
                ticks: texts('#live-x .tick'), button: document.getElementById('live').textContent};
    """)


def test_live_shows_the_label_of_what_the_microphone_hears(server, heard, browser):
    """Live on the fake microphone, the slider (shown at load, before any file) moved by the keyboard to
    `heard.threshold`: after a few windows the page's current top label (announced, and first in the table) is
    the engine's label of the file, with a row on the timeline, the slider locked; Stop gives the summary,
    counting every window the page showed, and the one event, that label over the whole stream (closed at its
    end), and turns the microphone off. This server has no key: no key field."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    label = heard.label
    browser.get(f"http://127.0.0.1:{server.port}/")
    browser.get_log("browser")  # what earlier pages logged
    slider = browser.find_element(By.ID, "threshold")
    assert slider.is_displayed() and slider.is_enabled()
    steps = round((heard.threshold - 0.5) / 0.01)
    slider.send_keys((Keys.ARROW_RIGHT if steps > 0 else Keys.ARROW_LEFT) * abs(steps))
    assert browser.find_element(By.ID, "threshold-value").text == f"{heard.threshold:.2f}"
    browser.find_element(By.ID, "live").click()
    WebDriverWait(browser, 60).until(lambda b: _windows_shown(b) >= WINDOWS_SEEN or _status(b)[1])
    assert not _status(browser)[1], _status(browser)[0]
    shown = _live_view(browser)  # at one instant: the page redraws at every window
    assert shown["now"] == label and shown["announced"] == f"Hearing: {label}", shown
    assert shown["aria_live"] == "polite" and shown["current"][0] == label and label in shown["rows"], shown
    assert shown["ticks"][0] == "0" and shown["ticks"][-1] == "30", shown  # the first 30 s of stream time
    assert shown["button"] == "Stop", shown
    assert not slider.is_enabled()  # the stream keeps the threshold it started with
    os.makedirs(ARTIFACTS, exist_ok=True)
    assert browser.save_screenshot(os.path.join(ARTIFACTS, "serve-page-live.png"))

    browser.find_element(By.ID, "live").click()
    WebDriverWait(browser, 60).until(lambda b: _status(b)[0].startswith("Stopped:") or _status(b)[1])
    assert not _status(browser)[1], _status(browser)[0]
    summary = json.loads(browser.find_element(By.ID, "live-card").get_attribute("data-summary"))
    assert summary["windows"] == _windows_shown(browser) >= WINDOWS_SEEN, summary
    assert summary["seconds"] > WINDOWS_SEEN * 0.6475, summary
    events = [tuple(cell.text for cell in row.find_elements(By.CSS_SELECTOR, ".c0, .c1, .c2"))
              for row in browser.find_elements(By.CSS_SELECTOR, "#live-events .event")]
    assert events == [(label, "0.00", f"{summary['seconds']:.2f}")], (events, summary)
    assert browser.save_screenshot(os.path.join(ARTIFACTS, "serve-page-live-stopped.png"))
    assert browser.find_element(By.ID, "live").text == "Live" and slider.is_enabled()
    assert browser.execute_script("return live === null")  # the session, its microphone and socket let go
    assert not browser.find_element(By.ID, "keyrow").is_displayed()
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]  # no script error


def test_live_shows_the_server_s_refusal_as_one_line(server, browser):
    """A stream the server refuses (here a rate of 0 Hz, put in the page's query): its error is the status line,
    marked as an error, and the page is ready for another try."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://127.0.0.1:{server.port}/")
    browser.execute_script("const url = streamUrl; "
                           "streamUrl = (...args) => url(...args).replace(/rate=\\d+/, 'rate=0');")
    browser.find_element(By.ID, "live").click()
    WebDriverWait(browser, 60).until(lambda b: _status(b)[1])
    text, _ = _status(browser)
    assert text.startswith("Live stopped: ") and "rate" in text and "\n" not in text, text
    assert browser.find_element(By.ID, "live").text == "Live" and browser.find_element(By.ID, "live").is_enabled()
    assert browser.execute_script("return live === null")
