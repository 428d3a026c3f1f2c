/*
 * cmd_serve.c — `optiq serve --model DIR`: the OpenAI / Anthropic compatible
 * HTTP server (src/server/server.c) in the foreground until SIGINT/SIGTERM.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "server/server.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq serve --model DIR [--host ADDR] [--port N] [--api-key KEY] [options]\n\n"
            "Serve the model over HTTP with OpenAI (/v1/chat/completions, /v1/completions,\n"
            "/v1/models) and Anthropic (/v1/messages, /v1/messages/count_tokens) compatible\n"
            "routes, plus GET /health. Runs until SIGINT or SIGTERM; one log line per request\n"
            "goes to standard error.\n\n"
            "Options:\n"
            "  --model DIR                 model folder (config.json, model*.safetensors, tokenizer files)\n"
            "  --host ADDR                 address to listen on (IPv4 / IPv6 literal or localhost;\n"
            "                              default 127.0.0.1)\n"
            "  --port N                    port (default 8080; 0: any free port, printed when ready)\n"
            "  --api-key KEY               require 'Authorization: Bearer KEY' or 'x-api-key: KEY'\n"
            "                              (GET /health stays open)\n"
            "  --threads N                 threads (default: physical cores)\n"
            "  --ctx N                     context length in tokens (default: the model's maximum)\n"
            "  --exact                     f32 activations in every product (default: the fast path)\n"
            "  --allow-remote-images       fetch http(s) image URLs (default: refused with 400); the\n"
            "                              host must resolve to public addresses only: loopback,\n"
            "                              private, link-local, CGNAT, multicast, ... are refused;\n"
            "                              at most 3 redirects, 10 s in all\n"
            "  --allow-image-host ADDR     with --allow-remote-images: also allow this IP address\n"
            "                              (exact match after resolution; repeatable)\n"
            "  --max-image-bytes N         with --allow-remote-images: size limit of one fetched\n"
            "                              image (default 20 MiB)\n"
            "  --timeout S                 close a connection silent for S seconds (default 30)\n"
            "  --header-timeout S          close a connection whose request headers are not complete\n"
            "                              S seconds after it opened or its previous response ended,\n"
            "                              however slowly bytes keep coming (default 10)\n"
            "  --parallel N                generations run at once, their decode steps batched (default 4)\n"
            "  --max-queue N               requests waiting beyond those; more get 429 (default 64)\n"
            "  --body-timeout S            close a connection whose request body is not complete S\n"
            "                              seconds after its headers (default 60)\n"
            "  --help                      show this help\n");
}

int cmd_serve(int argc, char **argv) {
    enum { O_MODEL = 1, O_HOST, O_PORT, O_KEY, O_THREADS, O_CTX, O_EXACT, O_REMOTE, O_IMGHOST, O_IMGBYTES, O_TIMEOUT,
           O_HDR_TIMEOUT, O_BODY_TIMEOUT, O_PARALLEL, O_MAX_QUEUE };
    static const struct option opts[] = {{"model", required_argument, 0, O_MODEL},
                                         {"host", required_argument, 0, O_HOST},
                                         {"port", required_argument, 0, O_PORT},
                                         {"api-key", required_argument, 0, O_KEY},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"ctx", required_argument, 0, O_CTX},
                                         {"exact", no_argument, 0, O_EXACT},
                                         {"allow-remote-images", no_argument, 0, O_REMOTE},
                                         {"allow-image-host", required_argument, 0, O_IMGHOST},
                                         {"max-image-bytes", required_argument, 0, O_IMGBYTES},
                                         {"timeout", required_argument, 0, O_TIMEOUT},
                                         {"header-timeout", required_argument, 0, O_HDR_TIMEOUT},
                                         {"body-timeout", required_argument, 0, O_BODY_TIMEOUT},
                                         {"parallel", required_argument, 0, O_PARALLEL},
                                         {"max-queue", required_argument, 0, O_MAX_QUEUE},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    server_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.host = "127.0.0.1";
    cfg.port = 8080;
    cfg.engine = optiq_engine_default();
    enum { MAX_HOSTS = 64 };
    const char *hosts[MAX_HOSTS];
    size_t n_hosts = 0;
    long long v;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: cfg.model_dir = optarg; break;
        case O_HOST: cfg.host = optarg; break;
        case O_PORT:
            if (cli_parse_int("serve", "--port", optarg, 0, 65535, &v)) return 2;
            cfg.port = (int)v;
            break;
        case O_KEY:
            if (!*optarg) return cli_usage_error("serve", "--api-key takes a non-empty key");
            cfg.api_key = optarg;
            break;
        case O_THREADS:
            if (cli_parse_int("serve", "--threads", optarg, 1, 4096, &v)) return 2;
            cfg.engine.n_threads = (int)v;
            break;
        case O_CTX:
            if (cli_parse_int("serve", "--ctx", optarg, 1, INT64_MAX, &v)) return 2;
            cfg.engine.context = v;
            break;
        case O_EXACT: cfg.engine.exact = 1; break;
        case O_REMOTE: cfg.allow_remote_images = 1; break;
        case O_IMGHOST: {
            unsigned char a[sizeof(struct in6_addr)];
            if (inet_pton(AF_INET, optarg, a) != 1 && inet_pton(AF_INET6, optarg, a) != 1)
                return cli_usage_error("serve", "--allow-image-host takes an IPv4 or IPv6 address, not '%s'",
                                       optarg);
            if (n_hosts == MAX_HOSTS) return cli_usage_error("serve", "at most %d --allow-image-host", MAX_HOSTS);
            hosts[n_hosts++] = optarg;
            break;
        }
        case O_IMGBYTES:
            if (cli_parse_int("serve", "--max-image-bytes", optarg, 1, (long long)1 << 40, &v)) return 2;
            cfg.max_image_bytes = (size_t)v;
            break;
        case O_TIMEOUT:
            if (cli_parse_int("serve", "--timeout", optarg, 1, 86400, &v)) return 2;
            cfg.timeout_s = (unsigned)v;
            break;
        case O_HDR_TIMEOUT:
            if (cli_parse_int("serve", "--header-timeout", optarg, 1, 86400, &v)) return 2;
            cfg.header_timeout_s = (unsigned)v;
            break;
        case O_PARALLEL:
            if (cli_parse_int("serve", "--parallel", optarg, 1, 256, &v)) return 2;
            cfg.parallel = (size_t)v;
            break;
        case O_MAX_QUEUE:
            if (cli_parse_int("serve", "--max-queue", optarg, 1, 100000, &v)) return 2;
            cfg.max_queue = (size_t)v;
            break;
        case O_BODY_TIMEOUT:
            if (cli_parse_int("serve", "--body-timeout", optarg, 1, 86400, &v)) return 2;
            cfg.body_timeout_s = (unsigned)v;
            break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("serve", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("serve", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
    if (!cfg.model_dir) return cli_usage_error("serve", "--model DIR is required");
    if ((n_hosts || cfg.max_image_bytes) && !cfg.allow_remote_images)
        return cli_usage_error("serve", "--allow-image-host and --max-image-bytes need --allow-remote-images");
    cfg.allow_image_hosts = hosts;
    cfg.n_allow_image_hosts = n_hosts;
    optiq_error err = {0};
    if (server_run(&cfg, &err) != OPTIQ_OK) return cli_fail("%s", err.message);
    return 0;
}
