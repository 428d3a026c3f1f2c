/*
 * cmd_tokenize.c — `optiq tokenize --model DIR --text TEXT [--json] [--no-special]`: the token
 * ids of a text, as the model's tokenizer.json gives them (the same ids as the reference
 * `tokenizers` library). Users debug prompts with it.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq tokenize --model DIR [--text TEXT] [--json] [--no-special] [--split-special]\n\n"
            "Print the token ids of TEXT (standard input when --text is not given) under the\n"
            "tokenizer of a model folder (DIR/tokenizer.json).\n\n"
            "Options:\n"
            "  --model DIR      model folder holding tokenizer.json\n"
            "  --text TEXT      text to tokenize\n"
            "  --json           print {\"ids\": [...], \"tokens\": [...], \"count\": N} (keys: docs/tokenizer.md)\n"
            "  --no-special     do not add the tokenizer's special tokens (e.g. Gemma's <bos>)\n"
            "  --split-special  read special-token text in TEXT (\"<|im_start|>\") as plain text\n"
            "  --help           show this help\n");
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t k = fread(b + n, 1, cap - n, stdin);
        n += k;
        if (k == 0) break;
        if (n == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) { free(b); return NULL; }
            b = nb;
        }
    }
    *len = n;
    return b;
}

static int print_json(const optiq_tokenizer *tok, const int32_t *ids, size_t n) {
    cJSON *root = cJSON_CreateObject(), *jid = cJSON_CreateArray(), *jtok = cJSON_CreateArray();
    if (!root || !jid || !jtok) return cli_fail("out of memory");
    cJSON_AddItemToObject(root, "ids", jid);
    cJSON_AddItemToObject(root, "tokens", jtok);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = optiq_tokenizer_id_to_token(tok, ids[i], &len);
        char *copy = malloc(len + 1);
        if (!copy) { cJSON_Delete(root); return cli_fail("out of memory"); }
        if (len) memcpy(copy, s, len);
        copy[len] = 0;
        cJSON_AddItemToArray(jid, cJSON_CreateNumber(ids[i]));
        cJSON_AddItemToArray(jtok, cJSON_CreateString(copy));
        free(copy);
    }
    cJSON_AddNumberToObject(root, "count", (double)n);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return cli_fail("out of memory");
    printf("%s\n", text);
    free(text);
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},    {"text", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'j'},           {"no-special", no_argument, 0, 'n'},
                                         {"split-special", no_argument, 0, 's'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *text = NULL;
    int json = 0, c;
    unsigned flags = OPTIQ_ENCODE_ADD_SPECIAL;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': text = optarg; break;
        case 'j': json = 1; break;
        case 'n': flags &= ~OPTIQ_ENCODE_ADD_SPECIAL; break;
        case 's': flags |= OPTIQ_ENCODE_SPLIT_SPECIAL; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("tokenize", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("tokenize", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage_error("tokenize", "unexpected argument '%s'", argv[optind]);
    if (!model) return cli_usage_error("tokenize", "--model DIR is required");

    char *owned = NULL;
    size_t len;
    if (text) {
        len = strlen(text);
    } else {
        if (!(owned = read_stdin(&len))) return cli_fail("cannot read standard input");
        text = owned;
    }
    optiq_error err;
    optiq_tokenizer *tok = NULL;
    if (optiq_tokenizer_load(model, &tok, &err) != OPTIQ_OK) {
        free(owned);
        return cli_fail("%s", err.message);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    if (optiq_tokenizer_encode(tok, text, len, flags, &ids, &n, &err) != OPTIQ_OK) {
        rc = cli_fail("%s", err.message);
    } else if (json) {
        rc = print_json(tok, ids, n);
    } else {
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
    }
    optiq_free(ids);
    optiq_tokenizer_free(tok);
    free(owned);
    return rc;
}
