"""test_studio - the web Studio (studio/, served at /studio/ by the real
lighttpd with etc/lighttpd/astromesh-cloud-studio.conf) driven in headless
Chromium through Selenium, against a real daemon and the fake provider.

What a user does and sees: sign in (dev login), create an agent through the
five-step wizard with a server field error shown beside its field and
fixed, deploy and see the compiled YAML, talk to the agent in the console
over the WebSocket stream and see the tokens arrive one after another, keep
the session across turns, pause, edit, redeploy, read the usage of the runs
just made, delete with a confirmation; and the access token (auth.access_ttl
60 s here) expires on the way and is refreshed without the page noticing.

Each failing test saves a screenshot in its instance's directory
(tests/tmp/...). With ASTROMESH_STUDIO_SHOTS=DIR set, the test also saves
the README's screenshots (studio-agents.png, studio-console.png) there.
Skipped (77 is not used: the harness's main exits 0 or 1) only if Chromium,
chromedriver or Selenium is missing: scripts/install-deps installs them.
"""

import json
import os
import re
import shutil
import urllib.request
import sys
import time
import unittest

from harness import BUILDDIR, InstanceTestCase, main, outcome_failed
from fakeprov import FakeProvider, provider_config

try:
    import selenium  # noqa: F401
except ImportError:          # a Python of its own (pyenv): Debian's package
    sys.path.append("/usr/lib/python3/dist-packages")
try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.support.ui import WebDriverWait, Select
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
except ImportError:
    webdriver = None

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT = 20.0          # every wait on the page is bounded by this
ACCESS_TTL = 60      # the smallest the config allows
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
         "india", "juliet", "kilo", "lima"]


@unittest.skipIf(webdriver is None or not os.access(CHROMEDRIVER, os.X_OK),
                 "python3-selenium or chromium-driver missing (scripts/install-deps)")
