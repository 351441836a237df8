"""The labeling page in a real browser (Debian's chromium, driven by Playwright) against a
real server and the real trainer loop: a person signs in with their token, labels MNIST
digits odd/even by keys, skips, undoes, adds a class by typing, and sees the new version
and live accuracy appear; then again by touch on a phone-sized screen.

Screenshots of both go to $TLSERVE_SCREENSHOTS when set (`make screenshots` writes the
ones in docs/), else to the test's temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.odd_even import Task, parity, png, wait_for_model_covering
from tests.support import ServerThread, chromium_or_skip, label_samples
from tests.training import Loop, on_pretrained
from tlserve.clients import TlserveClient

pytestmark = pytest.mark.slow  # TensorFlow and a browser

TOKEN = "label-token-for-the-page-0123456789"
BOOTSTRAP = 10
PAGE_LABELS = 12
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


@pytest.fixture
def system(tmp_path: Path, pretrained: Path) -> Iterator[ServerThread]:
    server = ServerThread(
        tmp_path,
        keep_max_per_second=0.0,
        label_tokens=TOKEN,
        anonymous_role="none",
        # One person teaches the new classes here; with credentials `auto` would wait
        # for five labelers.
        new_class_policy="open",
    ).start()
    settings = on_pretrained(tmp_path, pretrained, min_new_labels=10, poll_seconds=0.2)
    try:
        with Loop(settings):
            yield server
    finally:
        server.stop()


def _predict_unlabeled(client: TlserveClient, task: Task, indices: object) -> dict[str, str]:
    """Kept predictions of digits nobody labeled: prediction id -> the right answer."""
    chosen = list(indices)  # type: ignore[call-overload]
    result = client.predict([png(task.images[i]) for i in chosen], top_k=1)
    return {
        p.prediction_id: parity(task.digits[i])
        for p, i in zip(result.predictions, chosen, strict=True)
    }


def _screenshots() -> Path | None:
    folder = os.environ.get("TLSERVE_SCREENSHOTS")
    return Path(folder) if folder else None


@pytest.mark.timeout(900)
def test_labeling_in_the_browser_teaches_the_model(system: ServerThread, tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415

    task = Task.load()
    pool = iter(task.pool)
    with TlserveClient(system.target, token=TOKEN, timeout=60) as client:
        # The first version: ten labels sent by a script.
        for digit in range(BOOTSTRAP):
            index = next(i for i in pool if task.digits[i] % 2 == digit % 2)
            client.submit_feedback(parity(digit), image=png(task.images[index]))
        first = wait_for_model_covering(client, BOOTSTRAP)
        truth = _predict_unlabeled(client, task, [next(pool) for _ in range(60)])
        shots = _screenshots() or tmp_path

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{system.http_url}/label")

            # Signing in: the API answers 401 until the token is given.
            expect(page.locator("#sign-in")).to_be_visible()
            page.fill("#token", "not-the-token-0123456789")
            page.press("#token", "Enter")
            expect(page.locator("#sign-in-error")).to_contain_text("not valid")
            page.fill("#token", TOKEN)
            page.press("#token", "Enter")
            expect(page.locator(".card").first).to_be_visible()
            expect(page.locator("#served-version")).to_have_text(first)

            key = {
                label: page.locator(f'.chip[data-label="{label}"] kbd').inner_text()
                for label in ("even", "odd")
            }

            def focused_id() -> str:
                return page.locator(".card.focused").get_attribute("data-prediction-id") or ""

            def label_focused() -> None:
                # When a batch is done the page fetches the next one by itself.
                expect(page.locator('.card.focused[data-state="open"]')).to_be_visible()
                prediction_id = focused_id()
                page.keyboard.press(key[truth[prediction_id]])
                expect(
                    page.locator(f'.card[data-prediction-id="{prediction_id}"]')
                ).to_have_attribute("data-state", "labeled")

            def labels_stored() -> int:
                return sum(label_samples(client.list_labels()).values())

            # Skip one, label three by keys, undo the last: two labels stay.
            skipped = focused_id()
            page.keyboard.press(" ")
            expect(page.locator(f'.card[data-prediction-id="{skipped}"]')).to_have_attribute(
                "data-state", "skipped"
            )
            for _ in range(3):
                label_focused()
            labeled_last = page.locator('.card[data-state="labeled"]').last
            undone = labeled_last.get_attribute("data-prediction-id")
            page.keyboard.press("Backspace")
            expect(page.locator(f'.card[data-prediction-id="{undone}"]')).to_have_attribute(
                "data-state", "open"
            )
            assert labels_stored() == BOOTSTRAP + 2

            # A new class by typing, then undone: it never reaches training.
            page.keyboard.press("/")
            page.keyboard.type("seven")
            page.keyboard.press("Enter")
            expect(page.locator('.chip[data-label="seven"]')).to_be_visible()
            expect(
                page.locator('.card[data-state="labeled"] .verdict', has_text="seven")
            ).to_be_visible()
            page.click("#undo")
            expect(page.locator("#toast")).to_contain_text("Undone: seven")
            assert "seven" not in label_samples(client.list_labels())

            # Enough labels for a run: the page shows the version it brings.
            while labels_stored() < BOOTSTRAP + PAGE_LABELS:
                label_focused()
            total = str(BOOTSTRAP + PAGE_LABELS)
            expect(page.locator("#labels-today")).to_have_text(total, timeout=15_000)
            expect(page.locator("#served-version")).not_to_have_text(first, timeout=240_000)
            expect(page.locator("#curve")).not_to_have_attribute("data-versions", "1")
            assert int(page.locator("#curve").get_attribute("data-versions") or 0) >= 2

            # On a phone: tap the right guess under an image the new version answered.
            truth |= _predict_unlabeled(client, task, [next(pool) for _ in range(20)])
            phone = browser.new_page(**PHONE)
            phone.goto(f"{system.http_url}/label")
            phone.fill("#token", TOKEN)
            phone.press("#token", "Enter")
            card = phone.locator(".card.focused")
            expect(card).to_be_visible()
            prediction_id = card.get_attribute("data-prediction-id") or ""
            card.locator(f'.guess[data-label="{truth[prediction_id]}"]').tap()
            expect(phone.locator(f'.card[data-prediction-id="{prediction_id}"]')).to_have_attribute(
                "data-state", "labeled"
            )
            phone.evaluate("window.scrollTo(0, 0)")
            phone.screenshot(path=shots / "label-page-phone.png")
            # The new version's live accuracy, on the desktop page's next poll.
            expect(page.locator("#live-accuracy")).to_contain_text("% of 1", timeout=15_000)
            # Estimated accuracy of the answers so far; 22 labels are too few for a drift
            # sketch (40), and no experiment runs.
            expect(page.locator("#estimated-accuracy")).to_contain_text("% of ")
            expect(page.locator("#drift-state")).to_have_text("no reference")
            expect(page.locator("#experiment-stat")).to_be_hidden()
            # Every holdout point carries its interval.
            dots = page.locator("#curve .holdout-dot").count()
            assert page.locator("#curve .holdout-interval").count() == dots
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=shots / "label-page-desktop.png", full_page=True)
            assert not errors, errors
            browser.close()
        assert labels_stored() == BOOTSTRAP + PAGE_LABELS + 1
    for name in ("label-page-desktop.png", "label-page-phone.png"):
        assert (shots / name).stat().st_size > 10_000
