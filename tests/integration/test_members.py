"""test_members - organisation settings, members, roles and invitations
(SPEC sections 3 and 4), through the real lighttpd with several workers and
accept threads: invite, accept at dev login, list, remove, PATCH the org."""

import itertools

from harness import (InstanceTestCase, TIME_RE, assert_error, assert_json, main,
                     run_concurrently)

_seq = itertools.count(1)


def fresh(prefix):
    """A new e-mail address for this run (the instance is shared)."""
    return "%s%d@example.com" % (prefix, next(_seq))


class MembersTest(InstanceTestCase):
    config = {"server": {"workers": 3, "threads": 4}}

    def members(self, slug, token):
        body = assert_json(self, self.inst.request(
            "GET", "/api/v1/orgs/%s/members" % slug, token=token), 200)
        self.assertEqual(set(body), {"members"}, body)
        return {m["email"]: m for m in body["members"]}

    def invite(self, slug, token, email, role=None):
        body = {"email": email}
        if role is not None:
            body["role"] = role
        return self.inst.request("POST", "/api/v1/orgs/%s/members/invite" % slug, body,
                                 token=token)

    def remove(self, slug, token, email):
        return self.inst.request("DELETE", "/api/v1/orgs/%s/members/%s" % (slug, email),
                                 token=token)

    def orgs(self, token):
        body = assert_json(self, self.inst.request("GET", "/api/v1/orgs", token=token), 200)
        return {o["slug"]: o for o in body["orgs"]}

    def test_invite_accept_roles_and_limits(self):
        alice, bob, carol = fresh("alice"), fresh("bob"), fresh("carol")
        a_tok, slug = self.inst.user(alice)
        resp = self.invite(slug, a_tok, bob, "admin")
        self.assertEqual(assert_json(self, resp, 201),
                         {"email": bob, "role": "admin", "status": "invited"})
        listed = self.members(slug, a_tok)
        self.assertEqual(listed[alice]["status"], "active")
        self.assertEqual(listed[alice]["role"], "owner")
        self.assertEqual(set(listed[alice]), {"email", "name", "role", "status", "joined_at"})
        self.assertRegex(listed[alice]["joined_at"], TIME_RE)
        self.assertEqual(set(listed[bob]), {"email", "role", "status", "invited_at"})
        self.assertEqual((listed[bob]["status"], listed[bob]["role"]), ("invited", "admin"))
        self.assertRegex(listed[bob]["invited_at"], TIME_RE)

        # bob's next login accepts; his personal org stays his first
        b_login = self.inst.login(bob, "Bob")
        b_tok = b_login["access_token"]
        self.assertNotEqual(b_login["org_slug"], slug)
        orgs = self.orgs(b_tok)
        self.assertEqual(set(orgs), {b_login["org_slug"], slug})
        self.assertEqual(orgs[slug]["role"], "admin")
        self.assertEqual(orgs[b_login["org_slug"]]["role"], "owner")
        me = assert_json(self, self.inst.request("GET", "/api/v1/orgs/me", token=b_tok), 200)
        self.assertEqual(me["slug"], b_login["org_slug"])

        # an admin invites; carol fills the third place of max_members
        self.assertEqual(assert_json(self, self.invite(slug, b_tok, carol), 201)["role"],
                         "member")
        listed = self.members(slug, b_tok)
        self.assertEqual({e: (m["role"], m["status"]) for e, m in listed.items()},
                         {alice: ("owner", "active"), bob: ("admin", "active"),
                          carol: ("member", "invited")})
        self.assertEqual(listed[bob]["name"], "Bob")
        assert_error(self, self.invite(slug, a_tok, fresh("dave")), 409, "plan_limit_reached")
        assert_error(self, self.invite(slug, a_tok, bob), 409, "conflict")
        assert_error(self, self.invite(slug, a_tok, carol.upper(), "admin"), 409, "conflict")

        # carol, a member, may list but not manage
        c_tok, _ = self.inst.user(carol)
        self.assertEqual(self.orgs(c_tok)[slug]["role"], "member")
        self.assertEqual(self.members(slug, c_tok)[carol]["status"], "active")
        assert_error(self, self.invite(slug, c_tok, fresh("eve")), 403, "forbidden")
        assert_error(self, self.remove(slug, c_tok, bob), 403, "forbidden")
        assert_error(self, self.inst.request("PATCH", "/api/v1/orgs/" + slug,
                                             {"display_name": "Mine"}, token=c_tok),
                     403, "forbidden")

        # owners: an admin cannot remove one, and the last one stays
        assert_error(self, self.remove(slug, b_tok, alice), 403, "forbidden")
        body = assert_error(self, self.remove(slug, a_tok, alice), 409, "conflict")
        self.assertIn("last owner", body["message"])
        self.assertEqual(self.members(slug, a_tok)[alice]["role"], "owner")

        # an admin renames; the answer is the org object with the caller's role
        org = assert_json(self, self.inst.request("PATCH", "/api/v1/orgs/" + slug,
                                                  {"display_name": "Acme \u00e9quipe"},
                                                  token=b_tok), 200)
        self.assertEqual(set(org), {"slug", "display_name", "plan", "role", "limits",
                                    "created_at"})
        self.assertEqual((org["slug"], org["display_name"], org["role"]),
                         (slug, "Acme \u00e9quipe", "admin"))
        self.assertEqual(self.orgs(a_tok)[slug]["display_name"], "Acme \u00e9quipe")

    def test_removed_member_token_loses_the_org_at_once_everywhere(self):
        owner, bob = fresh("own"), fresh("bob")
        o_tok, slug = self.inst.user(owner)
        assert_json(self, self.invite(slug, o_tok, bob, "admin"), 201)
        b_tok, b_slug = self.inst.user(bob)
        path = "/api/v1/orgs/%s/members" % slug

        def get():
            return self.inst.request("GET", path, token=b_tok)[0]

        # warm the memos of many accept threads in every worker
        self.assertEqual(run_concurrently([get] * 24), [200] * 24)
        self.assertEqual(self.remove(slug, o_tok, bob.replace("@", "%40"))[0], 204)
        statuses = run_concurrently([get] * 24) + [get() for _ in range(12)]
        self.assertEqual(statuses, [403] * 36, "a stale role was served after the removal")
        self.assertEqual(set(self.orgs(b_tok)), {b_slug})
        self.assertNotIn(bob, self.members(slug, o_tok))
        assert_json(self, self.inst.request("GET", "/api/v1/orgs/%s/agents" % b_slug,
                                            token=b_tok), 200)
        assert_error(self, self.remove(slug, o_tok, bob), 404, "member_not_found")

    def test_email_in_the_path_plain_or_percent_encoded(self):
        o_tok, slug = self.inst.user(fresh("own"))
        for form in ("{}", "{}-encoded", "{}-upper"):
            email = fresh("x")
            assert_json(self, self.invite(slug, o_tok, email), 201)
            path_email = {"{}": email, "{}-encoded": email.replace("@", "%40"),
                          "{}-upper": email.upper().replace("@", "%40")}[form]
            status, _, body = self.remove(slug, o_tok, path_email)
            self.assertEqual(status, 204, (form, body))
            self.assertIsNone(body)
            self.assertNotIn(email, self.members(slug, o_tok))
        # (a bad escape such as %zz or %00 never reaches us: lighttpd answers 400)
        for bad in ("nobody%40example.com", "nobody@example.com", "not-an-address",
                    "a%2540b.c"):
            assert_error(self, self.remove(slug, o_tok, bad), 404, "member_not_found")

    def test_withdrawn_invitation_is_not_accepted(self):
        o_tok, slug = self.inst.user(fresh("own"))
        zed = fresh("zed")
        assert_json(self, self.invite(slug, o_tok, zed), 201)
        self.assertEqual(self.remove(slug, o_tok, zed)[0], 204)
        z_tok, z_slug = self.inst.user(zed)
        self.assertEqual(set(self.orgs(z_tok)), {z_slug})
        assert_error(self, self.inst.request("GET", "/api/v1/orgs/%s/members" % slug,
                                             token=z_tok), 403, "forbidden")

    def test_bad_requests_get_the_envelope(self):
        owner = fresh("own")
        o_tok, slug = self.inst.user(owner)
        before = self.orgs(o_tok)[slug]["display_name"]
        invite = "/api/v1/orgs/%s/members/invite" % slug
        org = "/api/v1/orgs/" + slug
        cases = [
            ("POST", invite, {}, 422, "validation_error", ["email"]),
            ("POST", invite, {"email": "x@example.com", "role": "owner"}, 422,
             "validation_error", ["role"]),
            ("POST", invite, {"email": "x@example.com", "role": "root"}, 422,
             "validation_error", ["role"]),
            ("POST", invite, {"email": "x@example.com", "role": 2}, 422,
             "validation_error", ["role"]),
            ("POST", invite, {"email": "no-at-sign"}, 422, "validation_error", ["email"]),
            ("POST", invite, {"email": ["x@example.com"]}, 422, "validation_error", ["email"]),
            ("POST", invite, {"email": "x@example.com", "x": 1}, 422, "validation_error", ["x"]),
            ("POST", invite, [1], 422, "validation_error", None),
            ("PATCH", org, {}, 422, "validation_error", ["display_name"]),
            ("PATCH", org, {"display_name": ""}, 422, "validation_error", ["display_name"]),
            ("PATCH", org, {"display_name": "x" * 129}, 422, "validation_error",
             ["display_name"]),
            # a control character: the one string policy's 400 (test_strings.py)
            ("PATCH", org, {"display_name": "tab\there"}, 400, "bad_request", None),
            ("PATCH", org, {"display_name": None}, 422, "validation_error", ["display_name"]),
            ("PATCH", org, {"display_name": "ok", "plan": "pro"}, 422, "validation_error",
             ["plan"]),
        ]
        for method, path, body, status, code, fields in cases:
            with self.subTest(method=method, body=body):
                assert_error(self, self.inst.request(method, path, body, token=o_tok),
                             status, code, fields)
        for method, path in (("POST", invite), ("PATCH", org)):
            with self.subTest(method=method, raw="bad json"):
                assert_error(self, self.inst.request(method, path, raw=b"{\"email\":",
                                                     token=o_tok), 400, "invalid_json")
                assert_error(self, self.inst.request(method, path, raw=b"{}", token=o_tok,
                                                     headers={"Content-Type": "text/plain"}),
                             415)
                assert_error(self, self.inst.request(method, path, {"display_name": "x"}),
                             401)
        assert_error(self, self.inst.request("GET", org, token=o_tok), 405)
        other_tok, other = self.inst.user(fresh("other"))
        for method, path, body in (("PATCH", org, {"display_name": "x"}),
                                   ("GET", org + "/members", None),
                                   ("POST", invite, {"email": "x@example.com"}),
                                   ("DELETE", org + "/members/" + owner.replace("@", "%40"), None)):
            with self.subTest(outsider=method + " " + path):
                assert_error(self, self.inst.request(method, path, body, token=other_tok),
                             403, "forbidden")
        self.assertNotEqual(other, slug)
        self.assertEqual(set(self.members(slug, o_tok)), {owner}, "nothing was invited")
        self.assertEqual(self.orgs(o_tok)[slug]["display_name"], before, "nothing renamed")


