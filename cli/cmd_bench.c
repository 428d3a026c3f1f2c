/*
 * cmd_bench.c — `optiq bench [--json]`: kernel throughput next to this
 * machine's memory bandwidth (the benchmarks themselves live in the library,
 * src/bench/).
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq bench [--threads N] [--seconds S] [--cpu LEVEL] [--model DIR [--text-file F]] [--json]\n\n"
            "Measure this machine's memory read bandwidth and the throughput of the\n"
            "quantized matrix-vector product (GB/s of packed weight bytes) for 4- and\n"
            "8-bit affine weights at 1024x3584 and 3584x1024, with 1..N threads; with\n"
            "--model, also the encoding speed of the folder's tokenizer on one core.\n\n"
            "Options:\n"
            "  --threads N   largest thread count to run (default: physical cores)\n"
            "  --seconds S   minimum time per case (default 0.4)\n"
            "  --cpu LEVEL   cap the kernel level: portable, avx2, avx512\n"
            "  --model DIR   also time the tokenizer of this model folder\n"
            "  --text-file F text to encode (default: 1 MB of generated word-like text)\n"
            "  --json        print the results as JSON (keys: docs/cli.md)\n"
            "  --help        show this help\n");
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void print_table(const cJSON *d) {
    const cJSON *cpu = cJSON_GetObjectItemCaseSensitive(d, "cpu"), *e;
    printf("kernel level %s, %d physical cores\n\n", cJSON_GetObjectItemCaseSensitive(cpu, "kernel_level")->valuestring,
           (int)num(cpu, "physical_cores"));
    printf("memory read bandwidth\n");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d, "memory_read_bandwidth"))
        printf("  %d thread(s)  %6.2f GB/s\n", (int)num(e, "threads"), num(e, "gbs"));
    printf("\nquantized mat-vec (y = W x, affine, bf16 scales)   streamed from DRAM        from cache\n");
    printf("  bits  group  rows x cols   threads  kernel     us/call   GB/s  of mem bw   us/call   GB/s\n");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d, "qmatvec"))
        printf("  %4d  %5d  %4d x %-5d  %7d  %-8s %9.1f %6.2f %9.0f%% %9.1f %6.2f\n", (int)num(e, "bits"),
               (int)num(e, "group_size"), (int)num(e, "rows"), (int)num(e, "cols"), (int)num(e, "threads"),
               cJSON_GetObjectItemCaseSensitive(e, "kernel")->valuestring, num(e, "streamed_us"),
               num(e, "streamed_gbs"), 100.0 * num(e, "streamed_fraction_of_memory_bw"), num(e, "cached_us"),
               num(e, "cached_gbs"));
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "tokenizer");
    if (t)
        printf("\ntokenizer encode (one core, %s, %.0f bytes, %.0f tokens): first pass %.1f MB/s, repeated %.1f MB/s\n",
               cJSON_GetObjectItemCaseSensitive(t, "text")->valuestring, num(t, "bytes"), num(t, "tokens"),
               num(t, "first_pass_mbps"), num(t, "repeated_mbps"));
}

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {{"threads", required_argument, 0, 't'}, {"seconds", required_argument, 0, 's'},
                                         {"cpu", required_argument, 0, 'c'},     {"json", no_argument, 0, 'j'},
                                         {"model", required_argument, 0, 'm'},   {"text-file", required_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    optiq_bench_params p = optiq_bench_default();
    int json = 0, c;
    char *end;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            p.max_threads = (int)strtol(optarg, &end, 10);
            if (*end || p.max_threads < 1 || p.max_threads > 64)
                return cli_usage_error("bench", "--threads wants an integer in 1..64, got '%s'", optarg);
            break;
        case 's':
            p.seconds = strtod(optarg, &end);
            if (*end || !(p.seconds > 0) || p.seconds > 60)
                return cli_usage_error("bench", "--seconds wants a number in (0, 60], got '%s'", optarg);
            break;
        case 'c': p.cpu_level = optarg; break;
        case 'm': p.model_dir = optarg; break;
        case 'f': p.text_file = optarg; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("bench", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("bench", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (p.text_file && !p.model_dir) return cli_usage_error("bench", "--text-file needs --model");
    if (optind != argc) return cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);

    optiq_error err;
    char *text = NULL;
    if (optiq_bench_run(&p, &text, &err) != OPTIQ_OK) return cli_fail("%s", err.message);
    if (json) {
        printf("%s\n", text);
    } else {
        cJSON *d = cJSON_Parse(text);
        if (d) print_table(d);
        cJSON_Delete(d);
    }
    optiq_free(text);
    return 0;
}