class StudioTest(InstanceTestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeProvider(log_dir=os.path.join(BUILDDIR, "tests", "tmp"))
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.config = {"providers": provider_config(cls.fake),
                      "auth": {"access_ttl": ACCESS_TTL}}
        super().setUpClass()

    def setUp(self):
        self.fake.reset()
        opts = webdriver.ChromeOptions()
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1100,900", "--disable-extensions"):
            opts.add_argument(a)
        service = ChromeService(executable_path=CHROMEDRIVER)
        self.driver = webdriver.Chrome(options=opts, service=service)
        self.driver.set_page_load_timeout(WAIT)
        self.driver.set_script_timeout(WAIT)
        self.addCleanup(self.driver.quit)

    def tearDown(self):
        if outcome_failed(self):
            path = os.path.join(self.inst.dir, self.id().split(".")[-1] + ".png")
            try:
                self.driver.save_screenshot(path)
                print("screenshot: %s" % path, file=sys.stderr)
                for entry in self.driver.get_log("browser"):
                    print("browser: %s" % entry, file=sys.stderr)
            except WebDriverException:
                pass
        super().tearDown()

    # -- helpers -----------------------------------------------------------------
    def wait(self, cond, what, timeout=WAIT):
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: cond(), message="waited %.0fs for %s" % (timeout, what))

    def css(self, sel):
        return self.driver.find_element(By.CSS_SELECTOR, sel)

    def all(self, sel):
        return self.driver.find_elements(By.CSS_SELECTOR, sel)

    def visible(self, sel, what=None):
        def find():
            els = [e for e in self.all(sel) if e.is_displayed()]
            return els[0] if els else None
        return self.wait(find, what or sel)

    def type_into(self, field, text):
        el = self.visible('[data-field="%s"]' % field)
        el.clear()
        el.send_keys(text)

    def next_step(self, n):
        self.css("#next").click()
        self.wait(lambda: "Step %d of 5" % n in self.css("#step-title").text, "step %d" % n)

    def row(self, name):
        rows = self.all('#agents tr[data-agent="%s"]' % name)
        return rows[0] if rows else None

    def state(self, name):
        r = self.row(name)
        return r.find_element(By.CSS_SELECTOR, "[data-state]").text if r else None

    def action(self, name, what):
        self.visible('#agents tr[data-agent="%s"] button[data-action="%s"]' % (name, what)).click()

    def actions_of(self, name):
        return sorted(b.get_attribute("data-action")
                      for b in self.row(name).find_elements(By.CSS_SELECTOR, "button"))

    def shot(self, name):
        d = os.environ.get("ASTROMESH_STUDIO_SHOTS")
        if d:
            self.driver.save_screenshot(os.path.join(d, name))

    def goto(self, hash_):
        self.driver.execute_script("location.hash = arguments[0]", hash_)

    def sign_in(self):
        self.driver.get(self.inst.base_url + "/studio/")
        self.visible("#dev-login", "the dev sign-in form (GET /config says dev_login)")
        email = self.unique_email("studio")
        self.type_into("email", email)
        self.type_into("name", "Studio User")
        self.css("#dev-login button[type=submit]").click()
        self.visible("#nav a[href='#/agents']", "the signed-in navigation")
        return email

    def agent_answers(self):
        return [e.text for e in self.all("#transcript .msg-agent .answer")]

    def talk(self, text):
        """Send text in the console; return the successive partial answers seen."""
        before = len(self.all("#transcript .msg-agent[data-done]"))
        q = self.visible("#query")
        q.send_keys(text)
        self.css("#send").click()
        seen = []
        deadline = time.monotonic() + WAIT
        while len(self.all("#transcript .msg-agent[data-done]")) <= before:
            self.assertLess(time.monotonic(), deadline, "no done event for %r" % text)
            errors = self.all("#transcript .msg-error")
            self.assertFalse(errors, errors and errors[0].text)
            answers = self.agent_answers()
            if len(answers) > before and (not seen or seen[-1] != answers[-1]):
                seen.append(answers[-1])
            time.sleep(0.02)
        seen.append(self.agent_answers()[-1])
        return seen

    # -- the test ----------------------------------------------------------------
    def test_a_user_creates_deploys_talks_pauses_edits_redeploys_and_deletes_an_agent(self):
        d = self.driver
        self.email = self.sign_in()
        signed_in_at = time.monotonic()
        first_token = d.execute_script("return document.body.dataset.refreshes || '0'")
        self.assertEqual(first_token, "0")

        # the wizard: a provider the server does not know, shown beside the model
        self.visible("a[href='#/new']").click()
        self.type_into("name", "support-bot")
        self.type_into("display_name", "Support Bot")
        self.type_into("step1.model", "acme/gpt-9")
        self.css("#next").click()
        err = self.visible('[data-error-for="step1.model"]', "the model's field error")
        self.assertIn("provider must be one of", err.text)
        self.assertEqual(self.css('[data-field="step1.model"]').get_attribute("aria-invalid"), "true")
        self.assertIn("Step 1 of 5", self.css("#step-title").text)
        self.type_into("step1.model", "openai/gpt-4o-mini")
        self.next_step(2)
        self.assertFalse(self.all('[data-error-for="step1.model"]:not([hidden])'))
        self.type_into("step2.system_prompt", "You are the support agent of the Studio test.")
        Select(self.css('[data-field="step2.tone"]')).select_by_value("casual")
        self.next_step(3)
        # no tool: an agent with tools asks its provider without streaming
        self.next_step(4)
        Select(self.css('[data-field="step4.memory_type"]')).select_by_value("conversational")
        self.type_into("step4.window_size", "10")
        self.next_step(5)
        self.type_into("step5.max_tokens", "500")
        self.css("#next").click()
        # the draft was saved at each step: the server has all five
        self.visible("#deploy").click()
        yaml = self.visible("#yaml", "the compiled YAML")
        self.assertIn("__support-bot", yaml.text)
        self.assertIn("casual", yaml.text)
        self.assertIn("max_turns: 20", yaml.text)      # two messages a turn, window 10
        self.assertIn("max_tokens: 500", yaml.text)

        # the list: deployed, no edit
        self.goto("#/agents")
        self.wait(lambda: self.state("support-bot") == "deployed", "support-bot deployed")
        self.assertEqual(self.actions_of("support-bot"), ["console", "delete", "pause", "yaml"])
        self.shot("studio-agents.png")

        # the console: run over the WebSocket, tokens one after another
        self.fake.control(reply=" ".join(WORDS), chunk_delay_ms=120)
        self.action("support-bot", "console")
        seen = self.talk("Hello there")
        final = seen[-1]
        self.assertEqual(final, " ".join(WORDS))
        partial = [s for s in seen[:-1] if s and s != final]
        self.assertGreaterEqual(len(partial), 3, "tokens did not arrive one by one: %r" % seen)
        for s in partial:
            self.assertTrue(final.startswith(s), (s, final))
        session = self.css("#session").get_attribute("value")
        self.assertTrue(session)
        self.wait(lambda: self.css("#remaining").text.strip().isdigit(), "requests left today")
        left1 = int(self.css("#remaining").text)
        self.fake.control(reply="second answer", chunk_delay_ms=20)
        self.talk("And again")
        self.assertEqual(self.css("#session").get_attribute("value"), session)
        self.wait(lambda: self.css("#remaining").text.strip() == str(left1 - 1), "one fewer left")
        # the provider saw the first turn again: the session's memory works
        last = self.fake.requests()[-1]
        self.assertIn("Hello there", str(last))
        # test mode: answered, counts nothing
        self.css("#mode-test").click()
        self.fake.control(reply="tested answer")
        self.assertEqual(self.talk("Just testing")[-1], "tested answer")
        self.wait(lambda: self.css("#remaining").text.strip() == str(left1 - 1), "test not counted")
        self.shot("studio-console.png")

        # pause, edit, redeploy
        self.goto("#/agents")
        self.action("support-bot", "pause")
        self.wait(lambda: self.state("support-bot") == "paused", "support-bot paused")
        self.assertEqual(self.actions_of("support-bot"), ["delete", "deploy", "edit"])
        self.action("support-bot", "edit")
        self.wait(lambda: self.css('[data-field="name"]').get_attribute("value") == "support-bot",
                  "the wizard filled from the agent")
        self.assertEqual(self.css('[data-field="step1.model"]').get_attribute("value"),
                         "openai/gpt-4o-mini")
        self.next_step(2)
        self.type_into("step2.system_prompt", "You are the edited support agent.")
        self.next_step(3)
        self.goto("#/agents")
        self.action("support-bot", "deploy")
        self.wait(lambda: self.state("support-bot") == "deployed", "support-bot redeployed")
        status, _, body = self.inst.request(
            "GET", "/api/v1/orgs/%s/agents/support-bot" % self.slug_of_page(), token=self.page_token())
        self.assertEqual(status, 200, body)
        self.assertEqual(body["wizard_config"]["step2"]["system_prompt"],
                         "You are the edited support agent.")

        # the access token expires on the way: the page refreshed it
        remaining = ACCESS_TTL + 3 - (time.monotonic() - signed_in_at)
        if remaining > 0:
            time.sleep(remaining)
        self.goto("#/usage")
        self.wait(lambda: self.all("#total-requests") or self.all("#dev-login") or
                  self.all("main .alert:not(:empty)"), "the usage page")
        self.assertFalse(self.all("#dev-login"), "signed out by an expired token")
        self.assertFalse(self.all("main .alert:not(:empty)"), "an error on the usage page")
        self.wait(lambda: self.css("#total-requests").text == "2", "usage: the two runs")
        self.assertNotEqual(d.execute_script("return document.body.dataset.refreshes || '0'"), "0")
        row = self.css('#by-agent tr[data-agent="support-bot"]')
        self.assertEqual(row.find_elements(By.CSS_SELECTOR, "td")[0].text, "2")
        bars = self.all('svg[data-chart="requests"] rect')
        self.assertEqual(sum(int(b.get_attribute("data-value")) for b in bars), 2)
        self.assertEqual(int(self.css("#remaining-today").text), left1 - 1)

        # delete, with a confirmation: cancel keeps it, confirm removes it
        self.goto("#/agents")
        self.action("support-bot", "delete")
        self.visible("#confirm-cancel").click()
        self.assertEqual(self.state("support-bot"), "deployed")
        self.action("support-bot", "delete")
        self.visible("#confirm-ok").click()
        self.wait(lambda: self.row("support-bot") is None and self.all("#agents, main p"),
                  "support-bot gone")
        status, _, _ = self.inst.request(
            "GET", "/api/v1/orgs/%s/agents/support-bot" % self.slug_of_page(), token=self.page_token())
        self.assertEqual(status, 404)

    def slug_of_page(self):
        return self.wait(lambda: self.css("#who").text.split()[1:2], "the org in the header")[0]

    def page_token(self):
        """A token of the page's user from the API (the page keeps its own
        in memory, out of reach)."""
        return self.inst.user(self.email)[0]

    def test_the_studio_is_served_with_its_csp_and_cache_lifetimes(self):
        check_served(self, self.inst)

    def test_org_page_keys_and_providers_then_sign_out_and_in_with_an_api_key(self):
        self.email = self.sign_in()
        slug = self.slug_of_page()
        self.goto("#/org")
        # an API key: the secret shown once, with a copy button
        form = self.visible("form[aria-label='Create an API key']")
        form.find_element(By.CSS_SELECTOR, "[data-field=name]").send_keys("studio-key")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        secret = self.visible("#secret", "the new key's secret").text
        self.inst.secrets.add(secret)
        self.assertTrue(secret.startswith("ask-"), secret)
        self.wait(lambda: any("studio-key" in r.text for r in self.all("#keys tbody tr")), "key listed")
        self.assertNotIn(secret, self.css("#keys table").text)
        self.assertTrue([b for b in self.all("#new-secret button") if b.text == "Copy"])
        # a provider key: listed masked, never whole
        pk = "sk-studio-%s" % os.urandom(8).hex()
        self.inst.secrets.add(pk)
        form = self.visible("form[aria-label='Save a provider key']")
        Select(form.find_element(By.CSS_SELECTOR, "[data-field=provider]")).select_by_value("groq")
        form.find_element(By.CSS_SELECTOR, "[data-field=api_key]").send_keys(pk)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait(lambda: any("groq" in r.text for r in self.all("#providers tbody tr")), "provider listed")
        self.assertNotIn(pk, self.driver.page_source)
        self.assertIn(pk[-4:], self.css("#providers table").text)
        # an invitation beyond the plan: the API's message, beside nothing
        for i in range(3):
            form = self.visible("form[aria-label='Invite a member']")
            form.find_element(By.CSS_SELECTOR, "[data-field=email]").send_keys("inv%d-%s" % (i, self.email))
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            if i < 2:
                self.wait(lambda: len(self.all("#members tbody tr")) == 2 + i, "invitation %d" % i)
        self.wait(lambda: "limit" in self.css("#members .alert").text.lower(), "plan limit message")
        # phone width: nothing wider than the window but the tables' own boxes
        self.driver.set_window_size(390, 844)
        for page in ("#/org", "#/agents", "#/usage"):
            self.goto(page)
            self.visible("main h1")
            time.sleep(0.3)
            width = self.driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]")
            self.assertLessEqual(width[0], width[1], "%s overflows at phone width" % page)
        # sign out calls the API
        self.css("#logout").click()
        self.visible("#dev-login", "the sign-in page after sign-out")
        def logged_out():
            access = self.inst.front_logs()[1]      # lighttpd's or Apache's access log
            return any("POST /api/v1/auth/logout" in l and " 204 " in l
                       for l in self.inst.read_log(access).splitlines())
        self.wait(logged_out, "POST /auth/logout answered 204")
        # the API key signs in to the same org; members are for people only
        form = self.visible("#key-login")
        form.find_element(By.CSS_SELECTOR, "[data-field=api_key]").send_keys(secret)
        form.find_element(By.CSS_SELECTOR, "[data-field=org]").send_keys(slug)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.visible("#nav a[href='#/agents']")
        self.assertIn("API key", self.css("#who").text)
        self.goto("#/org")
        self.wait(lambda: self.css("#members .alert").text.strip() != "", "the 403 message")