class MembersApacheTest(InstanceTestCase):
    """PATCH and a %40 in the path as Apache hands them over."""
    front = "apache"

    def test_patch_and_encoded_email_through_apache(self):
        o_tok, slug = self.inst.user(fresh("own"))
        org = assert_json(self, self.inst.request("PATCH", "/api/v1/orgs/" + slug,
                                                  {"display_name": "Via Apache"},
                                                  token=o_tok), 200)
        self.assertEqual(org["display_name"], "Via Apache")
        invited = [fresh("x"), fresh("y")]
        for email in invited:
            assert_json(self, self.inst.request(
                "POST", "/api/v1/orgs/%s/members/invite" % slug, {"email": email},
                token=o_tok), 201)
        for email in (invited[0], invited[1].replace("@", "%40")):
            status, _, body = self.inst.request(
                "DELETE", "/api/v1/orgs/%s/members/%s" % (slug, email), token=o_tok)
            self.assertEqual(status, 204, (email, body))
        assert_error(self, self.inst.request(
            "DELETE", "/api/v1/orgs/%s/members/%s" % (slug, invited[0]), token=o_tok),
            404, "member_not_found")
        listed = assert_json(self, self.inst.request(
            "GET", "/api/v1/orgs/%s/members" % slug, token=o_tok), 200)["members"]
        self.assertEqual(len(listed), 1, listed)


if __name__ == "__main__":
    main()
