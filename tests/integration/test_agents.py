"""test_agents - the agent lifecycle of the seed (draft -> deployed ->
paused -> deployed, delete from any state) and every route of SPEC section
5, through the real lighttpd."""

import copy
import json
import re

from harness import InstanceTestCase, TIME_RE, assert_error, assert_json, main

OPENAI_KEY = "sk-test-123456"

FULL = {
    "name": "support-bot",
    "display_name": "Support Bot",
    "step1": {"model": "echo/echo-1", "fallback_model": "ollama/llama3",
              "routing_strategy": "cost_optimized"},
    "step2": {"system_prompt": "You are a helpful support agent.", "persona": "Support Agent",
              "tone": "professional"},
    "step3": {"tools": ["calculator", "datetime"],
              "tool_configs": {"http_request": {"allowed_hosts": ["api.example.com"]}}},
    "step4": {"memory_type": "conversational", "memory_strategy": "sliding_window",
              "window_size": 20},
    "step5": {"input_guardrails": ["pii_filter"], "output_guardrails": ["content_safety"],
              "max_tokens": 1000, "orchestration": "react"},
}
TONE = "Respond in a professional, clear tone."
AGENT_KEYS = {"name", "display_name", "status", "agent_id", "model", "wizard_config",
              "created_at", "updated_at", "deployed_at", "paused_at"}
LIST_KEYS = {"name", "display_name", "status", "model", "created_at", "updated_at", "deployed_at"}


