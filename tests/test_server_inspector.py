"""The inspector page in headless Chromium, as a person uses it: the token typed in, a model chosen, CIFAR-10
test images picked from disk; the labels it shows equal the REST API's, its overlays are drawn, its pages turn,
and a screenshot of it is taken (written to $MISCAUSE_INSPECTOR_SCREENSHOT too when set: docs/inspector.png)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_server_support import WAIT, loopback, make_repository

from miscause.server.app import BackgroundServer

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

TOKEN = "inspector-token-9d0e"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = 2  # 20 images: two pages of 12
WINDOW = (1200, 900)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("Chromium or chromedriver not installed (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pictures(cifar10_root, tmp_path_factory) -> list[Path]:
    """Test images of every class, as PNG (lossless, so the browser and the API see the same pixels)."""
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for name in CLASSES:
        for source in sorted((cifar10_root / "test" / name).iterdir())[:PER_CLASS]:
            path = folder / f"{name}-{source.stem}.png"
            Image.open(source).convert("RGB").save(path)
            paths.append(path)
    return paths


def api_labels(port: int, paths: list[Path], parameters: dict, model: str = "beta") -> dict[str, tuple[str, str, str]]:
    """Per file name: (label, erased label, corrected label) from the REST API, for the same images and
    parameters (JSON tensors, where the page sends binary ones), ten images a request."""
    if len(paths) > 10:
        return {**api_labels(port, paths[:10], parameters, model), **api_labels(port, paths[10:], parameters, model)}
    images = np.stack([np.asarray(Image.open(path)) for path in paths])
    outputs = ["LABEL", "ERASED_LABEL", "CORRECTED_LABEL"]
    header = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": list(images.shape),
                                     "data": images.ravel().tolist()}],
                         "outputs": [{"name": name} for name in outputs], "parameters": parameters}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", data=header,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        answer = {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
    return {path.name: tuple(CLASSES[answer[name][i]] for name in outputs) for i, path in enumerate(paths)}


def shown(driver) -> dict[str, tuple[str, str, str]]:
    cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
    return {card.find_element(By.TAG_NAME, "h2").text: (card.get_attribute("data-label"),
                                                         card.get_attribute("data-erased-label"),
                                                         card.get_attribute("data-corrected-label"))
            for card in cards}


CANVAS_STATS = """
return [...document.querySelectorAll('#results canvas')].map((canvas) => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let opaque = 0, colours = new Set();
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 255) opaque++;
    colours.add(data[i] * 65536 + data[i + 1] * 256 + data[i + 2]);
  }
  return {view: canvas.className, pixels: canvas.width * canvas.height, opaque: opaque, colours: colours.size,
          sum: data.reduce((a, b) => a + b, 0)};
});
"""


def test_inspector_shows_the_apis_labels_and_overlays(repo_server, browser, pictures, tmp_path):
    server = repo_server
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"http://127.0.0.1:{server.http_port}/")
    status = browser.find_element(By.ID, "status")
    wait.until(lambda _: "set the token" in status.text)  # the API refuses the page until the token is given
    browser.find_element(By.ID, "token").send_keys(TOKEN + "\t")
    wait.until(lambda _: len(Select(browser.find_element(By.ID, "model")).options) == 2)
    Select(browser.find_element(By.ID, "model")).select_by_value("beta")
    wait.until(lambda _: status.text.startswith("beta:"))
    parameters = {"saliency_method": "gradient", "top_percent": 10.0, "box": 5}  # beta's policy
    assert browser.find_element(By.ID, "top-percent").get_attribute("value") == "10"
    browser.find_element(By.ID, "files").send_keys("\n".join(str(path) for path in pictures))
    wait.until(lambda _: "inspected" in status.text or "error" in status.get_attribute("class"))
    assert status.text.startswith(f"{len(pictures)} image(s) inspected"), status.text

    expected = api_labels(server.http_port, pictures, parameters)
    first = shown(browser)
    assert len(first) == 12 and "page 1 of 2" in browser.find_element(By.ID, "page").text
    stats = browser.execute_script(CANVAS_STATS)
    assert len(stats) == 3 * 12
    for canvas in stats:
        assert canvas["opaque"] == canvas["pixels"] == 32 * 32 and canvas["colours"] > 50, canvas
    images, saliency = stats[0::3], stats[1::3]
    assert all(a["sum"] != b["sum"] for a, b in zip(images, saliency, strict=True))  # the map is drawn over it
    screenshot = tmp_path / "inspector.png"
    assert browser.save_screenshot(str(screenshot))
    with Image.open(screenshot) as picture:
        assert picture.size[0] >= WINDOW[0] * 0.9 and picture.size[1] >= WINDOW[1] * 0.5
        assert len(picture.convert("RGB").getcolors(1 << 24)) > 500  # images drawn, not a blank page
    if os.environ.get("MISCAUSE_INSPECTOR_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["MISCAUSE_INSPECTOR_SCREENSHOT"])

    browser.find_element(By.ID, "next").click()
    wait.until(lambda _: "page 2 of 2" in browser.find_element(By.ID, "page").text)
    second = shown(browser)
    assert len(second) == len(pictures) - 12
    assert {**first, **second} == expected


def test_inspector_offers_the_repositorys_sample_set(repo_server, browser, pictures):
    server = repo_server
    folder = Path(server.settings.model_repository) / "alpha" / "samples"
    folder.mkdir(exist_ok=True)
    chosen = pictures[::7]
    for path in chosen:
        shutil.copyfile(path, folder / path.name)
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"http://127.0.0.1:{server.http_port}/")
    token = browser.find_element(By.ID, "token")
    if not token.get_attribute("value"):  # kept for the tab by the test before
        token.send_keys(TOKEN + "\t")
    status = browser.find_element(By.ID, "status")
    wait.until(lambda _: status.text.startswith("alpha:"))
    button = browser.find_element(By.ID, "samples")
    assert button.is_displayed() and f"{len(chosen)} sample" in button.text
    button.click()
    wait.until(lambda _: "inspected" in status.text or "error" in status.get_attribute("class"))
    assert status.text.startswith(f"{len(chosen)} image(s) inspected"), status.text
    parameters = {"saliency_method": "gradient", "top_percent": 5.0, "box": 3}  # alpha has no policy
    assert shown(browser) == api_labels(server.http_port, chosen, parameters, "alpha")


@pytest.fixture(scope="module")
def repo_server(tmp_path_factory):
    repo = make_repository(tmp_path_factory.mktemp("repo"), ("alpha", "beta"))
    with BackgroundServer(loopback(repo, token=TOKEN)) as server:
        yield server
