/*
 * fetch.c — http(s) image download with an address policy (see fetch.h).
 *
 * One hop: parse the URL (libcurl's URL parser, so that the host checked here
 * is the host libcurl connects to), check the scheme, resolve the host with
 * getaddrinfo, refuse when any address is not public (or allowed), then run
 * the transfer with the checked addresses pinned (CURLOPT_RESOLVE) and a
 * socket callback that checks the address once more right before connect.
 * A 3xx answer with a Location starts the next hop; the time budget covers
 * all hops.
 *
 * The lookup runs on a detached helper thread that the fetching thread waits
 * for until the deadline: getaddrinfo cannot be interrupted, so a slow
 * resolver is abandoned (the helper finishes on its own and frees what it
 * got) instead of holding the request past its time budget.
 */
#include "server/fetch.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

fetch_policy fetch_policy_default(void) {
    fetch_policy p;
    memset(&p, 0, sizeof p);
    p.max_bytes = (size_t)20 << 20;
    p.timeout_ms = 10000;
    p.connect_timeout_ms = 5000;
    p.max_redirects = 3;
    return p;
}

/* ---- address classes ----------------------------------------------------- */

static const char *v4_class(uint32_t a) {
    if ((a >> 24) == 0) return "unspecified";
    if ((a >> 24) == 127) return "loopback";
    if ((a >> 24) == 10 || (a >> 20) == 0xAC1 || (a >> 16) == 0xC0A8) return "private";
    if ((a >> 16) == 0xA9FE) return "link-local";
    if ((a >> 22) == (100u << 2 | 1)) return "shared (CGNAT)";
    if (a == 0xFFFFFFFFu) return "broadcast";
    if ((a >> 28) == 0xE) return "multicast";
    if ((a >> 28) == 0xF) return "reserved";
    if ((a >> 8) == 0xC00000 || (a >> 8) == 0xC00002 || (a >> 8) == 0xC63364 || (a >> 8) == 0xCB0071 ||
        (a >> 17) == (0xC612 >> 1))
        return "reserved"; /* 192.0.0/24, 192.0.2/24, 198.51.100/24, 203.0.113/24, 198.18/15 */
    return NULL;
}

static uint32_t be32(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static const char *v6_class(const uint8_t *b) {
    static const uint8_t zero[16];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (memcmp(b, zero, 15) == 0 && b[15] == 0) return "unspecified";
    if (memcmp(b, zero, 15) == 0 && b[15] == 1) return "loopback";
    if (memcmp(b, mapped, 12) == 0) {
        return v4_class(be32(b + 12)); /* ::ffff:a.b.c.d is the IPv4 address itself */
    }
    if (memcmp(b, zero, 12) == 0) return "reserved";       /* deprecated IPv4-compatible ::a.b.c.d */
    if (memcmp(b, nat64, 12) == 0) return v4_class(be32(b + 12)); /* 64:ff9b::/96 */
    if (b[0] == 0x20 && b[1] == 0x02) return v4_class(be32(b + 2)); /* 6to4 2002::/16 */
    if ((b[0] & 0xfe) == 0xfc) return "private";           /* fc00::/7 */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "link-local"; /* fe80::/10 */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return "private";    /* fec0::/10 site-local */
    if (b[0] == 0xff) return "multicast";
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return "reserved"; /* 2001:db8::/32 */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) return "reserved";       /* Teredo 2001::/32 */
    if (b[0] == 0x01 && b[1] == 0 && memcmp(b + 2, zero, 6) == 0) return "reserved";     /* discard 100::/64 */
    if ((b[0] & 0xe0) != 0x20) return "reserved"; /* outside global unicast 2000::/3 */
    return NULL;
}

const char *fetch_address_class(const struct sockaddr *sa) {
    if (!sa) return "unknown";
    if (sa->sa_family == AF_INET) return v4_class(ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr));
    if (sa->sa_family == AF_INET6)
        return v6_class(((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr);
    return "unknown";
}

static void addr_text(const struct sockaddr *sa, char *out, size_t n) {
    out[0] = 0;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)n);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)n);
}

