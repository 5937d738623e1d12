/*
 * dpdk-oci-hook-client: the hook's entry point when a resident agent may run.
 *
 *     dpdk-oci-hook-client PYTHON -I .../hook/__main__.py STAGE     (the state JSON on stdin)
 *
 * A Python process costs ~10-14 ms to start, twice per container; this costs well under one.
 * It does three things and decides nothing else:
 *
 *   1. A container that is certainly not ours (the same byte checks as
 *      hook/stage/run.py:_plainly_not_ours) exits 0 at once.
 *   2. Otherwise the stage goes to the agent's socket in the agent's protocol
 *      (hook/stage/agent_client.py): its exit status and message are the hook's.
 *   3. When no agent listens, it runs the rest of its argv (the Python hook itself) with the
 *      same state bytes on stdin: exactly what the runtime would have run without it.
 *
 * Built by install.sh into the venv's bin directory; hook/entry.py registers it when it is
 * there.  The constants below are checked against the Python ones by tests/unit/test_entry.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <fcntl.h>

#define PREFIX_KEY "\"dpdk-oci-hook/"
#define ANNOTATIONS_KEY "\"annotations\""
#define BUNDLE_KEY "\"bundle\""
#define SOCKET_ENV "DPDK_OCI_HOOK_AGENT_SOCKET"
#define DEFAULT_SOCKET "/run/dpdk-oci-hook-agent.sock"
#define MAX_STATE ((1 << 20) + 1)
#define MAX_REPLY (1 << 20)
#define MAX_CONFIG (64 << 20)
#define WAIT_S 28

static const char *const PASS_ENV[] = {
    "DPDK_OCI_HOOK_CONFIG", "DPDK_OCI_HOOK_CACHE_DIR", "DPDK_OCI_HOOK_FAULT", "DPDK_OCI_HOOK_BUDGET_S", NULL,
};

static int contains(const char *hay, size_t n, const char *needle) {
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Read all of fd, up to limit bytes; NULL on a read error. */
static char *read_all(int fd, size_t limit, size_t *len) {
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) return NULL;
    while (n < limit) {
        if (n == cap) {
            cap = cap * 2 < limit ? cap * 2 : limit;
            char *grown = realloc(buf, cap);
            if (grown == NULL) { free(buf); return NULL; }
            buf = grown;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0) {
            if (errno == EINTR) continue;
            free(buf);
            return NULL;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    *len = n;
    return buf;
}

/* The state's "bundle" when it is a plain string (no escapes), as run.py:_bundle_path finds it. */
static char *bundle_path(const char *raw, size_t n) {
    const char *end = raw + n;
    const char *at = memmem(raw, n, BUNDLE_KEY, strlen(BUNDLE_KEY));
    while (at != NULL) {
        const char *p = at + strlen(BUNDLE_KEY);
        while (p < end && is_space(*p)) p++;
        if (p < end && *p == ':' && !(at > raw && at[-1] == '\\')) {
            p++;
            while (p < end && is_space(*p)) p++;
            if (p >= end || *p != '"') return NULL;
            const char *close = memchr(p + 1, '"', (size_t)(end - p - 1));
            if (close == NULL || memchr(p + 1, '\\', (size_t)(close - p - 1)) != NULL) return NULL;
            return strndup(p + 1, (size_t)(close - p - 1));
        }
        at = memmem(at + 1, (size_t)(end - at - 1), BUNDLE_KEY, strlen(BUNDLE_KEY));
    }
    return NULL;
}

/* 1: certainly not ours; 0: undecided (the Python hook decides). */
static int plainly_not_ours(const char *raw, size_t n) {
    if (contains(raw, n, PREFIX_KEY)) return 0;
    if (contains(raw, n, ANNOTATIONS_KEY)) return 1;
    /* runc leaves "annotations" out of the state when there are none: look at config.json */
    char *bundle = bundle_path(raw, n);
    if (bundle == NULL) return 0;
    size_t blen = strlen(bundle);
    char *path = malloc(blen + sizeof("/config.json"));
    if (path == NULL) { free(bundle); return 0; }
    memcpy(path, bundle, blen);
    memcpy(path + blen, "/config.json", sizeof("/config.json"));
    free(bundle);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return 0;
    size_t clen = 0;
    char *config = read_all(fd, MAX_CONFIG, &clen);
    close(fd);
    if (config == NULL) return 0;
    int ours = contains(config, clen, PREFIX_KEY);
    free(config);
    return ours ? 0 : 1;
}

static int send_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t sent = send(fd, buf, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += sent;
        n -= (size_t)sent;
    }
    return 0;
}

