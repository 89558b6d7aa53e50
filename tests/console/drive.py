"""Drives the operator console in headless Chromium (Debian's chromium and
chromium-driver, through Selenium), as an operator would, by keyboard and
mouse only: signs in, retries a stuck saga and watches it finish, activates
and rolls back a plugin version, creates a tenant and its key, and sees that
tenant's first order succeed. Run by tests/console.rs, which sets up the host
and checks the books afterwards; every wait is for a condition, never a
fixed time.

Environment: OMS_URL, OMS_TOKEN, OMS_STUCK_ORDER (a globex order whose saga
is STUCK), OMS_SHOTS (where screenshots go). Prints one JSON line at the end.
"""

import json
import os
import sys
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["OMS_URL"]
TOKEN = os.environ["OMS_TOKEN"]
STUCK = os.environ["OMS_STUCK_ORDER"]
SHOTS = os.environ["OMS_SHOTS"]
# Generous: only a broken page or host takes this long.
DEADLINE = 60


def step(what):
    print(f"console: {what}", file=sys.stderr, flush=True)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def fits(d):
    """Nothing wider than the window: readable without sideways scrolling."""
    return d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")


def text_in(d, css, text):
    return WebDriverWait(d, DEADLINE).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def flash_done(d, label):
    text_in(d, "#flash", f"{label}: done")


def main():
    d = browser()
    wait = WebDriverWait(d, DEADLINE)
    try:
        step("sign in")
        d.get(f"{URL}/console")
        box = wait.until(ec.element_to_be_clickable((By.ID, "token")))
        box.send_keys(TOKEN, Keys.ENTER)  # the keyboard alone signs in
        wait.until(ec.visibility_of_element_located((By.ID, "nav")))
        text_in(d, "#who", "bootstrap-admin")

        step("find the stuck saga and retry it")
        row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-order="{STUCK}"]')))
        assert fits(d), "the sagas page is wider than 1280 px"
        d.save_screenshot(os.path.join(SHOTS, "console-stuck-sagas.png"))
        row.find_element(By.XPATH, ".//button[text()='Retry']").click()
        flash_done(d, f"retry {STUCK}")
        d.get(f"{URL}/console#/order/globex/{STUCK}")
        # The page follows the saga while it runs: no reload here. Its
        # compensation done, the order ends cancelled (a failed step, not a
        # business rejection).
        text_in(d, "#saga-state", "CANCELLED")
        text_in(d, "#order-view", "order.cancelled")
        d.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        d.save_screenshot(os.path.join(SHOTS, "console-order-timeline.png"))

        step("activate a staged plugin version, then roll back")
        d.get(f"{URL}/console#/plugins?tenant=acme&slot=guardrail")
        text_in(d, "#active-version", "Active: version 1")
        staged = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, 'tr[data-version="2"] button')))
        staged.click()
        text_in(d, "#active-version", "Active: version 2")
        wait.until(ec.element_to_be_clickable((By.ID, "rollback"))).click()
        text_in(d, "#active-version", "Active: version 1")

        step("create a tenant and a key for it")
        d.get(f"{URL}/console#/tenants")
        manifest = wait.until(ec.presence_of_element_located((By.ID, "new-tenant-manifest")))
        Select(d.find_element(By.ID, "copy-from")).select_by_value("acme")
        wait.until(lambda d: '"payment-provider"' in manifest.get_attribute("value"))
        edited = manifest.get_attribute("value").replace("********", "sk_test_initech")
        manifest.clear()
        manifest.send_keys(edited)
        d.find_element(By.ID, "new-tenant-id").send_keys("initech")
        d.find_element(By.ID, "new-tenant-name").send_keys("Initech")
        d.find_element(By.CSS_SELECTOR, "#new-tenant button[type=submit]").click()
        text_in(d, "h1", "Initech")
        d.find_element(By.ID, "key-name").send_keys("web shop")
        for scope in ("orders:read", "orders:write"):
            d.find_element(By.CSS_SELECTOR, f'#new-key input[value="{scope}"]').click()
        d.find_element(By.CSS_SELECTOR, "#new-key button[type=submit]").click()
        secret = wait.until(ec.presence_of_element_located((By.ID, "new-secret"))).text.strip()
        assert secret.startswith("omsk_"), secret

        step("the new tenant's first order, as its client places it, seen in the console")
        order = {
            "customerId": "first-customer", "currency": "USD",
            "items": [{"sku": "WIDGET-1", "quantity": 1, "unitPrice": 1999}],
            "shippingAddress": {"line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "country": "US"},
            "paymentMethod": {"token": "tok_visa"},
        }
        req = urllib.request.Request(f"{URL}/api/v1/orders", data=json.dumps(order).encode(), method="POST", headers={
            "content-type": "application/json", "x-tenant-id": "initech", "authorization": f"Bearer {secret}"})
        placed = json.load(urllib.request.urlopen(req))
        d.get(f"{URL}/console#/order/initech/{placed['id']}")
        text_in(d, "#saga-state", "COMPLETED")

        step("phone width")
        d.set_window_size(390, 844)
        d.get(f"{URL}/console#/orders?tenant=initech")
        text_in(d, "#main", placed["id"])
        assert fits(d), "the orders page is wider than a phone"
        print(json.dumps({"stuck": STUCK, "initechOrder": placed["id"]}), flush=True)
    except Exception:
        d.save_screenshot(os.path.join(SHOTS, "console-failure.png"))
        print(d.find_element(By.TAG_NAME, "body").text, file=sys.stderr)
        raise
    finally:
        d.quit()


if __name__ == "__main__":
    main()
