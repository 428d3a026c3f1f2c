/*
 * cmd_dump.c — `optiq dump --model DIR --prompt TEXT --out FILE`: run a
 * prompt through the model once and write its hidden states and logits to a
 * safetensors file (optiq_dump), to compare a layer at a time with a
 * reference run:
 *   "tokens"  I32 [n]
 *   "hidden"  F32 [n_layers + 2, n, hidden]  after the embedding, every layer, the final norm
 *   "logits"  F32 [n, vocab]
 * With --image (a folder with the vision sidecar) also "pixel_values",
 * "grid_thw", "vision" (the tower's soft tokens), "embeds" (the merged input
 * embeddings) and "positions" (the three-axis position ids).
 * The prompt is prepared as `optiq generate` prepares it (chat template
 * unless --no-chat-template).
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq dump --model DIR --prompt TEXT --out FILE.safetensors [--image PATH ...] [options]\n\n"
            "Run the prompt through the model and write \"tokens\" (I32 [n]), \"hidden\"\n"
            "(F32 [n_layers + 2, n, hidden]: after the embedding, after every layer, after the\n"
            "final norm) and \"logits\" (F32 [n, vocab]) to a safetensors file. With images also\n"
            "\"pixel_values\" (F32 [patches, patch_dim]), \"grid_thw\" (I32 [images, 3]), \"vision\"\n"
            "(F32 [soft tokens, hidden]), \"embeds\" (F32 [n, hidden]) and \"positions\" (I32 [3, n]).\n\n"
            "Options:\n"
            "  --model DIR           model folder\n"
            "  --prompt TEXT         the prompt (a user message under the chat template); - reads stdin\n"
            "  --image PATH_OR_URL   an image (repeat for several; the folder needs the vision sidecar)\n"
            "  --system TEXT         system message (chat template only)\n"
            "  --out FILE            safetensors file to write\n"
            "  --no-chat-template    tokenize the prompt as is (with the tokenizer's special tokens)\n"
            "  --chat-template-kwargs JSON  template variables (as generate)\n"
            "  --threads N           threads (default: physical cores)\n"
            "  --fast                the fast path (default here: the exact f32 path, as compared with references)\n"
            "  --json                print {\"tokens\", \"n_layers\", \"hidden_size\", \"vocab_size\", \"out\"}\n"
            "  --help                show this help\n");
}

/* Shape of "hidden" from the header of the written file (8-byte length,
 * then JSON: the layout the library's writer documents). */
static int hidden_shape(const char *path, int64_t *layers, int64_t *hidden) {
    FILE *f = fopen(path, "rb");
    if (!f) return 1;
    unsigned char b[8];
    uint64_t n = 0;
    int rc = 1;
    if (fread(b, 1, 8, f) == 8) {
        for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
        char *h = n < (100u << 20) ? malloc(n + 1) : NULL;
        if (h && fread(h, 1, n, f) == n) {
            h[n] = 0;
            cJSON *doc = cJSON_Parse(h);
            const cJSON *shape = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "hidden"),
                                                                  "shape");
            if (cJSON_GetArraySize(shape) == 3) {
                *layers = (int64_t)cJSON_GetArrayItem(shape, 0)->valuedouble - 2;
                *hidden = (int64_t)cJSON_GetArrayItem(shape, 2)->valuedouble;
                rc = 0;
            }
            cJSON_Delete(doc);
        }
        free(h);
    }
    fclose(f);
    return rc;
}

static int print_json(const optiq_engine *e, const int32_t *ids, size_t n, const char *out) {
    int64_t layers = 0, hidden = 0;
    if (hidden_shape(out, &layers, &hidden)) return cli_fail("%s: cannot read back the file just written", out);
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "tokens");
    for (size_t i = 0; arr && i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    cJSON_AddNumberToObject(doc, "n_layers", (double)layers);
    cJSON_AddNumberToObject(doc, "hidden_size", (double)hidden);
    cJSON_AddNumberToObject(doc, "vocab_size", (double)optiq_engine_vocab_size(e));
    cJSON_AddStringToObject(doc, "out", out);
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!s) return cli_fail("out of memory");
    printf("%s\n", s);
    free(s);
    return 0;
}

int cmd_dump(int argc, char **argv) {
    enum { O_MODEL = 1, O_PROMPT, O_SYSTEM, O_OUT, O_NO_TEMPLATE, O_THREADS, O_JSON, O_FAST, O_IMAGE, O_KWARGS };
    static const struct option opts[] = {{"model", required_argument, 0, O_MODEL},
                                         {"image", required_argument, 0, O_IMAGE},
                                         {"prompt", required_argument, 0, O_PROMPT},
                                         {"system", required_argument, 0, O_SYSTEM},
                                         {"out", required_argument, 0, O_OUT},
                                         {"no-chat-template", no_argument, 0, O_NO_TEMPLATE},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"json", no_argument, 0, O_JSON},
                                         {"fast", no_argument, 0, O_FAST},
                                         {"chat-template-kwargs", required_argument, 0, O_KWARGS},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *system = NULL, *out = NULL, *kwargs = NULL;
    int use_template = 1, json = 0, fast = 0, c;
    long long threads = 0;
    optiq_image images[64];
    size_t n_images = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: model = optarg; break;
        case O_PROMPT: prompt = optarg; break;
        case O_SYSTEM: system = optarg; break;
        case O_OUT: out = optarg; break;
        case O_IMAGE:
            if (n_images == 64) return cli_usage_error("dump", "at most 64 --image");
            images[n_images++] = (optiq_image){.source = optarg};
            break;
        case O_NO_TEMPLATE: use_template = 0; break;
        case O_THREADS:
            if (cli_parse_int("dump", "--threads", optarg, 1, 4096, &threads)) return 2;
            break;
        case O_JSON: json = 1; break;
        case O_FAST: fast = 1; break;
        case O_KWARGS:
            if (cli_check_template_kwargs("dump", optarg)) return 2;
            kwargs = optarg;
            break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("dump", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("dump", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage_error("dump", "unexpected argument '%s'", argv[optind]);
    if (!model || !prompt || !out) return cli_usage_error("dump", "--model, --prompt and --out are required");

    char *owned = NULL;
    size_t plen;
    if (strcmp(prompt, "-") == 0) {
        if (!(owned = cli_read_stream(stdin, &plen))) return cli_fail("cannot read the prompt from standard input");
        prompt = owned;
    } else {
        plen = strlen(prompt);
    }
    optiq_engine_params ep = optiq_engine_default();
    ep.n_threads = (int)threads;
    ep.exact = !fast;
    optiq_error err;
    optiq_engine *e = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    if (optiq_engine_load(model, &ep, &e, &err) != OPTIQ_OK) rc = cli_fail("%s", err.message);
    else if ((rc = cli_prompt_ids(e, system, prompt, plen, use_template, n_images, kwargs, &ids, &n)) != 0) {
    } else if (n == 0) rc = cli_fail("the prompt encodes to no tokens");
    else if (optiq_dump_images(e, ids, n, images, n_images, out, &err) != OPTIQ_OK) rc = cli_fail("%s", err.message);
    else if (json) rc = print_json(e, ids, n, out);
    optiq_free(ids);
    optiq_engine_free(e);
    free(owned);
    return rc;
}
