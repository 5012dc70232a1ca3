"""The playground in a real headless Chromium against ``acestep-app serve`` on the tiny checkpoint.

One server and one browser for the module. Each test drives the page only through its contract:
the ``api_key`` input, a link named after the endpoint, inputs named after the schema's fields, the
form's ``button[type=submit]`` and the ``<audio>`` element of a finished request. Screenshots go to
``$ACESTEP_SCREENSHOT_DIR`` (``docs/images`` refreshes the ones docs/playground.md shows).
"""

from __future__ import annotations

import io
import json
import threading
from enum import StrEnum
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import soundfile
from pydantic import BaseModel, Field

from acestep_app.engine.family import get_family
from acestep_app.hosts.routes import Host
from acestep_app.hosts.web import create_web_app
from acestep_app.serving.auth import Keys
from acestep_app.serving.endpoints import Endpoint, EndpointRegistry
from acestep_app.serving.queue import QueueService
from acestep_app.serving.schema import RequestModel
from acestep_app.serving.stores.sqlite import SqliteJobStore
from acestep_app.settings import INFRA_ENV, Settings
from browser import browser, console_errors, screenshot, screenshot_dir
from conftest import wait_until
from server_process import free_port, running, serve_command

KEY = "playground-key"
AUTH = {"Authorization": f"Key {KEY}"}
V1 = get_family("acestep-v1")
WAIT = 60  # seconds: the slowest step is a 5 s song's decode on one CPU thread (about 2 s)


@pytest.fixture(scope="module")
def server(tiny_infra, tmp_path_factory):
    folder = tmp_path_factory.mktemp("playground-server")
    port = free_port()
    command = serve_command(folder / "data", port, "--device", "cpu", "--api-key", KEY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(INFRA_ENV, str(tiny_infra))  # the tiny checkpoint, the fallback prompt writer
        with running(command, f"http://127.0.0.1:{port}", folder / "server.log", timeout=180) as process:
            yield process


@pytest.fixture(scope="module")
def driver():
    with browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("screenshots"))


@pytest.fixture
def page(server, driver):
    """The playground, freshly loaded with the key typed in; the console drained before the test."""
    from selenium.webdriver.common.by import By

    driver.get(f"{server.base_url}/playground")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{server.base_url}/playground")
    driver.find_element(By.NAME, "api_key").send_keys(KEY)
    until(driver, lambda d: d.find_elements(By.LINK_TEXT, "prompt-to-audio"))
    console_errors(driver)
    return driver


