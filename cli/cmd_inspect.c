/*
 * cmd_inspect.c — `optiq inspect DIR [--json]`: describe a model folder.
 *
 * The library produces the description as JSON (optiq_model_info_json); this
 * command prints it as is with --json, or as a short human summary.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq inspect DIR [--json]\n\n"
            "Describe a model folder: architecture, parameter count, the quantization table\n"
            "(bits histogram, effective bits per weight, unquantized modules), the vision\n"
            "sidecar (optiq_vision.safetensors) and the tokenizer / template files.\n\n"
            "Options:\n"
            "  --json   print the description as JSON (keys: docs/cli.md)\n"
            "  --help   show this help\n");
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static const char *str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* 1234567 -> "1.23 M" */
static const char *human_count(double n, char *buf, size_t cap) {
    if (n >= 1e9) snprintf(buf, cap, "%.2f B", n / 1e9);
    else if (n >= 1e6) snprintf(buf, cap, "%.2f M", n / 1e6);
    else if (n >= 1e3) snprintf(buf, cap, "%.1f K", n / 1e3);
    else snprintf(buf, cap, "%.0f", n);
    return buf;
}

static const char *human_bytes(double n, char *buf, size_t cap) {
    if (n >= 1073741824.0) snprintf(buf, cap, "%.2f GiB", n / 1073741824.0);
    else if (n >= 1048576.0) snprintf(buf, cap, "%.2f MiB", n / 1048576.0);
    else if (n >= 1024.0) snprintf(buf, cap, "%.1f KiB", n / 1024.0);
    else snprintf(buf, cap, "%.0f B", n);
    return buf;
}

static void print_summary(const cJSON *d) {
    char b1[32], b2[32];
    const cJSON *lang = cJSON_GetObjectItemCaseSensitive(d, "language");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(d, "quantization");
    const cJSON *vis = cJSON_GetObjectItemCaseSensitive(d, "vision");

    printf("%s\n", str(d, "path") ? str(d, "path") : "?");
    printf("  %-17s %s", "model_type", str(d, "model_type") ? str(d, "model_type") : "?");
    if (str(d, "text_model_type")) printf(" (text: %s)", str(d, "text_model_type"));
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(d, "architectures"), *a;
    cJSON_ArrayForEach(a, arch) if (cJSON_IsString(a)) printf(" [%s]", a->valuestring);
    printf("\n");
    const cJSON *ad = cJSON_GetObjectItemCaseSensitive(d, "architecture");
    if (str(ad, "family")) {
        printf("  %-17s %s, %s: %d layers, hidden %d\n", "architecture", str(ad, "family"),
               str(ad, "variant") ? str(ad, "variant") : "?", (int)num(ad, "layers"), (int)num(ad, "hidden_size"));
        const cJSON *ft;
        cJSON_ArrayForEach(ft, cJSON_GetObjectItemCaseSensitive(ad, "features"))
            if (cJSON_IsString(ft)) printf("  %-17s - %s\n", "", ft->valuestring);
    } else if (str(ad, "error")) {
        printf("  %-17s not runnable: %s\n", "architecture", str(ad, "error"));
    }

    const cJSON *files = cJSON_GetObjectItemCaseSensitive(lang, "files");
    printf("  %-17s %s parameters in %d file(s), %s\n", "language tower",
           human_count(num(lang, "parameters"), b1, sizeof b1), cJSON_GetArraySize(files),
           human_bytes(num(lang, "file_bytes"), b2, sizeof b2));
    printf("  %-17s %.3f (tensor bytes x 8 / parameters, as mlx-lm reports it)\n", "bits per weight",
           num(lang, "bits_per_weight"));

    const cJSON *dflt = cJSON_GetObjectItemCaseSensitive(q, "default");
    if (cJSON_IsObject(dflt))
        printf("  %-17s default %s %d-bit, group %d; %d per-module override(s), %d disabled\n", "quantization",
               str(dflt, "mode"), (int)num(dflt, "bits"), (int)num(dflt, "group_size"), (int)num(q, "overrides"),
               (int)num(q, "disabled"));
    else
        printf("  %-17s none (float weights)\n", "quantization");

    const cJSON *fm = cJSON_GetObjectItemCaseSensitive(q, "formats"), *f;
    cJSON_ArrayForEach(f, fm) {
        printf("  %-17s %-6s %d-bit g%-3d %4d modules, %s weights\n", f == fm->child ? "bits histogram" : "",
               str(f, "mode"), (int)num(f, "bits"), (int)num(f, "group_size"), (int)num(f, "modules"),
               human_count(num(f, "weights"), b1, sizeof b1));
    }
    const cJSON *un = cJSON_GetObjectItemCaseSensitive(q, "unquantized_modules"), *u;
    int n_un = cJSON_GetArraySize(un), shown = 0;
    printf("  %-17s %d module(s)%s", "unquantized", n_un, n_un ? ":" : "");
    cJSON_ArrayForEach(u, un) {
        if (shown == 6) { printf(" ... (--json lists all)"); break; }
        printf("%s %s (%s)", shown ? "," : "", str(u, "module"), str(u, "dtype"));
        shown++;
    }
    printf("\n");

    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(vis, "present"))) {
        printf("  %-17s %s: %d tensors, %s parameters, %s;", "vision sidecar", str(vis, "file"),
               (int)num(vis, "tensors"), human_count(num(vis, "parameters"), b1, sizeof b1),
               human_bytes(num(vis, "file_bytes"), b2, sizeof b2));
        const cJSON *c, *comps = cJSON_GetObjectItemCaseSensitive(vis, "components");
        cJSON_ArrayForEach(c, comps) printf(" %s (%d)", c->string, (int)c->valuedouble);
        printf("\n");
    } else {
        printf("  %-17s none (text-only: images are not accepted)\n", "vision sidecar");
    }

    const cJSON *tf = cJSON_GetObjectItemCaseSensitive(d, "tokenizer_files"), *t;
    printf("  %-17s", "tokenizer files");
    int any = 0;
    cJSON_ArrayForEach(t, tf) if (cJSON_IsTrue(t)) { printf(" %s", t->string); any = 1; }
    printf("%s\n", any ? "" : " none");
    if (str(d, "chat_template")) printf("  %-17s %s\n", "chat template", str(d, "chat_template"));
}

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("inspect", "expected one model folder, got %d arguments", argc - optind);

    optiq_error err;
    optiq_model_info *info = NULL;
    if (optiq_model_info_open(argv[optind], &info, &err) != OPTIQ_OK) return cli_fail("%s", err.message);
    char *text = optiq_model_info_json(info);
    optiq_model_info_free(info);
    if (!text) return cli_fail("out of memory");
    int rc = 0;
    if (json) {
        printf("%s\n", text);
    } else {
        cJSON *d = cJSON_Parse(text);
        if (d) print_summary(d);
        else rc = cli_fail("internal error: model description is not valid JSON");
        cJSON_Delete(d);
    }
    optiq_free(text);
    return rc;
}
