/*
 * fuzz_wizard - libFuzzer target: a JSON request body as POST/PUT
 * .../agents receive it (routes.c's json_body: depth limit, strict mode,
 * UTF-8 check), then every WizardConfig rule over it: draft and deploy
 * validation, the PUT patch check, the merge into a full config and, when
 * deploy validation passes, the compilation into the agent YAML and its
 * load back. Includes routes.c for its static json_body (the same code the
 * daemon runs, with no seam to export). Never touches a store: app is NULL
 * and only json_body is called.
 */
#include "server/routes.c"
#include "control/wizard.h"
#include "runtime/agent_yaml.h"
#include "fuzz.h"

static const char BASE[] =
    "{\"name\":\"base\",\"display_name\":\"Base\",\"step1\":{\"model\":\"openai/gpt-4o-mini\"},"
    "\"step2\":{\"system_prompt\":\"Be brief.\",\"tone\":\"casual\"},"
    "\"step3\":{\"tools\":[\"calculator\"]}}";

static void compile_and_load(struct json_object *wc)
{
    static const char *const refs[PROVIDER_COUNT] = { "server:openai", "org:acme/anthropic" };
    static struct config cfg;
    struct agent_yaml_doc doc;
    struct am_error err;
    char *yaml = NULL;
    size_t len = 0;

    error_clear(&err);
    if (wizard_validate_deploy(wc, &err) != 0)
        return;
    error_clear(&err);
    if (wizard_compile(wc, "acme", 1, refs, &cfg, &yaml, &len, &err) == 0) {
        memset(&doc, 0, sizeof(doc));
        error_clear(&err);
        (void)agent_yaml_load(yaml, len, &doc, &err);
        agent_yaml_doc_clear(&doc);
    }
    free(yaml);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_request req;
    struct http_response resp;
    struct route_ctx c;
    struct json_object *body, *base, *merged;
    struct am_error err;
    char *text = fuzz_cstr(data, size);

    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    memset(&c, 0, sizeof(c));
    req.method = "POST";
    req.path = "/api/v1/orgs/acme/agents";
    req.query = "";
    req.content_type = "application/json";
    req.body = text;
    req.body_len = size;
    c.req = &req;
    c.resp = &resp;
    body = json_body(&c);
    if (body != NULL) {
        error_clear(&err);
        (void)wizard_validate(body, &err);
        error_clear(&err);
        (void)wizard_validate_patch(body, "base", &err);
        compile_and_load(body);
        base = json_tokener_parse(BASE);
        merged = wizard_merge(base, body);
        error_clear(&err);
        if (wizard_validate(merged, &err) == 0)
            compile_and_load(merged);
        json_object_put(merged);
        json_object_put(base);
        json_object_put(body);
    }
    http_response_free(&resp);
    free(text);
    return 0;
}
