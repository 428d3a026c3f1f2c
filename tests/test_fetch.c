/*
 * test_fetch.c — the address rules of src/server/fetch.c (which addresses an
 * image URL may reach) and the refusals fetch_image makes before any
 * connection. No network: every refused URL names an address literal, and
 * the scheme / redirect / transfer cases run in tests/test_serve.sh and
 * tests/test_hostile.c against a local server. fetch.c is included so that
 * the name lookup can be replaced by a slow one.
 */
#include "server/fetch.c"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <unistd.h>

#include "test.h"

static atomic_int slow_lookups_done;

/* A resolver that answers after 1.5 s (a DNS server that does not reply). */
static int slow_resolve(const char *name, const char *port, const struct addrinfo *hints, struct addrinfo **res) {
    (void)name, (void)port, (void)hints;
    *res = NULL;
    struct timespec t = {1, 500000000L};
    nanosleep(&t, NULL);
    atomic_fetch_add(&slow_lookups_done, 1);
    return EAI_AGAIN;
}

/* The class of an address literal ("" when public, "?" when not a literal). */
static const char *cls(const char *s) {
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    const char *c;
    if (inet_pton(AF_INET, s, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        c = fetch_address_class((const struct sockaddr *)&a4);
    } else if (inet_pton(AF_INET6, s, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        c = fetch_address_class((const struct sockaddr *)&a6);
    } else {
        return "?";
    }
    return c ? c : "";
}

static int allowed(const fetch_policy *p, const char *s) {
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, s, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        return fetch_address_allowed(p, (const struct sockaddr *)&a4);
    }
    inet_pton(AF_INET6, s, &a6.sin6_addr);
    a6.sin6_family = AF_INET6;
    return fetch_address_allowed(p, (const struct sockaddr *)&a6);
}

#define CLASS(addr, want) CHECKF(strcmp(cls(addr), want) == 0, "%s: '%s', expected '%s'", addr, cls(addr), want)

int main(void) {
    for (TEST_CASE("IPv4: loopback, private, link-local, CGNAT, special ranges")) {
        CLASS("127.0.0.1", "loopback");
        CLASS("127.255.255.254", "loopback");
        CLASS("10.0.0.5", "private");
        CLASS("172.16.0.1", "private");
        CLASS("172.31.255.255", "private");
        CLASS("192.168.1.1", "private");
        CLASS("169.254.169.254", "link-local");
        CLASS("100.64.0.1", "shared (CGNAT)");
        CLASS("100.127.255.255", "shared (CGNAT)");
        CLASS("0.0.0.0", "unspecified");
        CLASS("224.0.0.1", "multicast");
        CLASS("239.255.255.250", "multicast");
        CLASS("255.255.255.255", "broadcast");
        CLASS("240.0.0.1", "reserved");
        CLASS("192.0.2.1", "reserved");
        CLASS("198.18.0.1", "reserved");
        CLASS("203.0.113.9", "reserved");
    }
    for (TEST_CASE("IPv4: public addresses next to the ranges pass")) {
        CLASS("8.8.8.8", "");
        CLASS("1.1.1.1", "");
        CLASS("172.15.255.255", "");
        CLASS("172.32.0.0", "");
        CLASS("100.63.255.255", "");
        CLASS("100.128.0.0", "");
        CLASS("169.253.255.255", "");
        CLASS("11.0.0.1", "");
        CLASS("128.0.0.1", "");
        CLASS("198.20.0.1", "");
        CLASS("223.255.255.255", "");
    }
    for (TEST_CASE("IPv6: loopback, unspecified, ULA, link-local, multicast, reserved")) {
        CLASS("::1", "loopback");
        CLASS("::", "unspecified");
        CLASS("fc00::1", "private");
        CLASS("fd12:3456::1", "private");
        CLASS("fe80::1", "link-local");
        CLASS("febf::1", "link-local");
        CLASS("fec0::1", "private");
        CLASS("ff02::1", "multicast");
        CLASS("2001:db8::1", "reserved");
        CLASS("100::1", "reserved");
        CLASS("::5", "reserved");
    }
    for (TEST_CASE("IPv6: mapped, NAT64 and 6to4 forms follow the IPv4 address")) {
        CLASS("::ffff:127.0.0.1", "loopback");
        CLASS("::ffff:10.0.0.5", "private");
        CLASS("::ffff:169.254.169.254", "link-local");
        CLASS("::ffff:8.8.8.8", "");
        CLASS("64:ff9b::192.168.0.1", "private");
        CLASS("64:ff9b::8.8.8.8", "");
        CLASS("2002:7f00:1::", "loopback");
        CLASS("2002:0808:0808::", "");
    }
    for (TEST_CASE("IPv6: global unicast passes")) {
        CLASS("2606:4700:4700::1111", "");
        CLASS("2a00:1450:4001::200e", "");
    }
    for (TEST_CASE("allow list: exact address match, either family")) {
        const char *hosts[] = {"127.0.0.1", "::1", "not-an-address"};
        fetch_policy p = fetch_policy_default();
        p.allow = hosts;
        p.n_allow = 3;
        CHECK(allowed(&p, "127.0.0.1"));
        CHECK(allowed(&p, "::1"));
        CHECK(allowed(&p, "0:0:0:0:0:0:0:1"));
        CHECK(!allowed(&p, "127.0.0.2"));
        CHECK(!allowed(&p, "::ffff:127.0.0.1"));
        CHECK(!allowed(&p, "10.0.0.1"));
        fetch_policy none = fetch_policy_default();
        CHECK(!allowed(&none, "127.0.0.1"));
    }
    for (TEST_CASE("fetch_image refuses before connecting")) {
        static const struct {
            const char *url, *want;
        } cases[] = {
            {"http://127.0.0.1:9/x.png", "resolves to a loopback address 127.0.0.1"},
            {"http://10.0.0.5/x.png", "resolves to a private address 10.0.0.5"},
            {"http://169.254.169.254/latest/meta-data/", "resolves to a link-local address 169.254.169.254"},
            {"http://[::1]:9/x.png", "resolves to a loopback address ::1"},
            {"http://[::ffff:192.168.0.1]/", "resolves to a private address ::ffff:192.168.0.1"},
            {"http://100.64.1.1/", "resolves to a shared (CGNAT) address 100.64.1.1"},
            {"http://0.0.0.0/", "resolves to an unspecified address 0.0.0.0"},
            {"http://2130706433/", "loopback"},
            {"http://0x7f.1/", "loopback"},
            {"file:///etc/passwd", "scheme file is not allowed"},
            {"ftp://8.8.8.8/x", "scheme ftp is not allowed"},
            {"http://user:pw@8.8.8.8/x", "must not carry credentials"},
            {"not a url", "not a valid URL"},
        };
        fetch_policy p = fetch_policy_default();
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            uint8_t *data = (uint8_t *)1;
            size_t len = 1;
            optiq_error err = {0};
            optiq_status st = fetch_image(cases[i].url, &p, &data, &len, &err);
            CHECKF(st == OPTIQ_ERR_INVALID_ARG && strstr(err.message, cases[i].want) && !data && !len,
                   "%s: %s '%s'", cases[i].url, optiq_status_name(st), err.message);
        }
    }
    for (TEST_CASE("a slow name lookup is cut off by the total time limit")) {
        resolve_fn = slow_resolve;
        fetch_policy p = fetch_policy_default();
        p.timeout_ms = 300;
        uint8_t *data = NULL;
        size_t len = 0;
        optiq_error err = {0};
        int64_t t0 = now_ms();
        optiq_status st = fetch_image("http://slow.invalid/x.png", &p, &data, &len, &err);
        int64_t dt = now_ms() - t0;
        CHECKF(st == OPTIQ_ERR_IO && strstr(err.message, "timed out") && !data, "%s '%s'",
               optiq_status_name(st), err.message);
        CHECKF(dt >= 250 && dt < 1200, "gave up after %lld ms", (long long)dt);
        // the abandoned lookup ends on its own and frees its state
        for (int i = 0; i < 300 && !atomic_load(&slow_lookups_done); i++) usleep(10000);
        CHECK(atomic_load(&slow_lookups_done) == 1);
        usleep(20000);
        resolve_fn = getaddrinfo;
    }
    return test_finish();
}