int fetch_address_allowed(const fetch_policy *p, const struct sockaddr *sa) {
    if (!p || !sa) return 0;
    for (size_t i = 0; i < p->n_allow; i++) {
        const char *s = p->allow[i];
        if (!s) continue;
        struct in_addr a4;
        struct in6_addr a6;
        if (sa->sa_family == AF_INET && inet_pton(AF_INET, s, &a4) == 1 &&
            memcmp(&a4, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, sizeof a4) == 0)
            return 1;
        if (sa->sa_family == AF_INET6 && inet_pton(AF_INET6, s, &a6) == 1 &&
            memcmp(&a6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, sizeof a6) == 0)
            return 1;
    }
    return 0;
}

/* ---- transfer ------------------------------------------------------------ */

typedef struct hop {
    const fetch_policy *p;
    uint8_t *buf;
    size_t len, cap, max;
    int too_large;
    char refused[200]; /* set by the socket callback */
} hop;

static optiq_status fail(optiq_error *err, optiq_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static optiq_status fail(optiq_error *err, optiq_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->status = st;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return st;
}

static const char *article(const char *cls) { return strchr("aeiou", cls[0]) ? "an" : "a"; }

/* NULL when sa may be reached, else the refusal in msg. */
static const char *check_addr(const fetch_policy *p, const struct sockaddr *sa, char *msg, size_t n) {
    if (fetch_address_allowed(p, sa)) return NULL;
    const char *cls = fetch_address_class(sa);
    if (!cls) return NULL;
    char a[INET6_ADDRSTRLEN];
    addr_text(sa, a, sizeof a);
    snprintf(msg, n, "image URL resolves to %s %s address %s", article(cls), cls, a);
    return msg;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user) {
    hop *h = user;
    size_t n = size * nmemb;
    if (n > h->max - h->len) {
        h->too_large = 1;
        return 0;
    }
    if (h->len + n > h->cap) {
        size_t cap = h->cap ? h->cap : 65536;
        while (cap < h->len + n) cap *= 2;
        if (cap > h->max) cap = h->max;
        uint8_t *nb = realloc(h->buf, cap);
        if (!nb) return 0;
        h->buf = nb;
        h->cap = cap;
    }
    memcpy(h->buf + h->len, ptr, n);
    h->len += n;
    return n;
}

static curl_socket_t on_socket(void *user, curlsocktype purpose, struct curl_sockaddr *a) {
    hop *h = user;
    (void)purpose;
    if (check_addr(h->p, &a->addr, h->refused, sizeof h->refused)) return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype, a->protocol);
}

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- time-bounded name lookup ----------------------------------------------- */

/* The resolver; tests replace it with a slow one. */
static int (*resolve_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **) = getaddrinfo;

typedef struct lookup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;                /* the waiter and the helper thread */
    int done, gai;
    char *name, *port;
    struct addrinfo *res;
} lookup;

static void lookup_unref(lookup *l) {
    pthread_mutex_lock(&l->mu);
    int last = --l->refs == 0;
    pthread_mutex_unlock(&l->mu);
    if (!last) return;
    if (l->res) freeaddrinfo(l->res);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l->name);
    free(l->port);
    free(l);
}

static void *lookup_main(void *arg) {
    lookup *l = arg;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res = NULL;
    int gai = resolve_fn(l->name, l->port, &hints, &res);
    pthread_mutex_lock(&l->mu);
    l->gai = gai;
    l->res = gai == 0 ? res : NULL;
    l->done = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    lookup_unref(l);
    return NULL;
}

/* getaddrinfo(name, port) bounded by deadline (CLOCK_MONOTONIC ms): 0 with
 * *res (free with freeaddrinfo), a getaddrinfo error code in *gai (return 0,
 * *res NULL), or -1 on timeout, -2 when out of memory / threads. */
