/*
 * cmd_bench.c — `optiq bench [--json]`: kernel throughput next to this
 * machine's memory bandwidth; `optiq bench --synthetic NAME`: a model's
 * prefill and decode speed on random weights of its exact shapes (the
 * benchmarks themselves live in the library, src/bench/).
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq bench [--threads N] [--seconds S] [--cpu LEVEL] [--model DIR [--text-file F]] [--json]\n"
            "       optiq bench --synthetic NAME [--threads N] [--prefill-tokens N] [--decode-tokens N] [--json]\n"
            "       optiq bench --synthetic NAME --serving [--sequences N] [--threads N] [--prefill-tokens N]\n"
            "                   [--decode-tokens N] [--json]\n\n"
            "Measure this machine's memory read bandwidth and the throughput of the\n"
            "quantized matrix-vector product (GB/s of packed weight bytes) for 4- and\n"
            "8-bit affine weights at 1024x3584 and 3584x1024, with 1..N threads; with\n"
            "--model, also the encoding speed of the folder's tokenizer on one core.\n\n"
            "With --synthetic, instead of the mat-vec cases: build random weights with\n"
            "the exact shapes of a real model (MLX affine 4-bit, group 64) in memory,\n"
            "load them with the normal loader and time prefill of a random prompt and\n"
            "greedy decode at 1, 2, 4, ... N threads, with peak RSS and the decode\n"
            "roofline (memory bandwidth / weight bytes read per token); then the time\n"
            "to encode one 1024x768 image with the model's vision tower shape (random\n"
            "bf16 weights) at the same thread counts, for models that have one.\n"
            "Models: qwen3_5-0.8b, gemma4-e2b (text and vision towers).\n\n"
            "Options:\n"
            "  --threads N          largest thread count to run (default: physical cores;\n"
            "                       with --synthetic at least 2)\n"
            "  --seconds S          minimum time per case (default 0.4)\n"
            "  --cpu LEVEL          cap the kernel level: portable, avx2, avx512\n"
            "  --model DIR          also time the tokenizer of this model folder\n"
            "  --text-file F        text to encode (default: 1 MB of generated word-like text)\n"
            "  --synthetic NAME     benchmark a synthetic model (see above)\n"
            "  --prefill-tokens N   synthetic: prompt length (default 512)\n"
            "  --mask-tokenizer DIR synthetic: time decode again with a JSON-schema token mask over\n"
            "                       DIR's tokenizer (the cost of response_format / forced tool calls)\n"
            "  --decode-tokens N    synthetic: greedy decode steps (default 128; --serving: 32)\n"
            "  --serving            synthetic: instead, decode of --sequences sequences batched\n"
            "                       against one, and time to first token of a conversation's\n"
            "                       second turn with the prefix cache against its first turn of\n"
            "                       --prefill-tokens tokens (default 2000), at --threads threads\n"
            "  --sequences N        serving: sequences decoded at once (default 8)\n"
            "  --json               print the results as JSON (keys: docs/cli.md)\n"
            "  --help               show this help\n");
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "?";
}

static void print_serving(const cJSON *s) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(s, "decode"), *x = cJSON_GetObjectItemCaseSensitive(s, "prefix");
    printf("\nserving %s, %d threads\n", str(s, "model"), (int)num(s, "threads"));
    printf("  decode, %d steps: 1 sequence %.2f tokens/s; %d sequences batched %.2f tokens/s in all (x%.2f)\n",
           (int)num(d, "steps"), num(d, "single_tokens_per_s"), (int)num(d, "sequences"), num(d, "batched_tokens_per_s"),
           num(d, "speedup"));
    printf("  time to first token: turn 1 (%d tokens) %.3f s; turn 2 (%d tokens, %d restored) %.3f s (x%.1f), "
           "%.3f s without the prefix cache; logits %s\n",
           (int)num(x, "turn1_prompt_tokens"), num(x, "turn1_ttft_s"), (int)num(x, "turn2_prompt_tokens"),
           (int)num(x, "restored_tokens"), num(x, "turn2_ttft_s"), num(x, "speedup_vs_turn1"),
           num(x, "turn2_uncached_ttft_s"), cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "identical_logits"))
                                                ? "identical" : "DIFFERENT");
}

static void print_synthetic(const cJSON *s) {
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(s, "quantization"), *e;
    printf("\nsynthetic %s (%s, %s %d-bit, group %d): %.1f M matrix parameters, %.1f MB of weights\n", str(s, "model"),
           str(s, "model_type"), str(q, "mode"), (int)num(q, "bits"), (int)num(q, "group_size"),
           num(s, "matrix_parameters") / 1e6, num(s, "weight_bytes") / 1e6);
    printf("  built in %.2f s, loaded in %.2f s; weights RSS %.1f MB; decode reads %.1f MB per token\n",
           num(s, "build_seconds"), num(s, "load_seconds"), num(s, "weights_rss_bytes") / 1e6,
           num(s, "decode_bytes_per_token") / 1e6);
    printf("  prompt %d random tokens (prefill calls of %d), %d greedy decode tokens\n\n", (int)num(s, "prompt_tokens"),
           (int)num(s, "prefill_chunk"), (int)num(s, "decode_tokens"));
    printf("  threads  prefill tok/s  decode tok/s  ms/token      mem bw GB/s     roofline tok/s  of roofline"
           "  peak RSS MB\n");
    printf("                                          mean / median  before / after\n");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(s, "runs"))
        printf("  %7d  %13.1f  %12.2f  %6.2f / %6.2f  %6.2f / %6.2f  %14.2f  %10.0f%%  %11.1f\n",
               (int)num(e, "threads"), num(e, "prefill_tokens_per_s"), num(e, "decode_tokens_per_s"),
               num(e, "decode_ms_per_token"), num(e, "decode_median_ms_per_token"), num(e, "memory_bw_before_gbs"),
               num(e, "memory_bw_after_gbs"), num(e, "roofline_tokens_per_s"),
               100.0 * num(e, "decode_fraction_of_roofline"), num(e, "peak_rss_bytes") / 1e6);
    printf("  (roofline = the higher of the two bandwidths / decode bytes per token)\n");
    const cJSON *mask = cJSON_GetObjectItemCaseSensitive(s, "mask");
    if (!mask) return;
    printf("\n  with a JSON-schema token mask over %s (%d tokens):\n", str(mask, "tokenizer"),
           (int)num(mask, "tokenizer_vocab"));
    printf("  threads  decode tok/s  masked tok/s  mask ms/token  slowdown  documents\n");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(s, "runs"))
        printf("  %7d  %12.2f  %12.2f  %13.3f  %7.1f%%  %9d\n", (int)num(e, "threads"), num(e, "decode_tokens_per_s"),
               num(e, "masked_decode_tokens_per_s"), num(e, "mask_ms_per_token"),
               100.0 * num(e, "mask_decode_slowdown"), (int)num(e, "mask_documents"));
}

static void print_qmatvec(const cJSON *d) {
    const cJSON *e;
    printf("\nquantized mat-vec (y = W x, affine, bf16 scales)   streamed from DRAM        from cache\n");
    printf("  bits  group  rows x cols   threads  kernel     us/call   GB/s  of mem bw   us/call   GB/s\n");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d, "qmatvec"))
        printf("  %4d  %5d  %4d x %-5d  %7d  %-8s %9.1f %6.2f %9.0f%% %9.1f %6.2f\n", (int)num(e, "bits"),
               (int)num(e, "group_size"), (int)num(e, "rows"), (int)num(e, "cols"), (int)num(e, "threads"),
               cJSON_GetObjectItemCaseSensitive(e, "kernel")->valuestring, num(e, "streamed_us"),
               num(e, "streamed_gbs"), 100.0 * num(e, "streamed_fraction_of_memory_bw"), num(e, "cached_us"),
               num(e, "cached_gbs"));
}

static void print_table(const cJSON *d) {
    const cJSON *cpu = cJSON_GetObjectItemCaseSensitive(d, "cpu"), *e;
    printf("kernel level %s, %d physical cores\n\n", cJSON_GetObjectItemCaseSensitive(cpu, "kernel_level")->valuestring,
           (int)num(cpu, "physical_cores"));
    printf("memory read bandwidth\n");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d, "memory_read_bandwidth"))
        printf("  %d thread(s)  %6.2f GB/s\n", (int)num(e, "threads"), num(e, "gbs"));
    const cJSON *syn = cJSON_GetObjectItemCaseSensitive(d, "synthetic");
    if (syn) print_synthetic(syn);
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(d, "serving");
    if (sv) print_serving(sv);
    const cJSON *vis = cJSON_GetObjectItemCaseSensitive(d, "vision");
    if (vis) {
        printf("\nvision tower of %s (%d blocks, width %d, %d heads, MLP %d -> %d), random bf16 weights:\n",
               str(vis, "model"), (int)num(vis, "depth"), (int)num(vis, "hidden_size"), (int)num(vis, "num_heads"),
               (int)num(vis, "intermediate_size"), (int)num(vis, "out_hidden_size"));
        printf("  encode one %dx%d image (%d patches -> %d soft tokens)\n", (int)num(vis, "image_width"),
               (int)num(vis, "image_height"), (int)num(vis, "patches"), (int)num(vis, "soft_tokens"));
        printf("  threads  preprocess s  tower s  total s\n");
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(vis, "runs"))
            printf("  %7d  %12.3f  %7.2f  %7.2f\n", (int)num(e, "threads"), num(e, "preprocess_seconds"),
                   num(e, "tower_seconds"), num(e, "total_seconds"));
    }
    if (cJSON_GetObjectItemCaseSensitive(d, "qmatvec")) print_qmatvec(d);
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
                                         {"synthetic", required_argument, 0, 'S'},
                                         {"prefill-tokens", required_argument, 0, 'P'},
                                         {"decode-tokens", required_argument, 0, 'D'},
                                         {"serving", no_argument, 0, 'V'},
                                         {"sequences", required_argument, 0, 'N'},
                                         {"mask-tokenizer", required_argument, 0, 'K'},
                                         {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    optiq_bench_params p = optiq_bench_default();
    int json = 0, c, p_given = 0, d_given = 0;
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
        case 'S': p.synthetic = optarg; break;
        case 'P':
        case 'D': {
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 65536)
                return cli_usage_error("bench", "%s wants an integer in 1..65536, got '%s'",
                                       c == 'P' ? "--prefill-tokens" : "--decode-tokens", optarg);
            *(c == 'P' ? &p.prefill_tokens : &p.decode_tokens) = (int)v;
            *(c == 'P' ? &p_given : &d_given) = 1;
            break;
        }
        case 'V': p.serving = 1; break;
        case 'K': p.mask_tokenizer = optarg; break;
        case 'N': {
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 256)
                return cli_usage_error("bench", "--sequences wants an integer in 1..256, got '%s'", optarg);
            p.sequences = (int)v;
            break;
        }
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("bench", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("bench", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (p.text_file && !p.model_dir) return cli_usage_error("bench", "--text-file needs --model");
    if (p.serving && !p.synthetic) return cli_usage_error("bench", "--serving needs --synthetic NAME");
    if (p.sequences && !p.serving) return cli_usage_error("bench", "--sequences needs --serving");
    if (p.mask_tokenizer && (!p.synthetic || p.serving))
        return cli_usage_error("bench", "--mask-tokenizer needs --synthetic NAME (without --serving)");
    if (p.serving && !p_given) p.prefill_tokens = 0; /* the serving defaults (bench_serving.h) */
    if (p.serving && !d_given) p.decode_tokens = 0;
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