/* The stage's exit status through the agent; -1: no agent listens (run the Python hook). */
static int through_agent(const char *stage, const char *raw, size_t n) {
    const char *path = getenv(SOCKET_ENV);
    if (path == NULL || *path == '\0') path = DEFAULT_SOCKET;
    struct stat st;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (stat(path, &st) != 0 || strlen(path) >= sizeof(addr.sun_path)) return -1;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval wait = {.tv_sec = WAIT_S};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, sizeof(wait));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1; /* no agent listening: not an error */
    }

    /* stage, NAME=VALUE lines of the passed environment, a blank line, the state; length-prefixed */
    size_t head_len = strlen(stage) + 2;
    for (const char *const *name = PASS_ENV; *name != NULL; name++) {
        const char *value = getenv(*name);
        if (value != NULL && *value != '\0') head_len += strlen(*name) + strlen(value) + 2;
    }
    char *msg = malloc(4 + head_len + n);
    if (msg == NULL) { close(fd); return -1; }
    char *p = msg + 4;
    p += sprintf(p, "%s\n", stage);
    for (const char *const *name = PASS_ENV; *name != NULL; name++) {
        const char *value = getenv(*name);
        if (value != NULL && *value != '\0') p += sprintf(p, "%s=%s\n", *name, value);
    }
    *p++ = '\n';
    memcpy(p, raw, n);
    size_t body = head_len + n;
    msg[0] = (char)(body >> 24); msg[1] = (char)(body >> 16); msg[2] = (char)(body >> 8); msg[3] = (char)body;

    size_t reply_len = 0;
    char *reply = NULL;
    int ok = send_all(fd, msg, 4 + body) == 0 && shutdown(fd, SHUT_WR) == 0 &&
             (reply = read_all(fd, MAX_REPLY, &reply_len)) != NULL;
    int err = errno;
    free(msg);
    close(fd);
    if (!ok) {
        fprintf(stderr, "dpdk-oci-hook: the agent at %s failed mid-stage (%s); see its log\n", path,
                err == EAGAIN ? "timed out" : strerror(err));
        return 1;
    }
    char *nl = memchr(reply, '\n', reply_len);
    char *digits = reply;
    if (nl != NULL && digits < nl && *digits == '-') digits++;
    int valid = nl != NULL && digits < nl;
    for (char *d = digits; valid && d < nl; d++) valid = *d >= '0' && *d <= '9';
    if (!valid) {
        fprintf(stderr, "dpdk-oci-hook: the agent at %s ended the stage without an answer; see its log\n", path);
        free(reply);
        return 1;
    }
    *nl = '\0';
    int status = atoi(reply);
    size_t rest = reply_len - (size_t)(nl + 1 - reply);
    if (rest > 0) fwrite(nl + 1, 1, rest, stderr);
    free(reply);
    return status & 0xff;
}

/* Run the Python hook (argv[1:]) on the same state bytes; returns only on failure. */
static int run_python(char **argv, const char *raw, size_t n) {
    int fd = memfd_create("dpdk-oci-hook-state", 0);
    if (fd < 0) goto fail;
    for (size_t off = 0; off < n;) {
        ssize_t put = write(fd, raw + off, n - off);
        if (put < 0) {
            if (errno == EINTR) continue;
            goto fail;
        }
        off += (size_t)put;
    }
    if (lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0) goto fail;
    close(fd);
    execv(argv[1], argv + 1);
fail:
    fprintf(stderr, "dpdk-oci-hook: cannot run %s: %s\n", argv[1], strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PYTHON -I HOOK_MAIN STAGE  (an OCI hook: the state JSON on stdin)\n", argv[0]);
        return 2;
    }
    const char *stage = argv[argc - 1];
    if (chdir("/") != 0) return 1;
    size_t n = 0;
    char *raw = read_all(0, MAX_STATE, &n);
    if (raw == NULL) {
        fprintf(stderr, "dpdk-oci-hook: cannot read the container state on stdin: %s\n", strerror(errno));
        return 1;
    }
    if (plainly_not_ours(raw, n)) return 0;
    int status = through_agent(stage, raw, n);
    if (status >= 0) return status;
    return run_python(argv, raw, n);
}