def yaml_scalar_after(text, key):
    """The text of the scalar after `key:` (first match), whitespace
    collapsed and quoting/block indicators removed: enough to check what a
    YAML value starts with without a YAML parser."""
    m = re.search(r"(?m)^(\s*)%s:[ \t]*(.*)$" % re.escape(key), text)
    if not m:
        return None
    indent, first = len(m.group(1)), m.group(2)
    lines = [first]
    for line in text[m.end():].split("\n")[1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        lines.append(line)
    value = " ".join(lines)
    value = re.sub(r"^\s*[|>][+-]?\s*", "", value)          # block scalar header
    value = value.replace("\\n", " ").replace("\\\n", "")
    value = re.sub(r"\s+", " ", value).strip()
    return value.strip("\"'").strip()


class LifecycleTest(InstanceTestCase):
    config = {"providers": {"openai": {"api_key": OPENAI_KEY}}}

    def setUp(self):
        self.seen = []           # every answer, checked for the provider key
        # each test in an org of its own, so one failing test leaves no
        # agents in another's way (plan limit, names)
        self.token, self.slug = self.inst.user(self.unique_email("org"))

    def call(self, method, path, body=None, token=None, **kw):
        resp = self.inst.request(method, "/api/v1/orgs/%s%s" % (self.slug, path), body,
                                 token=token or self.token, **kw)
        self.seen.append(resp)
        return resp

    def agent_path(self, name, suffix=""):
        return "/agents/%s%s" % (name, suffix)

    def create(self, wc):
        body = assert_json(self, self.call("POST", "/agents", wc), 201)
        return body

    def get(self, name):
        return assert_json(self, self.call("GET", self.agent_path(name)), 200)

    def fresh_org(self, tag):
        tok, slug = self.inst.user(self.unique_email(tag))
        return tok, slug

    def check_agent_object(self, a, name, status):
        self.assertTrue(AGENT_KEYS <= set(a), "missing %s in %r" % (AGENT_KEYS - set(a), a))
        self.assertEqual(a["name"], name)
        self.assertEqual(a["status"], status)
        self.assertRegex(a["created_at"], TIME_RE)
        self.assertRegex(a["updated_at"], TIME_RE)
        self.assertGreaterEqual(a["updated_at"], a["created_at"])
        if status == "draft":
            self.assertIsNone(a["deployed_at"])
            self.assertIsNone(a["paused_at"])
            self.assertIn(a["agent_id"], (None, "%s__%s" % (self.slug, name)))
        else:
            self.assertEqual(a["agent_id"], "%s__%s" % (self.slug, name))
            self.assertRegex(a["deployed_at"], TIME_RE)
        if status == "paused":
            self.assertRegex(a["paused_at"], TIME_RE)

    # -- the seed, start to end ------------------------------------------------
    def test_seed_walkthrough(self):
        inst, name = self.inst, "support-bot"
        self.token, self.slug = inst.user("dev@example.com", "Dev")
        n0 = inst.registry_count()

        # create: draft, stored, not in the registry
        created = self.create(FULL)
        self.check_agent_object(created, name, "draft")
        self.assertEqual(created["display_name"], "Support Bot")
        self.assertEqual(created["model"], "echo/echo-1")
        self.assertEqual(created["wizard_config"], FULL)
        self.assertEqual(inst.registry_count(), n0, "a draft is not in the registry")

        got = self.get(name)
        self.check_agent_object(got, name, "draft")
        self.assertEqual(got["wizard_config"], FULL)

        # the YAML of a draft is compiled on the fly and registers nothing
        status, headers, text = self.call("GET", self.agent_path(name, "/yaml"))
        self.assertEqual(status, 200, text)
        self.assertTrue(headers.get("content-type", "").startswith("application/yaml"), headers)
        self.assertIn("kind: Agent", text)
        self.assertEqual(inst.registry_count(), n0)

        # PUT {"step2": {...}} changes that one field and keeps the rest
        put = assert_json(self, self.call("PUT", self.agent_path(name),
                                          {"step2": {"system_prompt": "Updated prompt..."}}), 200)
        expected = copy.deepcopy(FULL)
        expected["step2"]["system_prompt"] = "Updated prompt..."
        self.check_agent_object(put, name, "draft")
        self.assertEqual(put["wizard_config"], expected)
        self.assertEqual(self.get(name)["wizard_config"], expected)

        # deploy
        dep = assert_json(self, self.call("POST", self.agent_path(name, "/deploy")), 200)
        self.assertEqual(set(dep), {"status", "agent_id", "deployed_at", "version"}, dep)
        self.assertEqual(dep["status"], "deployed")
        self.assertEqual(dep["agent_id"], "%s__%s" % (self.slug, name))
        self.assertEqual(dep["agent_id"], "dev-example-com__support-bot")
        self.assertRegex(dep["deployed_at"], TIME_RE)
        self.assertEqual(inst.registry_count(), n0 + 1, "deployed means registered")
        got = self.get(name)
        self.check_agent_object(got, name, "deployed")
        self.assertEqual(got["deployed_at"], dep["deployed_at"])
        self.assertEqual(got["wizard_config"], expected)

        # a deployed agent refuses edits until paused
        resp = self.call("PUT", self.agent_path(name), {"step2": {"system_prompt": "nope"}})
        body = assert_error(self, resp, 409, "agent_deployed")
        self.assertIn("pause", body["message"].lower())
        self.assertEqual(self.get(name)["wizard_config"], expected)

        # list
        lst = assert_json(self, self.call("GET", "/agents"), 200)
        self.assertEqual(set(lst), {"agents"})
        entry = [a for a in lst["agents"] if a["name"] == name]
        self.assertEqual(len(entry), 1, lst)
        self.assertTrue(LIST_KEYS <= set(entry[0]), entry[0])
        self.assertEqual(entry[0]["status"], "deployed")
        self.assertEqual(entry[0]["model"], "echo/echo-1")
        self.assertEqual(entry[0]["display_name"], "Support Bot")
        self.assertEqual(entry[0]["deployed_at"], dep["deployed_at"])

        # the compiled YAML
        status, headers, text = self.call("GET", self.agent_path(name, "/yaml"))
        self.assertEqual(status, 200, text)
        self.assertTrue(headers.get("content-type", "").startswith("application/yaml"), headers)
        self.check_yaml(text, name, "Updated prompt...")

        # pause: out of the registry, every byte of the config kept
        before = self.call("GET", self.agent_path(name))[2]
        pz = assert_json(self, self.call("POST", self.agent_path(name, "/pause")), 200)
        self.assertEqual(set(pz), {"status", "paused_at"}, pz)
        self.assertEqual(pz["status"], "paused")
        self.assertRegex(pz["paused_at"], TIME_RE)
        self.assertEqual(inst.registry_count(), n0)
        got = self.get(name)
        self.check_agent_object(got, name, "paused")
        self.assertEqual(json.dumps(got["wizard_config"], sort_keys=True),
                         json.dumps(before["wizard_config"], sort_keys=True))
        self.assertEqual(got["wizard_config"], expected)
        self.assertEqual(got["paused_at"], pz["paused_at"])
        self.assertEqual(got["display_name"], before["display_name"])
        self.assertEqual(got["model"], before["model"])

        # editing while paused is fine and keeps it paused
        put = assert_json(self, self.call("PUT", self.agent_path(name),
                                          {"step2": {"system_prompt": "Second prompt."}}), 200)
        expected["step2"]["system_prompt"] = "Second prompt."
        self.check_agent_object(put, name, "paused")
        self.assertEqual(put["wizard_config"], expected)
        self.assertEqual(inst.registry_count(), n0)

        # deploy again: registered again, the YAML has the new prompt
        dep2 = assert_json(self, self.call("POST", self.agent_path(name, "/deploy")), 200)
        self.assertEqual(dep2["status"], "deployed")
        self.assertEqual(dep2["agent_id"], "%s__%s" % (self.slug, name))
        self.assertEqual(inst.registry_count(), n0 + 1)
        got = self.get(name)
        self.check_agent_object(got, name, "deployed")
        self.assertEqual(got["wizard_config"], expected)
        text = self.call("GET", self.agent_path(name, "/yaml"))[2]
        self.check_yaml(text, name, "Second prompt.")
        self.assertNotIn("Updated prompt...", text)

        # delete: 204, then 404 everywhere, out of the registry and the list
        status, _, body = self.call("DELETE", self.agent_path(name))
        self.assertEqual(status, 204, body)
        self.assertIsNone(body)
        self.assertEqual(inst.registry_count(), n0)
        for method, suffix in (("GET", ""), ("GET", "/yaml"), ("POST", "/deploy"),
                               ("POST", "/pause"), ("DELETE", "")):
            assert_error(self, self.call(method, self.agent_path(name, suffix)), 404,
                         "agent_not_found")
        lst = assert_json(self, self.call("GET", "/agents"), 200)
        self.assertNotIn(name, [a["name"] for a in lst["agents"]])

    def check_yaml(self, text, name, prompt):
        agent_id = "%s__%s" % (self.slug, name)
        self.assertRegex(text, r"(?m)^apiVersion:\s*[\"']?astromesh/v1[\"']?\s*$")
        self.assertRegex(text, r"(?m)^kind:\s*[\"']?Agent[\"']?\s*$")
        self.assertRegex(text, r"(?m)^metadata:")
        self.assertRegex(text, r"(?m)^\s+name:\s*[\"']?%s[\"']?\s*$" % re.escape(agent_id))
        self.assertRegex(text, r"(?m)^spec:")
        for key in ("identity", "model", "primary", "fallback", "routing", "prompts",
                    "system", "orchestration", "tools", "memory", "guardrails"):
            self.assertRegex(text, r"(?m)^\s+%s:" % key, "spec.%s missing:\n%s" % (key, text))
        system = yaml_scalar_after(text, "system")
        self.assertIsNotNone(system, text)
        self.assertTrue(system.startswith(TONE), "system prompt %r" % system)
        self.assertIn(prompt, system)
        self.assertGreater(system.index(prompt), system.index(TONE))
        self.assertIn("echo-1", text)
        self.assertIn("llama3", text)
        self.assertIn("cost_optimized", text)
        self.assertIn("calculator", text)
        self.assertNotIn(OPENAI_KEY, text)

    # -- delete from every state ------------------------------------------------
    def test_delete_from_each_state(self):
        n0 = self.inst.registry_count()
        for state in ("draft", "deployed", "paused"):
            with self.subTest(state=state):
                name = "del-" + state
                self.create(dict(FULL, name=name))
                if state in ("deployed", "paused"):
                    assert_json(self, self.call("POST", self.agent_path(name, "/deploy")), 200)
                if state == "paused":
                    assert_json(self, self.call("POST", self.agent_path(name, "/pause")), 200)
                self.assertEqual(self.get(name)["status"], state)
                status, _, body = self.call("DELETE", self.agent_path(name))
                self.assertEqual(status, 204, body)
                self.assertIsNone(body)
                assert_error(self, self.call("GET", self.agent_path(name)), 404, "agent_not_found")
                assert_error(self, self.call("DELETE", self.agent_path(name)), 404,
                             "agent_not_found")
                self.assertEqual(self.inst.registry_count(), n0)
                lst = assert_json(self, self.call("GET", "/agents"), 200)
                self.assertNotIn(name, [a["name"] for a in lst["agents"]])
                # the name is free again, and the new agent starts as a draft
                again = self.create(dict(FULL, name=name))
                self.assertEqual(again["status"], "draft")
                self.assertIsNone(again["deployed_at"])
                self.assertEqual(self.inst.registry_count(), n0)
                self.assertEqual(self.call("DELETE", self.agent_path(name))[0], 204)

    # -- every wrong transition ----------------------------------------------------
    def test_wrong_transitions(self):
        name = "wrong-moves"
        self.create(dict(FULL, name=name))
        assert_error(self, self.call("POST", self.agent_path(name, "/pause")), 409,
                     "invalid_transition")
        self.assertEqual(self.get(name)["status"], "draft")
        assert_json(self, self.call("POST", self.agent_path(name, "/deploy")), 200)
        n = self.inst.registry_count()
        first = self.get(name)
        assert_error(self, self.call("POST", self.agent_path(name, "/deploy")), 409,
                     "already_deployed")
        self.assertEqual(self.inst.registry_count(), n)
        self.assertEqual(self.get(name)["deployed_at"], first["deployed_at"])
        assert_error(self, self.call("PUT", self.agent_path(name), {"display_name": "X"}), 409,
                     "agent_deployed")
        assert_json(self, self.call("POST", self.agent_path(name, "/pause")), 200)
        paused = self.get(name)
        assert_error(self, self.call("POST", self.agent_path(name, "/pause")), 409,
                     "already_paused")
        self.assertEqual(self.get(name)["paused_at"], paused["paused_at"])
        self.assertEqual(self.inst.registry_count(), n - 1)
        # unknown agent: 404 agent_not_found on every agent route
        for method, suffix, body in (("GET", "", None), ("PUT", "", {"display_name": "x"}),
                                     ("DELETE", "", None), ("POST", "/deploy", None),
                                     ("POST", "/pause", None), ("GET", "/yaml", None)):
            with self.subTest(method=method, suffix=suffix):
                assert_error(self, self.call(method, self.agent_path("ghost", suffix), body),
                             404, "agent_not_found")

    def test_deploy_of_incomplete_draft_is_invalid_config(self):
        n0 = self.inst.registry_count()
        self.create({"name": "bare"})
        body = assert_error(self, self.call("POST", self.agent_path("bare", "/deploy")), 422,
                            "invalid_config", fields=["step1.model", "step2.system_prompt"])
        self.assertEqual({d["field"] for d in body["details"]},
                         {"step1.model", "step2.system_prompt"})
        self.assertEqual(self.get("bare")["status"], "draft")
        self.assertEqual(self.inst.registry_count(), n0)
        assert_json(self, self.call("PUT", self.agent_path("bare"),
                                    {"step1": {"model": "echo/echo-1"}}), 200)
        body = assert_error(self, self.call("POST", self.agent_path("bare", "/deploy")), 422,
                            "invalid_config", fields=["step2.system_prompt"])
        self.assertEqual([d["field"] for d in body["details"]], ["step2.system_prompt"])
        assert_json(self, self.call("PUT", self.agent_path("bare"),
                                    {"step2": {"system_prompt": "Hi."}}), 200)
        dep = assert_json(self, self.call("POST", self.agent_path("bare", "/deploy")), 200)
        self.assertEqual(dep["agent_id"], "%s__bare" % self.slug)
        self.assertEqual(self.inst.registry_count(), n0 + 1)
        self.assertEqual(self.call("DELETE", self.agent_path("bare"))[0], 204)

    # -- names and limits ------------------------------------------------------------
    def test_agent_exists(self):
        tok, slug = self.fresh_org("dup")
        path = "/api/v1/orgs/%s/agents" % slug
        assert_json(self, self.inst.request("POST", path, dict(FULL, name="dup"), token=tok), 201)
        resp = self.inst.request("POST", path, dict(FULL, name="dup", display_name="Other"),
                                 token=tok)
        assert_error(self, resp, 409, "agent_exists")
        got = assert_json(self, self.inst.request("GET", path + "/dup", token=tok), 200)
        self.assertEqual(got["display_name"], "Support Bot", "the first one is untouched")
        # names are per org
        tok2, slug2 = self.fresh_org("dup2")
        assert_json(self, self.inst.request("POST", "/api/v1/orgs/%s/agents" % slug2,
                                            dict(FULL, name="dup"), token=tok2), 201)

    def test_plan_limit_reached(self):
        tok, slug = self.fresh_org("limit")
        path = "/api/v1/orgs/%s/agents" % slug
        for i in range(5):
            assert_json(self, self.inst.request("POST", path, dict(FULL, name="a%d" % i),
                                                token=tok), 201)
        # deployed and paused agents count too
        assert_json(self, self.inst.request("POST", path + "/a0/deploy", token=tok), 200)
        assert_json(self, self.inst.request("POST", path + "/a1/deploy", token=tok), 200)
        assert_json(self, self.inst.request("POST", path + "/a1/pause", token=tok), 200)
        resp = self.inst.request("POST", path, dict(FULL, name="a5"), token=tok)
        assert_error(self, resp, 409, "plan_limit_reached")
        lst = assert_json(self, self.inst.request("GET", path, token=tok), 200)
        self.assertEqual(sorted(a["name"] for a in lst["agents"]), ["a%d" % i for i in range(5)])
        assert_error(self, self.inst.request("GET", path + "/a5", token=tok), 404,
                     "agent_not_found")
        # deleting one frees a place
        self.assertEqual(self.inst.request("DELETE", path + "/a0", token=tok)[0], 204)
        assert_json(self, self.inst.request("POST", path, dict(FULL, name="a5"), token=tok), 201)
        assert_error(self, self.inst.request("POST", path, dict(FULL, name="a6"), token=tok),
                     409, "plan_limit_reached")
        # the limit is per org
        tok2, slug2 = self.fresh_org("limit2")
        assert_json(self, self.inst.request("POST", "/api/v1/orgs/%s/agents" % slug2,
                                            dict(FULL, name="a0"), token=tok2), 201)

    # -- provider keys ----------------------------------------------------------------
    def test_provider_keys(self):
        n0 = self.inst.registry_count()
        wc = dict(FULL, name="gpt-bot", step1={"model": "openai/gpt-4o-mini"})
        self.create(wc)
        dep = assert_json(self, self.call("POST", self.agent_path("gpt-bot", "/deploy")), 200)
        self.assertEqual(dep["agent_id"], "%s__gpt-bot" % self.slug)
        self.assertEqual(self.inst.registry_count(), n0 + 1)
        status, _, text = self.call("GET", self.agent_path("gpt-bot", "/yaml"))
        self.assertEqual(status, 200)
        self.assertIn("gpt-4o-mini", text)
        self.assertIn("openai", text)
        self.assertRegex(text, r"api_key_ref:", "the key appears only as a reference")
        self.get("gpt-bot")
        self.call("GET", "/agents")
        self.seen.append(self.inst.request("GET", "/api/v1/orgs/me", token=self.token))
        self.seen.append(self.inst.request("GET", "/api/v1/health"))

        # no key for anthropic: 422, stays a draft, not registered
        for name, step1 in (("claude-bot", {"model": "anthropic/claude-3-haiku"}),
                            ("fallback-bot", {"model": "openai/gpt-4o-mini",
                                              "fallback_model": "groq/llama3-8b"})):
            with self.subTest(name=name):
                self.create(dict(FULL, name=name, step1=step1))
                assert_error(self, self.call("POST", self.agent_path(name, "/deploy")), 422,
                             "provider_key_missing")
                self.assertEqual(self.get(name)["status"], "draft")
                self.assertEqual(self.inst.registry_count(), n0 + 1)
                self.assertEqual(self.call("DELETE", self.agent_path(name))[0], 204)

        # ollama and echo need no key
        self.create(dict(FULL, name="local-bot", step1={"model": "ollama/llama3"}))
        assert_json(self, self.call("POST", self.agent_path("local-bot", "/deploy")), 200)
        self.assertEqual(self.inst.registry_count(), n0 + 2)
        for name in ("gpt-bot", "local-bot"):
            self.assertEqual(self.call("DELETE", self.agent_path(name))[0], 204)
        self.assertEqual(self.inst.registry_count(), n0)

        for status, headers, body in self.seen:
            self.assertNotIn(OPENAI_KEY, json.dumps(body) if not isinstance(body, str) else body)
            self.assertNotIn(OPENAI_KEY, json.dumps(headers))

    def test_list_is_per_org_and_complete(self):
        tok, slug = self.fresh_org("lister")
        path = "/api/v1/orgs/%s/agents" % slug
        lst = assert_json(self, self.inst.request("GET", path, token=tok), 200)
        self.assertEqual(lst, {"agents": []})
        for n in ("one", "two", "three"):
            assert_json(self, self.inst.request("POST", path, dict(FULL, name=n), token=tok), 201)
        assert_json(self, self.inst.request("POST", path + "/two/deploy", token=tok), 200)
        lst = assert_json(self, self.inst.request("GET", path, token=tok), 200)
        by_name = {a["name"]: a for a in lst["agents"]}
        self.assertEqual(set(by_name), {"one", "two", "three"})
        for a in lst["agents"]:
            self.assertTrue(LIST_KEYS <= set(a), a)
            self.assertNotIn("wizard_config", a)
        self.assertEqual(by_name["two"]["status"], "deployed")
        self.assertRegex(by_name["two"]["deployed_at"], TIME_RE)
        self.assertEqual(by_name["one"]["status"], "draft")
        self.assertIsNone(by_name["one"]["deployed_at"])

    def test_put_merges_step_by_step_and_rejects_rename(self):
        self.create(dict(FULL, name="merge-me"))
        put = assert_json(self, self.call("PUT", self.agent_path("merge-me"), {
            "display_name": "Renamed Display",
            "step1": {"routing_strategy": "quality_first"},
            "step5": {"max_tokens": 2000}}), 200)
        wc = put["wizard_config"]
        self.assertEqual(put["display_name"], "Renamed Display")
        self.assertEqual(wc["step1"], {"model": "echo/echo-1", "fallback_model": "ollama/llama3",
                                       "routing_strategy": "quality_first"})
        self.assertEqual(wc["step5"], dict(FULL["step5"], max_tokens=2000))
        for step in ("step2", "step3", "step4"):
            self.assertEqual(wc[step], FULL[step])
        assert_error(self, self.call("PUT", self.agent_path("merge-me"), {"name": "other"}),
                     422, "validation_error", fields=["name"])
        self.assertEqual(self.get("merge-me")["wizard_config"], wc)
        assert_error(self, self.call("GET", self.agent_path("other")), 404, "agent_not_found")
        self.assertEqual(self.call("DELETE", self.agent_path("merge-me"))[0], 204)


if __name__ == "__main__":
    main()