def check_served(tc, inst):
    """/studio/ through inst's front server: index.html revalidated, hashed
    files for a year, the strict CSP on both, JavaScript as JavaScript."""
    r = urllib.request.urlopen(inst.base_url + "/studio/", timeout=WAIT)
    tc.assertEqual(r.headers["Cache-Control"], "no-cache")
    csp = r.headers["Content-Security-Policy"]
    for part in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                 "connect-src 'self'"):
        tc.assertIn(part, csp)
    tc.assertNotIn("unsafe", csp)
    html = r.read().decode()
    tc.assertNotIn("<script>", html)
    tc.assertNotIn("style=", html)
    for name in re.findall(r'(?:src|href)="((?:js/)?[a-z]+\.[0-9a-f]{12}\.(?:js|css))"', html):
        r = urllib.request.urlopen(inst.base_url + "/studio/" + name, timeout=WAIT)
        tc.assertIn("max-age=31536000", r.headers["Cache-Control"])
        tc.assertIn("script-src 'self'", r.headers["Content-Security-Policy"])
        tc.assertTrue(r.headers["Content-Type"].startswith(
            "text/javascript" if name.endswith(".js") else "text/css"), r.headers["Content-Type"])
    r = urllib.request.urlopen(inst.base_url + "/studio", timeout=WAIT)     # redirected
    tc.assertEqual(r.url, inst.base_url + "/studio/")
    r = urllib.request.urlopen(inst.base_url + "/api/v1/config", timeout=WAIT)
    tc.assertEqual(json.loads(r.read()), {
        "sign_in": {"dev_login": True, "api_key": True},
        "limits": {"max_agents": 5, "requests_per_day": 1000, "max_members": 3,
                   "max_streams": 5}})


class StudioApacheTest(InstanceTestCase):
    """The same files through Apache with the shipped snippet's Studio block."""
    front = "apache"

    def test_the_studio_is_served_with_its_csp_and_cache_lifetimes(self):
        check_served(self, self.inst)

if __name__ == "__main__":
    main()
