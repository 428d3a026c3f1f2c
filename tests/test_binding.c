/*
 * test_binding.c — what language bindings call beyond the rest of the API
 * (src/runtime/binding.c): optiq_engine_render_prompt against the folder's
 * own template rendered directly (optiq_chat_template_render) with the
 * defaults the CLI and the server use (add_generation_prompt, thinking on
 * for text when the vocabulary has markers, off with images), the image
 * sources it collects, its errors, and optiq_struct_size.
 * (python/tests/ compare whole generations with `optiq generate`.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optiq.h"
#include "test.h"

static optiq_engine *load(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/models/%s", name);
    optiq_engine_params p = optiq_engine_default();
    p.n_threads = 1;
    optiq_engine *e = NULL;
    optiq_error err;
    if (optiq_engine_load(test_path(rel), &p, &e, &err) != OPTIQ_OK) {
        fprintf(stderr, "%s: %s\n", name, err.message);
        return NULL;
    }
    return e;
}

/* The template rendered directly with these options (NULL on failure). */
static char *direct(const optiq_engine *e, const char *messages, const char *options) {
    char *text = NULL;
    size_t len = 0;
    optiq_error err;
    if (optiq_chat_template_render(optiq_engine_chat_template(e), messages, strlen(messages), options, &text, &len,
                                   &err) != OPTIQ_OK)
        return NULL;
    return text;
}

/* render_prompt's text equals the direct render, and its ids are that text encoded. */
static int same_as_direct(const optiq_engine *e, const optiq_prompt *p, const char *messages, const char *options) {
    char *want = direct(e, messages, options);
    int32_t *ids = NULL;
    size_t n = 0;
    optiq_error err;
    int ok = want && p->text && !strcmp(want, p->text) &&
             optiq_tokenizer_encode(optiq_engine_tokenizer(e), want, strlen(want), 0, &ids, &n, &err) == OPTIQ_OK &&
             n == p->n_ids && !memcmp(ids, p->ids, n * sizeof *ids);
    optiq_free(want);
    optiq_free(ids);
    return ok;
}

static optiq_status render(const optiq_engine *e, const char *messages, const char *options, optiq_prompt *p,
                           optiq_error *err) {
    return optiq_engine_render_prompt(e, messages, strlen(messages), options, p, err);
}

int main(void) {
    optiq_engine *vl = load("qwen35-vl-mixed"), *dense = load("qwen35-dense-mixed");
    if (!vl || !dense) return 1;
    const char *text_msgs = "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hello\"}]";
    const char *image_msgs =
        "[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"a.png\"}},"
        "{\"type\":\"text\",\"text\":\"What is this?\"},{\"type\":\"image\"},{\"type\":\"image\",\"image\":\"b.jpg\"}]}]";
    optiq_error err;
    optiq_prompt p;

    for (TEST_CASE("text messages: the template's text with add_generation_prompt and the folder's thinking default")) {
        CHECK(render(vl, text_msgs, NULL, &p, &err) == OPTIQ_OK);
        const char *opts = optiq_engine_has_thinking(vl) ? "{\"add_generation_prompt\":true,\"enable_thinking\":true}"
                                                         : "{\"add_generation_prompt\":true,\"enable_thinking\":false}";
        CHECK(same_as_direct(vl, &p, text_msgs, opts));
        CHECK(p.n_images == 0 && p.images == NULL);
        optiq_prompt_free(&p);
        CHECK(p.ids == NULL && p.text == NULL);
    }
    for (TEST_CASE("caller options win; an object holding messages is taken too")) {
        const char *wrapped =
            "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hello\"}]}";
        CHECK(render(vl, wrapped, "{\"enable_thinking\":false}", &p, &err) == OPTIQ_OK);
        CHECK(same_as_direct(vl, &p, text_msgs, "{\"add_generation_prompt\":true,\"enable_thinking\":false}"));
        optiq_prompt_free(&p);
        CHECK(render(vl, text_msgs, "{\"add_generation_prompt\":false}", &p, &err) == OPTIQ_OK);
        char *with = direct(vl, text_msgs, "{\"add_generation_prompt\":true}");
        CHECK(with && strlen(p.text) < strlen(with)); /* no assistant header */
        optiq_free(with);
        optiq_prompt_free(&p);
    }
    for (TEST_CASE("image parts: sources in order (NULL for a bare image part), thinking off, one placeholder each")) {
        CHECK(render(vl, image_msgs, NULL, &p, &err) == OPTIQ_OK);
        CHECK(p.n_images == 3 && p.images && !strcmp(p.images[0], "a.png") && p.images[1] == NULL &&
              !strcmp(p.images[2], "b.jpg"));
        CHECK(same_as_direct(vl, &p, image_msgs, "{\"add_generation_prompt\":true,\"enable_thinking\":false}"));
        size_t pads = 0;
        for (const char *s = p.text; (s = strstr(s, "<|image_pad|>")); s++) pads++;
        CHECK(pads == 3);
        optiq_prompt_free(&p);
    }
    for (TEST_CASE("errors: bad JSON, not an array, a non-string image source, bad options, images to a text-only folder")) {
        CHECK(render(vl, "[{\"role\":", NULL, &p, &err) == OPTIQ_ERR_INVALID_ARG && strstr(err.message, "JSON"));
        CHECK(p.ids == NULL && p.text == NULL && p.images == NULL);
        CHECK(render(vl, "{\"role\":\"user\"}", NULL, &p, &err) == OPTIQ_ERR_INVALID_ARG &&
              strstr(err.message, "array"));
        CHECK(render(vl, "[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":7}}]}]", NULL,
                     &p, &err) == OPTIQ_ERR_INVALID_ARG &&
              strstr(err.message, "messages[0].content[0]"));
        CHECK(render(vl, text_msgs, "[1]", &p, &err) == OPTIQ_ERR_INVALID_ARG && strstr(err.message, "options"));
        CHECK(render(dense, image_msgs, NULL, &p, &err) == OPTIQ_ERR_UNSUPPORTED && strstr(err.message, "text-only"));
        CHECK(p.ids == NULL && p.images == NULL);
        CHECK(optiq_engine_render_prompt(NULL, text_msgs, strlen(text_msgs), NULL, &p, &err) == OPTIQ_ERR_INVALID_ARG);
        optiq_prompt_free(NULL);
    }
    for (TEST_CASE("struct sizes for bindings")) {
        CHECK(optiq_struct_size("optiq_generation") == sizeof(optiq_generation));
        CHECK(optiq_struct_size("optiq_generate_params") == sizeof(optiq_generate_params));
        CHECK(optiq_struct_size("optiq_engine_params") == sizeof(optiq_engine_params));
        CHECK(optiq_struct_size("optiq_prompt") == sizeof(optiq_prompt));
        CHECK(optiq_struct_size("optiq_engine") == 0 && optiq_struct_size(NULL) == 0);
    }
    optiq_engine_free(vl);
    optiq_engine_free(dense);
    return test_finish();
}
