/*
 * fetch.h — download an image given as an http(s) URL, for `optiq serve
 * --allow-remote-images`, without letting a request reach the server's own
 * network.
 *
 * Rules (docs/cli.md, "optiq serve"):
 *   - http:// and https:// only, at every hop; no credentials in the URL;
 *   - redirects are followed by hand (at most max_redirects), each new URL
 *     checked like the first;
 *   - the host is resolved here and EVERY resolved address must be public:
 *     loopback, private, link-local (metadata 169.254.169.254 included),
 *     CGNAT, unspecified, multicast, broadcast, reserved, documentation and
 *     IPv4-mapped / NAT64 / 6to4 forms of those are refused, unless the
 *     address is in the policy's allow list (exact address match);
 *   - the connection is pinned to the checked addresses (CURLOPT_RESOLVE) and
 *     every socket libcurl opens is checked again (CURLOPT_OPENSOCKETFUNCTION),
 *     so a second DNS answer cannot swap the destination;
 *   - no proxy, no cookies, no authentication; a byte limit (the transfer is
 *     aborted beyond it), a total and a connect timeout; a 2xx answer needed.
 *     The total timeout also bounds each host name lookup (it runs on a
 *     helper thread that is abandoned at the deadline).
 */
#ifndef OPTIQ_SERVER_FETCH_H
#define OPTIQ_SERVER_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "optiq.h"

typedef struct fetch_policy {
    const char *const *allow; /* IP literals that may be reached despite the rules above */
    size_t n_allow;
    size_t max_bytes;         /* 0: 20 MiB */
    long timeout_ms;          /* whole fetch, redirects included; 0: 10000 */
    long connect_timeout_ms;  /* 0: 5000 */
    int max_redirects;        /* 0: 3; negative: none followed */
} fetch_policy;

fetch_policy fetch_policy_default(void);

/* Why sa may not be reached ("loopback", "private", "link-local", ...), or
 * NULL when it is a public address. Ignores the allow list. */
const char *fetch_address_class(const struct sockaddr *sa);

/* 1 when sa is one of the policy's allowed addresses. */
int fetch_address_allowed(const fetch_policy *p, const struct sockaddr *sa);

/* Fetch url into *data (malloc'd, free with free()) / *len. Refusals and
 * failures: OPTIQ_ERR_INVALID_ARG (a rule above; the message says which) or
 * OPTIQ_ERR_IO (network failure, timeout, non-2xx answer), OPTIQ_ERR_NOMEM. */
optiq_status fetch_image(const char *url, const fetch_policy *p, uint8_t **data, size_t *len, optiq_error *err);

#endif
