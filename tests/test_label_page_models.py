"""The labeling page per model, in a real browser (Debian's chromium, driven by Playwright)
against a real server with three models: /label lists the models the credential may use,
/label/<model> shows and labels that model only, a token scoped to one model goes
straight to its page, and an unknown model is told after signing in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.colour_model import COLOURS
from tests.support import (
    ServerThread,
    chromium_or_skip,
    http_call,
    label_samples,
    serve_three_models,
    shifted,
    solid_image,
)
from tlserve.clients import TlserveClient

EVERY_MODEL = "label-token-for-every-model-0123456789"
SHIFT_TWO_ONLY = "label-token-for-shift-two-0123456789"


@pytest.fixture
def three_models(tmp_path: Path) -> Iterator[ServerThread]:
    server = serve_three_models(
        tmp_path,
        f"label {EVERY_MODEL} ann\nlabel@shift-two {SHIFT_TWO_ONLY} bob\n",
        keep_max_per_second=0.0,
        anonymous_role="none",
    )
    try:
        yield server
    finally:
        server.stop()


def test_the_page_of_a_model_is_served_for_any_well_formed_name(
    three_models: ServerThread,
) -> None:
    url = three_models.http_url
    chooser = http_call(f"{url}/label")
    for path in ("/label/shift-one", "/label/tlserve", "/label/not-served-but-well-formed"):
        page = http_call(url + path)
        # The same page: whether the model exists is the API's to say, after the credential.
        assert page.status == 200 and page.body == chooser.body, path
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert http_call(f"{url}/label/Bad.Name").status == 404
    assert http_call(f"{url}/label/app.js").headers["Content-Type"].startswith("text/javascript")


def test_each_model_is_labeled_on_its_own_page(three_models: ServerThread) -> None:
    chromium = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415

    url, registry = three_models.http_url, three_models.registry
    with TlserveClient(three_models.target, token=EVERY_MODEL) as client:
        # Kept predictions of shift-one: its page suggests them, no other page does.
        answered = client.predict([solid_image(c) for c in COLOURS], model="shift-one")
        answer_of = {p.prediction_id: p.top[0].label for p in answered.predictions}
        # Shift-one's head answers every colour as another one.
        assert list(answer_of.values()) == [shifted(1)[c] for c in COLOURS]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            page.goto(f"{url}/label")
            page.fill("#token", EVERY_MODEL)
            page.press("#token", "Enter")
            links = page.locator("#model-list a")
            expect(links).to_have_text(["tlserve", "shift-one", "shift-two"])
            links.nth(1).click()

            expect(page).to_have_url(f"{url}/label/shift-one")
            expect(page.locator("#model-name")).to_have_text("shift-one")
            expect(page.locator("#served-version")).to_have_text(
                registry.for_model("shift-one").current() or ""
            )
            card = page.locator(".card.focused")
            expect(card).to_be_visible()
            expect(page.locator(".card")).to_have_count(len(COLOURS))
            # Each card is one of shift-one's kept predictions, with that head's guess first.
            for shown in page.locator(".card").all():
                prediction_id = shown.get_attribute("data-prediction-id") or ""
                first_guess = shown.locator(".guess .name").first.inner_text()
                assert first_guess == answer_of[prediction_id]
            page.click('.chip[data-label="red"]')
            expect(page.locator('.card[data-state="labeled"]')).to_have_count(1)
            assert label_samples(client.list_labels(model="shift-one")) == {"red": 1}
            assert label_samples(client.list_labels()) == {}
            assert label_samples(client.list_labels(model="shift-two")) == {}

            # The default model's page has nothing to suggest: no prediction of its was kept.
            page.goto(f"{url}/label/tlserve")
            expect(page.locator("#model-name")).to_have_text("tlserve")
            expect(page.locator("#empty")).to_contain_text("Nothing to label")

            # A model the server does not serve: said after the credential, with the names.
            page.goto(f"{url}/label/no-such-model")
            expect(page.locator("#missing")).to_be_visible()
            expect(page.locator("#missing-message")).to_contain_text("shift-one")

            # A token for one model: /label opens that model's page, no list.
            scoped = browser.new_page()
            scoped.on("pageerror", lambda error: errors.append(str(error)))
            scoped.goto(f"{url}/label")
            scoped.fill("#token", SHIFT_TWO_ONLY)
            scoped.press("#token", "Enter")
            expect(scoped).to_have_url(f"{url}/label/shift-two")
            expect(scoped.locator("#model-name")).to_have_text("shift-two")
            expect(scoped.locator("#workspace")).to_be_visible()
            assert not errors, errors
            browser.close()
