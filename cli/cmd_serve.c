/*
 * cmd_serve.c — `optiq serve --model DIR`: the OpenAI / Anthropic compatible
 * HTTP server (src/server/server.c) in the foreground until SIGINT/SIGTERM.
 * Its options are parsed by cli_serve_options, which `optiq lab`
 * (cmd_lab.c) shares.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "server/server.h"

const char CLI_SERVE_OPTIONS_HELP[] =
    "  --model DIR                 model folder (config.json, model*.safetensors, tokenizer files)\n"
    "  --host ADDR                 address to listen on (IPv4 / IPv6 literal or localhost;\n"
    "                              default 127.0.0.1)\n"
    "  --port N                    port (default 8080; 0: any free port, printed when ready)\n"
    "  --api-key KEY               require 'Authorization: Bearer KEY' or 'x-api-key: KEY'\n"
    "                              (GET /health and the Lab's page stay open)\n"
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
    "  --prefix-cache MB           keep finished requests' model states, up to MB MiB, so a\n"
    "                              prompt that starts like one of them (the next turn of a\n"
    "                              conversation) only runs its new tokens (default 1024; 0: off)\n"
    "  --prefix-block N            tokens between a prompt's state checkpoints (default 256)\n"
    "  --vision-cache MB           keep images' soft tokens, up to MB MiB, so an image sent\n"
    "                              again is not encoded again (default 256; 0: off)\n"
    "  --body-timeout S            close a connection whose request body is not complete S\n"
    "                              seconds after its headers (default 60)\n"
    "  --help                      show this help\n";

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq serve --model DIR [--host ADDR] [--port N] [--api-key KEY] [options]\n\n"
            "Serve the model over HTTP with OpenAI (/v1/chat/completions, /v1/completions,\n"
            "/v1/models) and Anthropic (/v1/messages, /v1/messages/count_tokens) compatible\n"
            "routes, plus GET /health, /metrics, /info and the Lab's page at /lab/ (see\n"
            "'optiq lab'). Runs until SIGINT or SIGTERM; one log line per request goes to\n"
            "standard error.\n\n"
            "Options:\n%s",
            CLI_SERVE_OPTIONS_HELP);
}

int cli_serve_options(const char *cmd, int argc, char **argv, void (*help)(FILE *), server_config *cfg,
                      const char **hosts, int *no_browser) {
    enum { O_MODEL = 1, O_HOST, O_PORT, O_KEY, O_THREADS, O_CTX, O_EXACT, O_REMOTE, O_IMGHOST, O_IMGBYTES, O_TIMEOUT,
           O_HDR_TIMEOUT, O_BODY_TIMEOUT, O_PARALLEL, O_MAX_QUEUE, O_NO_BROWSER, O_PREFIX_CACHE, O_PREFIX_BLOCK,
           O_VISION_CACHE };
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
                                         {"no-browser", no_argument, 0, O_NO_BROWSER},
                                         {"prefix-cache", required_argument, 0, O_PREFIX_CACHE},
                                         {"prefix-block", required_argument, 0, O_PREFIX_BLOCK},
                                         {"vision-cache", required_argument, 0, O_VISION_CACHE},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    cfg->engine = optiq_engine_default();
    size_t n_hosts = 0;
    long long v;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: cfg->model_dir = optarg; break;
        case O_HOST: cfg->host = optarg; break;
        case O_PORT:
            if (cli_parse_int(cmd, "--port", optarg, 0, 65535, &v)) return 2;
            cfg->port = (int)v;
            break;
        case O_KEY:
            if (!*optarg) return cli_usage_error(cmd, "--api-key takes a non-empty key");
            cfg->api_key = optarg;
            break;
        case O_THREADS:
            if (cli_parse_int(cmd, "--threads", optarg, 1, 4096, &v)) return 2;
            cfg->engine.n_threads = (int)v;
            break;
        case O_CTX:
            if (cli_parse_int(cmd, "--ctx", optarg, 1, INT64_MAX, &v)) return 2;
            cfg->engine.context = v;
            break;
        case O_EXACT: cfg->engine.exact = 1; break;
        case O_REMOTE: cfg->allow_remote_images = 1; break;
        case O_IMGHOST: {
            unsigned char a[sizeof(struct in6_addr)];
            if (inet_pton(AF_INET, optarg, a) != 1 && inet_pton(AF_INET6, optarg, a) != 1)
                return cli_usage_error(cmd, "--allow-image-host takes an IPv4 or IPv6 address, not '%s'", optarg);
            if (n_hosts == CLI_MAX_IMAGE_HOSTS)
                return cli_usage_error(cmd, "at most %d --allow-image-host", CLI_MAX_IMAGE_HOSTS);
            hosts[n_hosts++] = optarg;
            break;
        }
        case O_IMGBYTES:
            if (cli_parse_int(cmd, "--max-image-bytes", optarg, 1, (long long)1 << 40, &v)) return 2;
            cfg->max_image_bytes = (size_t)v;
            break;
        case O_TIMEOUT:
            if (cli_parse_int(cmd, "--timeout", optarg, 1, 86400, &v)) return 2;
            cfg->timeout_s = (unsigned)v;
            break;
        case O_HDR_TIMEOUT:
            if (cli_parse_int(cmd, "--header-timeout", optarg, 1, 86400, &v)) return 2;
            cfg->header_timeout_s = (unsigned)v;
            break;
        case O_PARALLEL:
            if (cli_parse_int(cmd, "--parallel", optarg, 1, 256, &v)) return 2;
            cfg->parallel = (size_t)v;
            break;
        case O_MAX_QUEUE:
            if (cli_parse_int(cmd, "--max-queue", optarg, 1, 100000, &v)) return 2;
            cfg->max_queue = (size_t)v;
            break;
        case O_BODY_TIMEOUT:
            if (cli_parse_int(cmd, "--body-timeout", optarg, 1, 86400, &v)) return 2;
            cfg->body_timeout_s = (unsigned)v;
            break;
        case O_PREFIX_CACHE:
            if (cli_parse_int(cmd, "--prefix-cache", optarg, 0, (long long)1 << 30, &v)) return 2;
            cfg->engine.prefix_cache_mb = v;
            break;
        case O_PREFIX_BLOCK:
            if (cli_parse_int(cmd, "--prefix-block", optarg, 1, (long long)1 << 20, &v)) return 2;
            cfg->engine.prefix_block = v;
            break;
        case O_VISION_CACHE:
            if (cli_parse_int(cmd, "--vision-cache", optarg, 0, (long long)1 << 30, &v)) return 2;
            cfg->engine.vision_cache_mb = v;
            break;
        case O_NO_BROWSER:
            if (!no_browser) return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
            *no_browser = 1;
            break;
        case 'h': help(stdout); return 1;
        case ':': return cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!cfg->model_dir) return cli_usage_error(cmd, "--model DIR is required");
    if ((n_hosts || cfg->max_image_bytes) && !cfg->allow_remote_images)
        return cli_usage_error(cmd, "--allow-image-host and --max-image-bytes need --allow-remote-images");
    cfg->allow_image_hosts = hosts;
    cfg->n_allow_image_hosts = n_hosts;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    server_config cfg;
    const char *hosts[CLI_MAX_IMAGE_HOSTS];
    int rc = cli_serve_options("serve", argc, argv, usage, &cfg, hosts, NULL);
    if (rc) return rc == 1 ? 0 : rc;
    optiq_error err = {0};
    if (server_run(&cfg, &err) != OPTIQ_OK) return cli_fail("%s", err.message);
    return 0;
}
