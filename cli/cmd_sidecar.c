/*
 * cmd_sidecar.c — `optiq sidecar --base BF16_DIR --quant-dir QUANT_DIR`: give
 * a quantized language folder its bf16 vision sidecar from the bf16 base it
 * was made from (optiq_sidecar_build; mlx-optiq's build_vision_sidecar).
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq sidecar --base BF16_DIR --quant-dir QUANT_DIR [--force] [--json]\n\n"
            "Extract the bf16 vision (and audio) towers of a bf16 base checkpoint into\n"
            "QUANT_DIR/optiq_vision.safetensors, list them in QUANT_DIR's\n"
            "model.safetensors.index.json when it has one, restore the multimodal keys of\n"
            "its config.json and copy the image processor files it lacks. The quantized\n"
            "language shards are not touched: stock mlx-lm still loads the folder text-only,\n"
            "optiq (and mlx-optiq) load it with images.\n\n"
            "Options:\n"
            "  --base DIR        the bf16 base model folder (local)\n"
            "  --quant-dir DIR   the quantized model folder to equip\n"
            "  --force           overwrite an existing sidecar\n"
            "  --json            print {\"sidecar\", \"n_tensors\", \"bytes\", \"dtype\", \"base\",\n"
            "                    \"index_updated\", \"config_keys\", \"copied\"}\n"
            "  --help            show this help\n");
}

int cmd_sidecar(int argc, char **argv) {
    enum { O_BASE = 1, O_QUANT, O_FORCE, O_JSON };
    static const struct option opts[] = {{"base", required_argument, 0, O_BASE},
                                         {"quant-dir", required_argument, 0, O_QUANT},
                                         {"force", no_argument, 0, O_FORCE},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *base = NULL, *quant = NULL;
    int force = 0, json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_BASE: base = optarg; break;
        case O_QUANT: quant = optarg; break;
        case O_FORCE: force = 1; break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("sidecar", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("sidecar", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage_error("sidecar", "unexpected argument '%s'", argv[optind]);
    if (!base || !quant) return cli_usage_error("sidecar", "--base and --quant-dir are required");
    optiq_error err;
    char *summary = NULL;
    if (optiq_sidecar_build(base, quant, force, &summary, &err) != OPTIQ_OK) return cli_fail("%s", err.message);
    int rc = 0;
    if (json)
        printf("%s\n", summary);
    else {
        cJSON *j = cJSON_Parse(summary);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "n_tensors"), *b = cJSON_GetObjectItemCaseSensitive(j, "bytes");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "sidecar");
        if (!j || !cJSON_IsNumber(n) || !cJSON_IsNumber(b) || !cJSON_IsString(p))
            rc = cli_fail("unexpected summary");
        else
            printf("wrote %s: %.0f tensors, %.1f MB (bf16)\n", p->valuestring, n->valuedouble, b->valuedouble / 1e6);
        cJSON_Delete(j);
    }
    optiq_free(summary);
    return rc;
}