static int resolve_until(const char *name, const char *port, int64_t deadline, struct addrinfo **res, int *gai) {
    *res = NULL;
    *gai = 0;
    lookup *l = calloc(1, sizeof *l);
    if (!l) return -2;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int bad = pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (bad) {
        free(l);
        return -2;
    }
    pthread_mutex_init(&l->mu, NULL);
    l->refs = 2;
    l->name = strdup(name);
    l->port = strdup(port);
    pthread_attr_t ta;
    pthread_t t;
    int started = 0;
    if (l->name && l->port && pthread_attr_init(&ta) == 0) {
        pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
        started = pthread_create(&t, &ta, lookup_main, l) == 0;
        pthread_attr_destroy(&ta);
    }
    if (!started) {
        l->refs = 1;
        lookup_unref(l);
        return -2;
    }
    struct timespec ts = {(time_t)(deadline / 1000), (long)(deadline % 1000) * 1000000L};
    pthread_mutex_lock(&l->mu);
    while (!l->done && pthread_cond_timedwait(&l->cv, &l->mu, &ts) == 0) {
    }
    int rc = -1;
    if (l->done) {
        rc = 0;
        *gai = l->gai;
        *res = l->res;
        l->res = NULL;
    }
    pthread_mutex_unlock(&l->mu);
    lookup_unref(l);
    return rc;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* One hop. *next gets the redirect target (malloc'd) on a 3xx answer. */
static optiq_status one_hop(const char *url, const fetch_policy *p, int64_t deadline, hop *h, char **next,
                            optiq_error *err) {
    optiq_status st = OPTIQ_OK;
    CURLU *u = curl_url();
    CURL *c = NULL;
    struct curl_slist *pin = NULL;
    struct addrinfo *res = NULL;
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL;
    *next = NULL;
    if (!u) return fail(err, OPTIQ_ERR_NOMEM, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "image URL %.200s is not a valid URL", url);
        goto done;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "image URL scheme %s is not allowed (http or https only)",
                  scheme ? scheme : "(none)");
        goto done;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "image URL must not carry credentials");
        goto done;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0] ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "image URL %.200s has no host", url);
        goto done;
    }
    /* resolve; IPv6 literals come bracketed */
    char name[512];
    size_t hl = strlen(host);
    int bracketed = host[0] == '[' && hl >= 2 && host[hl - 1] == ']';
    if (hl >= sizeof name || strchr(host, '%')) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "image URL host is not usable");
        goto done;
    }
    snprintf(name, sizeof name, "%.*s", (int)(bracketed ? hl - 2 : hl), host + bracketed);
    int gai = 0;
    int lk = resolve_until(name, port, deadline, &res, &gai);
    if (lk == -1) {
        st = fail(err, OPTIQ_ERR_IO, "image URL fetch timed out (looking up %.200s)", name);
        goto done;
    }
    if (lk == -2) {
        st = fail(err, OPTIQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (gai != 0 || !res) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "image URL host %.200s does not resolve (%s)", name,
                  gai ? gai_strerror(gai) : "no address");
        goto done;
    }
    /* every address must pass; the pinned list holds them all */
    char entry[2048];
    size_t el = (size_t)snprintf(entry, sizeof entry, "%s:%s:", host, port);
    int n_addr = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        char msg[200];
        if (check_addr(p, ai->ai_addr, msg, sizeof msg)) {
            st = fail(err, OPTIQ_ERR_INVALID_ARG, "%s", msg);
            goto done;
        }
        char a[INET6_ADDRSTRLEN];
        addr_text(ai->ai_addr, a, sizeof a);
        if (el + strlen(a) + 4 < sizeof entry)
            el += (size_t)snprintf(entry + el, sizeof entry - el, ai->ai_family == AF_INET6 ? "%s[%s]" : "%s%s",
                                   n_addr ? "," : "", a);
        n_addr++;
    }
    if (!n_addr) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "image URL host %.200s has no IP address", name);
        goto done;
    }
    int64_t left = deadline - now_ms();
    if (left <= 0) {
        st = fail(err, OPTIQ_ERR_IO, "image URL fetch timed out");
        goto done;
    }
    c = curl_easy_init();
    if (!c || (!bracketed && !(pin = curl_slist_append(NULL, entry)))) {
        st = fail(err, OPTIQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    h->len = 0;
    h->too_large = 0;
    h->refused[0] = 0;
    curl_easy_setopt(c, CURLOPT_CURLU, u);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    if (pin) curl_easy_setopt(c, CURLOPT_RESOLVE, pin);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->max);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)left);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, p->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "optiq-serve");
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_NONE);
    CURLcode rc = curl_easy_perform(c);
    if (h->refused[0]) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "%s", h->refused);
        goto done;
    }
    if (h->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        st = fail(err, OPTIQ_ERR_INVALID_ARG, "image at the URL is larger than %zu bytes", h->max);
        goto done;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        st = fail(err, OPTIQ_ERR_IO, "image URL fetch timed out");
        goto done;
    }
    if (rc != CURLE_OK) {
        st = fail(err, OPTIQ_ERR_IO, "image URL fetch failed: %s", curl_easy_strerror(rc));
        goto done;
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 300 && code < 400) {
        char *loc = NULL;
        curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &loc);
        if (!loc) {
            st = fail(err, OPTIQ_ERR_IO, "image URL answered HTTP %ld without a Location", code);
            goto done;
        }
        if (!(*next = strdup(loc))) st = fail(err, OPTIQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (code < 200 || code >= 300) st = fail(err, OPTIQ_ERR_IO, "image URL answered HTTP %ld", code);
done:
    curl_easy_cleanup(c);
    curl_slist_free_all(pin);
    if (res) freeaddrinfo(res);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_url_cleanup(u);
    return st;
}