def until(driver, condition, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def open_form(driver, endpoint: str):
    from selenium.webdriver.common.by import By

    driver.find_element(By.LINK_TEXT, endpoint).click()
    form = driver.find_element(By.ID, f"form-{endpoint}")
    until(driver, lambda d: form.is_displayed())
    return form


def fill(form, values: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    for name, value in values.items():
        field = form.find_element(By.CSS_SELECTOR, f"[name={name}]:not([type=file])")
        field.clear()
        field.send_keys(value)


def status_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "run-status").text


def finished_audio(driver):
    """The ``<audio>`` of the finished request once its ``src`` is set (fails on a failed request)."""
    from selenium.webdriver.common.by import By

    until(driver, lambda d: status_text(d) in ("Completed", "Cancelled") or status_text(d).startswith("Failed"))
    assert status_text(driver) == "Completed", driver.find_element(By.ID, "run-error").text
    audio = driver.find_element(By.CSS_SELECTOR, "#run-result audio")
    until(driver, lambda d: audio.get_attribute("src"))
    return audio


def fetched_wav(url: str) -> soundfile.SoundFile:
    response = httpx.get(url, timeout=30)  # the signed link works without the key, as in the <audio> element
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert response.content[:4] == b"RIFF" and response.content[8:12] == b"WAVE"
    return soundfile.info(io.BytesIO(response.content))


def history_rows(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#history-rows tr")]


def test_serve_prints_the_playground_url(server):
    assert f"Playground: {server.base_url}/playground\n" in server.log_path.read_text()


def test_every_endpoint_has_a_form_of_labelled_inputs_named_after_its_schema(page):
    from selenium.webdriver.common.by import By

    links = [link.text for link in page.find_elements(By.CSS_SELECTOR, "#endpoints a")]
    assert links == [endpoint.name for endpoint in V1.endpoints]
    for endpoint in V1.endpoints:
        form = open_form(page, endpoint.name)
        schema = endpoint.input_model.model_json_schema()
        names = {element.get_attribute("name") for element in form.find_elements(By.CSS_SELECTOR, "[name]")}
        assert names == set(schema["properties"]), endpoint.name
        assert len(form.find_elements(By.CSS_SELECTOR, "button[type=submit]")) == 1
        for control in form.find_elements(By.CSS_SELECTOR, "input, select, textarea"):
            labels = page.execute_script("return arguments[0].labels.length", control)
            assert labels >= 1, (endpoint.name, control.get_attribute("name"))
    form = open_form(page, "prompt-to-audio")
    steps = form.find_element(By.NAME, "number_of_steps")  # the schema's default and bounds
    assert (steps.get_attribute("value"), steps.get_attribute("min"), steps.get_attribute("max")) == ("27", "3", "60")
    scheduler = form.find_element(By.NAME, "scheduler")
    assert scheduler.tag_name == "select" and scheduler.get_attribute("value") == "euler"
    assert [o.text for o in scheduler.find_elements(By.TAG_NAME, "option")] == ["euler", "heun"]
    assert "reproducibility" in form.find_element(By.ID, "form-prompt-to-audio-seed-help").text
    assert console_errors(page) == []


def test_prompt_to_audio_runs_through_the_queue_to_a_playable_wav(page, server, shots):
    from selenium.webdriver.common.by import By

    form = open_form(page, "prompt-to-audio")
    fill(form, {"prompt": "a lofi beat on the boardwalk", "duration": "5", "number_of_steps": "3", "seed": "7"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    audio = finished_audio(page)
    info = fetched_wav(audio.get_attribute("src"))
    assert (info.samplerate, info.channels) == (48000, 2) and 4.9 < info.duration <= 5.0
    # the browser itself loaded the file: its metadata says 5 s
    until(page, lambda d: d.execute_script("return arguments[0].readyState", audio) >= 1)
    assert 4.9 < page.execute_script("return arguments[0].duration", audio) <= 5.0
    download = page.find_element(By.ID, "run-download")
    assert download.get_attribute("href") == audio.get_attribute("src")
    result = json.loads(page.find_element(By.ID, "run-json").text)
    assert result["seed"] == 7 and result["audio"]["content_type"] == "audio/wav"
    assert page.find_element(By.ID, "run-seed").get_attribute("value") == "7"
    logs = page.find_element(By.ID, "run-logs").text
    assert "step 3/3" in logs and "Request completed." in logs
    assert page.execute_script("return document.getElementById('run-progress').value") == 1
    until(page, lambda d: any("prompt-to-audio" in row and "COMPLETED" in row for row in history_rows(d)))
    screenshot(page, shots / "playground-prompt-to-audio.png")
    assert console_errors(page) == []

    # the key was entered once: a reload keeps it for this tab and loads the endpoints with it
    page.refresh()
    until(page, lambda d: d.find_elements(By.LINK_TEXT, "prompt-to-audio"))
    assert page.find_element(By.NAME, "api_key").get_attribute("value") == KEY
    assert page.execute_script("return sessionStorage.getItem('acestep-playground-api-key')") == KEY
    until(page, lambda d: history_rows(d))
    assert console_errors(page) == []


def test_an_editing_endpoint_takes_an_uploaded_file(page, tmp_path, shots):
    from selenium.webdriver.common.by import By

    clip = tmp_path / "clip.wav"
    t = np.arange(2 * 44100) / 44100
    soundfile.write(clip, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32), 44100)
    form = open_form(page, "audio-inpaint")
    form.find_element(By.CSS_SELECTOR, "input[type=file][name=audio_url]").send_keys(str(clip))
    fill(form, {"tags": "piano, calm", "start_time": "0", "end_time": "1", "number_of_steps": "3", "seed": "5"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    audio = finished_audio(page)
    info = fetched_wav(audio.get_attribute("src"))
    assert info.samplerate == 48000 and abs(info.duration - 2.0) < 0.1  # the uploaded song's length
    assert json.loads(page.find_element(By.ID, "run-json").text)["seed"] == 5
    screenshot(page, shots / "playground-audio-inpaint.png")
    assert console_errors(page) == []


def test_validation_errors_show_next_to_their_field(page, server, shots):
    from selenium.webdriver.common.by import By

    form = open_form(page, "prompt-to-audio")
    before = httpx.get(f"{server.base_url}/requests", headers=AUTH).json()["requests"]
    # out of the schema's bounds: caught in the page, nothing is sent
    fill(form, {"prompt": "a song", "duration": "1", "number_of_steps": "3"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    duration_error = form.find_element(By.ID, "form-prompt-to-audio-duration-error")
    until(page, lambda d: duration_error.text)
    assert duration_error.text == "Must be at least 5."
    assert form.find_element(By.NAME, "duration").get_attribute("aria-invalid") == "true"
    assert httpx.get(f"{server.base_url}/requests", headers=AUTH).json()["requests"] == before
    # a rule only the server knows (prompt length): its 422 is shown at the field it names
    fill(form, {"duration": "5"})
    prompt = form.find_element(By.NAME, "prompt")
    page.execute_script("arguments[0].value = 'x'.repeat(5001)", prompt)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    prompt_error = form.find_element(By.ID, "form-prompt-to-audio-prompt-error")
    until(page, lambda d: prompt_error.text)
    assert "at most 5000 characters" in prompt_error.text and duration_error.text == ""
    assert prompt.get_attribute("aria-invalid") == "true"
    page.execute_script("arguments[0].value = 'a song'", prompt)
    screenshot(page, shots / "playground-validation.png")
    errors = console_errors(page)  # the browser reports the refused request itself, and nothing else
    assert len(errors) == 1 and "422" in errors[0], errors


def test_a_running_request_is_cancelled_from_the_page(page, server, shots):
    from selenium.webdriver.common.by import By

    form = open_form(page, "prompt-to-audio")
    # 60 steps of a 30 s song: about 0.2 s a step on the tiny model, so it is cancelled mid-run
    fill(form, {"prompt": "a long one", "duration": "30", "number_of_steps": "60", "seed": "3"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(page, lambda d: status_text(d).startswith("Running ("))  # a step was logged: the bar moves
    assert 0 < page.execute_script("return document.getElementById('run-progress').value") < 1
    page.find_element(By.ID, "run-cancel").click()
    until(page, lambda d: status_text(d) == "Cancelled")
    request_id = page.find_element(By.ID, "run-request-id").text
    status = httpx.get(f"{server.base_url}/fal-ai/ace-step/requests/{request_id}/status", headers=AUTH).json()
    assert status["error_type"] == "request_cancelled"
    assert not page.find_element(By.ID, "run-cancel").is_displayed()
    until(page, lambda d: any("CANCELLED" in row for row in history_rows(d)))
    screenshot(page, shots / "playground-cancel.png")
    assert console_errors(page) == []


# -- a family that lands later: its schema alone makes its form ---------------------------------------


class Adapter(BaseModel):
    path: str = Field(description="Adapter file.")
    scale: float = Field(1.0, ge=0, le=2)


class Mode(StrEnum):
    calm = "calm"
    loud = "loud"


class LaterInput(RequestModel):
    prompt: str = Field(description="What to make.")
    loras: list[Adapter] = Field(default_factory=list, max_length=3, description="Adapters to apply.")
    tags: list[str] = Field(default_factory=list)
    mode: Mode = Mode.calm
    strength: float | None = Field(None, gt=0, lt=1)
    seed: int | None = None


class RecordingRunner:
    """Keeps every dispatched job queued (nothing runs it): the page shows its queue position."""

    def __init__(self):
        self.jobs = []

    def dispatch(self, job):
        self.jobs.append(job)

    def wait(self, job, timeout):
        pass

    def cancel(self, job):
        pass


@pytest.fixture(scope="module")
def later_server(tmp_path_factory):
    import uvicorn

    later = SimpleNamespace(name="later-family", app_name="later-app", title="A family that lands later",
                            endpoints=(Endpoint("later-endpoint", "make", LaterInput, LaterInput, run=None,
                                                summary="Make", description="Makes.", family="later-family"),))
    runner = RecordingRunner()
    queue = QueueService(SqliteJobStore(tmp_path_factory.mktemp("later")), runner)
    host = Host(queue, Keys([KEY]), Settings(), EndpointRegistry([V1, later]), open_file=lambda name: None,
                health=lambda: {"status": "ok"})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_web_app(host), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30)
    yield SimpleNamespace(base_url=f"http://127.0.0.1:{port}", runner=runner)
    server.should_exit = True
    thread.join(10)


def test_a_later_familys_form_handles_lists_of_objects_and_64_bit_seeds(later_server, driver):
    from selenium.webdriver.common.by import By

    driver.get(f"{later_server.base_url}/playground")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    driver.find_element(By.NAME, "api_key").send_keys(KEY)
    until(driver, lambda d: d.find_elements(By.LINK_TEXT, "later-endpoint"))
    headings = driver.find_elements(By.CSS_SELECTOR, "#endpoints h2")
    assert [h.get_attribute("textContent") for h in headings] == ["acestep-v1", "later-family"]
    console_errors(driver)
    form = open_form(driver, "later-endpoint")
    loras = form.find_element(By.NAME, "loras")
    assert loras.tag_name == "textarea"
    assert "path (string, required), scale (number 0 to 2)" in form.find_element(By.ID, "form-later-endpoint-loras-help").text
    assert [o.text for o in form.find_elements(By.CSS_SELECTOR, "[name=mode] option")] == ["calm", "loud"]
    fill(form, {"prompt": "x", "loras": '[{"path": "a", ', "tags": "one\ntwo", "strength": "1",
                "seed": "9223372036854775807"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(driver, lambda d: form.find_element(By.ID, "form-later-endpoint-loras-error").text)
    assert form.find_element(By.ID, "form-later-endpoint-loras-error").text.startswith("Not valid JSON")
    assert form.find_element(By.ID, "form-later-endpoint-strength-error").text == "Must be less than 1."
    assert later_server.runner.jobs == []  # nothing was sent
    fill(form, {"loras": '[{"path": "a.safetensors", "scale": 0.5}]', "strength": "0.25"})
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(driver, lambda d: later_server.runner.jobs)
    (job,) = later_server.runner.jobs
    assert job.endpoint == "later-endpoint"
    assert job.input == {"prompt": "x", "loras": [{"path": "a.safetensors", "scale": 0.5}], "tags": ["one", "two"],
                         "mode": "calm", "strength": 0.25, "seed": 9223372036854775807}  # every digit of the seed
    until(driver, lambda d: status_text(d) == "In queue (position 0)")
    assert console_errors(driver) == []
