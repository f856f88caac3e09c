"""Passkeys on the hosted pages in a real browser: Debian's Chromium with its virtual
authenticator (DevTools protocol `WebAuthn`: CTAP2, internal transport, resident keys, user
verification), driven by Playwright for Python on http://localhost, where browsers allow
WebAuthn without TLS. crates/server/tests/api/browser.rs starts the service (its relying party
`localhost` on its port) and runs this with the interop virtualenv's python and:
  PORTCULLIS_URL      the public listener as http://localhost:PORT
  SCREENSHOTS         where each step's screenshot goes
  CHROMIUM            the browser (default /usr/bin/chromium)
It prints `ok - STEP` per step and exits non-zero, with a screenshot, when a step does not hold.
"""

import json
import sys
import traceback
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from chromium import env, launch


BASE = env("PORTCULLIS_URL")
SCREENSHOTS = Path(env("SCREENSHOTS"))
SCREENSHOTS.mkdir(parents=True, exist_ok=True)
PASSWORD = "correct horse battery staple"


def shot(page, name):
    page.screenshot(path=str(SCREENSHOTS / f"passkeys-{name}.png"), full_page=True)


def submit(page, action):
    """Runs `action` (a click) that posts a form; the URL of the page it leads to."""
    with page.expect_navigation():
        action()
    return page.url


def notice(page):
    return page.text_content("#notice") or ""


def presence(state, on):
    """Whether the virtual authenticator answers by itself. On, it also answers the login page's
    autofill request the moment the page loads, so it is off while a step means to use the
    password."""
    state["cdp"].send(
        "WebAuthn.setAutomaticPresenceSimulation",
        {"authenticatorId": state["authenticator"], "enabled": on},
    )


def sign_out(state):
    page = state["page"]
    presence(state, False)
    page.goto(f"{BASE}/account")
    submit(page, lambda: page.click("header button"))
    assert page.url.endswith("/login"), page.url


def credentials(state):
    return state["cdp"].send(
        "WebAuthn.getCredentials", {"authenticatorId": state["authenticator"]}
    )["credentials"]


def signs_in_with_a_password_and_has_no_passkey_yet(state):
    body = json.dumps({"username": "dana", "password": PASSWORD}).encode()
    request = urllib.request.Request(
        f"{BASE}/v1/users", body, {"content-type": "application/json"}
    )
    assert urllib.request.urlopen(request).status == 201
    page = state["page"]
    page.goto(f"{BASE}/login")
    assert "webauthn" in page.get_attribute("input[name=username]", "autocomplete")
    page.fill("input[name=username]", "dana")
    page.fill("input[name=password]", PASSWORD)
    assert submit(page, lambda: page.click("#login button[type=submit]")).endswith("/account")
    assert "None yet" in page.text_content("#passkeys-status")
    shot(page, "01-account-without-passkeys")


def enrols_a_passkey_on_the_account_page(state):
    page = state["page"]
    page.fill("#add-passkey input[name=name]", "This laptop")
    page.fill("#add-passkey input[name=current_password]", PASSWORD)
    submit(page, lambda: page.click("#add-passkey button[type=submit]"))
    assert "Passkey “This laptop” added." in notice(page), notice(page)
    assert page.text_content("#passkey-list .passkey-name") == "This laptop"
    stored = credentials(state)
    assert len(stored) == 1 and stored[0]["isResidentCredential"], stored
    shot(page, "02-passkey-added")


def uses_the_passkey_as_the_second_factor_after_the_password(state):
    page = state["page"]
    sign_out(state)
    page.fill("input[name=username]", "dana")
    page.fill("input[name=password]", PASSWORD)
    submit(page, lambda: page.click("#login button[type=submit]"))
    assert page.is_visible("#use-passkey"), page.content()
    assert not page.is_visible("#second-factor"), "no code form without TOTP"
    shot(page, "03-second-factor")
    presence(state, True)
    assert submit(page, lambda: page.click("#use-passkey")).endswith("/account")


def signs_in_by_autofill_on_the_username_field(state):
    page = state["page"]
    sign_out(state)
    # The page asks for the browser's passkeys with conditional mediation as it loads; the
    # virtual authenticator answers with its one discoverable credential, as a person picking
    # it from the username field's suggestions does.
    presence(state, True)
    page.goto(f"{BASE}/login")
    page.wait_for_url(f"{BASE}/account")
    assert page.text_content("#username") == "dana"
    shot(page, "04-signed-in-by-autofill")


def signs_in_with_the_button(state, screenshot="05-signed-in-with-the-button"):
    page = state["page"]
    sign_out(state)
    options = f"{BASE}/v1/login/passkey/options"

    def answer_the_button(route, request):
        # The button replaces the autofill request with its own. The authenticator answers only
        # a request made while its presence is on, so presence goes on while the button's options
        # (the ones naming the account) are on their way to the page: before its request, and
        # after the autofill one has ended.
        if "dana" in (request.post_data or ""):
            presence(state, True)
        route.continue_()

    page.route(options, answer_the_button)
    page.fill("input[name=username]", "dana")
    assert submit(page, lambda: page.click("#passkey-sign-in")).endswith("/account")
    page.unroute(options, answer_the_button)
    last_used = page.text_content("#passkey-list tbody td:nth-child(3)")
    assert last_used != "never", last_used
    shot(page, screenshot)


def signs_in_with_the_button_pressed_before_autofill_starts(state):
    # A slow page may not have asked whether autofill is available when the person clicks. The
    # browser is made to answer that question only after a click, and the button must still end
    # the autofill request before making its own.
    state["page"].add_init_script(
        """
        const available = PublicKeyCredential.isConditionalMediationAvailable.bind(
          PublicKeyCredential);
        const clicked = new Promise((resolve) =>
          addEventListener("click", resolve, { once: true, capture: true }));
        PublicKeyCredential.isConditionalMediationAvailable = () => clicked.then(available);
        """
    )
    signs_in_with_the_button(state, "06-signed-in-with-the-button-pressed-early")


def removes_the_passkey(state):
    page = state["page"]
    page.fill("form.remove-passkey input[name=current_password]", PASSWORD)
    submit(page, lambda: page.click("form.remove-passkey button[type=submit]"))
    assert notice(page) == "Passkey removed.", notice(page)
    assert "None yet" in page.text_content("#passkeys-status")
    shot(page, "07-passkey-removed")
    # Without it, the password alone signs in again.
    sign_out(state)
    page.fill("input[name=username]", "dana")
    page.fill("input[name=password]", PASSWORD)
    assert submit(page, lambda: page.click("#login button[type=submit]")).endswith("/account")


STEPS = [
    signs_in_with_a_password_and_has_no_passkey_yet,
    enrols_a_passkey_on_the_account_page,
    uses_the_passkey_as_the_second_factor_after_the_password,
    signs_in_by_autofill_on_the_username_field,
    signs_in_with_the_button,
    signs_in_with_the_button_pressed_before_autofill_starts,
    removes_the_passkey,
]


def main():
    failed = False
    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1000, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        authenticator = cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )["authenticatorId"]
        state = {"page": page, "cdp": cdp, "authenticator": authenticator}
        for run in STEPS:
            name = run.__name__.replace("_", " ")
            try:
                run(state)
                print(f"ok - {name}", flush=True)
            except Exception:
                failed = True
                print(f"not ok - {name}\n{traceback.format_exc()}", flush=True)
                try:
                    shot(page, "failed")
                except Exception:
                    pass
                break
        browser.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