optiq_status fetch_image(const char *url, const fetch_policy *pol, uint8_t **data, size_t *len, optiq_error *err) {
    fetch_policy p = pol ? *pol : fetch_policy_default();
    fetch_policy d = fetch_policy_default();
    if (!p.max_bytes) p.max_bytes = d.max_bytes;
    if (p.timeout_ms <= 0) p.timeout_ms = d.timeout_ms;
    if (p.connect_timeout_ms <= 0) p.connect_timeout_ms = d.connect_timeout_ms;
    if (p.max_redirects == 0) p.max_redirects = d.max_redirects;
    if (p.max_redirects < 0) p.max_redirects = 0;
    *data = NULL;
    *len = 0;
    if (!url) return fail(err, OPTIQ_ERR_INVALID_ARG, "no image URL");
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) return fail(err, OPTIQ_ERR_IO, "libcurl could not be initialized");
    int64_t deadline = now_ms() + p.timeout_ms;
    hop h;
    memset(&h, 0, sizeof h);
    h.p = &p;
    h.max = p.max_bytes;
    char *cur = strdup(url);
    if (!cur) return fail(err, OPTIQ_ERR_NOMEM, "out of memory");
    optiq_status st = OPTIQ_OK;
    for (int hops = 0;; hops++) {
        char *next = NULL;
        st = one_hop(cur, &p, deadline, &h, &next, err);
        free(cur);
        cur = next;
        if (st != OPTIQ_OK || !next) break;
        if (hops + 1 > p.max_redirects) {
            st = fail(err, OPTIQ_ERR_INVALID_ARG, "too many redirects (more than %d)", p.max_redirects);
            break;
        }
    }
    free(cur);
    if (st != OPTIQ_OK) {
        free(h.buf);
        return st;
    }
    if (h.len == 0) {
        free(h.buf);
        return fail(err, OPTIQ_ERR_INVALID_ARG, "image URL returned no data");
    }
    *data = h.buf;
    *len = h.len;
    return OPTIQ_OK;
}
