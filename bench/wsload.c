/*
 * wsload: WebSocket broadcast load client for bench/peers.py.
 *
 * One process, one thread, epoll (level-triggered), non-blocking sockets. It opens N
 * connections to 127.0.0.1:PORT PATH, at most -c handshakes in flight, upgrades each one
 * (fixed Sec-WebSocket-Key, the 101 status and the matching Sec-WebSocket-Accept are
 * checked), optionally sends one masked text frame (-S, the subscribe op) and waits for a
 * text frame equal to -R (the server's answer). Once every connection is there it prints
 * "ready N" on stdout, then counts text frames until each connection has M of them (or
 * every connection is either complete or closed), until the timeout, or until stdin
 * becomes readable (a line or EOF: the driver wants the figures now). Then it prints one
 * JSON line and exits 0. Any failure before "ready" is fatal: a message on stderr, exit 1.
 *
 * Data frames are the bench's payload, exactly -s bytes:
 *     {"event":"BTCUSDT@depth","data":{"seq":N,"t":T,"pad":"xxxx..."}}
 * seq runs from 0 to M-1 and T is CLOCK_MONOTONIC in ns (shared by all processes on the
 * machine) taken by the publisher just before it sent the publish. Per connection a
 * bitmap of the seqs seen gives exact lost/duplicate counts; "gaps" counts frames whose
 * seq is not the previous one + 1 (reordering or loss). now - T goes into a log-linear
 * histogram (64 sub-buckets per power of two of microseconds, so about 1.6 % precision).
 * The receive time is taken once per recv(): every frame in that read had arrived by then.
 *
 * A "%d" in the path (-u) or the subscribe text (-S) becomes the connection's number, counted
 * from -o (default 0), so that each connection may take a channel of its own (bench/channels).
 *
 * Build: gcc -O2 -o wsload wsload.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define READ_SIZE (256 * 1024)   /* one recv() per readable event */
#define MAX_FRAME (1 << 20)      /* a larger server frame is a protocol error */
#define MAX_HEADERS 8192         /* the 101 response must fit in this */
#define SUB_BITS 6               /* histogram: 2^6 sub-buckets per power of two */
#define HIST_SIZE (64 * 66)     /* 2 exact rows (0-127 us), then one row per power of two */

/* RFC 6455's example key, and the accept value that belongs to it. */
static const char WS_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char WS_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

enum state { CONNECTING, HANDSHAKE, SUBSCRIBING, OPEN, CLOSED };

struct conn {
    int fd;
    enum state state;
    unsigned char *in;   /* bytes of an incomplete frame (or response) carried to the next read */
    size_t in_len, in_cap;
    unsigned char *out;  /* bytes the kernel did not take yet (handshake, subscribe, pongs) */
    size_t out_len, out_cap;
    uint32_t events;     /* what epoll watches now */
    uint8_t *seen;       /* bitmap of the seqs received, M bits */
    long got;            /* distinct data frames */
    long last_seq;
};

/* Options. */
static int opt_port, opt_conns, opt_conc = 200, opt_size = 280, opt_offset;
static long opt_msgs;
static const char *opt_path = "/", *opt_sub, *opt_reply;
static double opt_timeout = 120, opt_connect_timeout = 60;

static struct conn *conns;
static int ep, started, inflight, ready, finished; /* finished: complete or closed */
static long received, dups, gaps, corrupt, closed_conns, pings;
static int64_t first_ns, last_ns, max_lat_ns;
static uint64_t hist[HIST_SIZE];
static unsigned char rbuf[MAX_FRAME + 16 + READ_SIZE];
static uint32_t rng;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int index) {
    fprintf(stderr, "wsload: connection %d: %s (errno %d: %s)\n", index, what, errno,
            strerror(errno));
    exit(1);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void *grow(void *buf, size_t *cap, size_t need) {
    if (need <= *cap) return buf;
    size_t cap2 = *cap ? *cap : 256;
    while (cap2 < need) cap2 *= 2;
    buf = realloc(buf, cap2);
    if (!buf) { perror("realloc"); exit(1); }
    *cap = cap2;
    return buf;
}

static void watch(int i, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
    if (conns[i].events == events) return;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, conns[i].fd, &ev) < 0) die("epoll_ctl", i);
    conns[i].events = events;
}

/* Write what is queued; the kernel may take part of it, the rest waits for EPOLLOUT. */
static void flush(int i) {
    struct conn *c = &conns[i];
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t n = write(c->fd, c->out + done, c->out_len - done);
        if (n < 0) {
            if (errno == EAGAIN) break;
            if (errno == EINTR) continue;
            c->out_len = 0; /* the read side will see the connection go */
            return;
        }
        done += (size_t)n;
    }
    memmove(c->out, c->out + done, c->out_len - done);
    c->out_len -= done;
    watch(i, c->out_len ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void send_bytes(int i, const void *data, size_t len) {
    struct conn *c = &conns[i];
    c->out = grow(c->out, &c->out_cap, c->out_len + len);
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    flush(i);
}

/* A client frame: FIN, the opcode, the mask bit and a fresh masking key (RFC 6455 5.3). */
static void send_frame(int i, int opcode, const unsigned char *payload, size_t len) {
    unsigned char frame[14 + 65536];
    size_t h = 0;
    if (len > 65535) { fprintf(stderr, "wsload: frame too long\n"); exit(1); }
    frame[h++] = 0x80 | opcode;
    if (len < 126) {
        frame[h++] = 0x80 | len;
    } else {
        frame[h++] = 0x80 | 126;
        frame[h++] = len >> 8;
        frame[h++] = len & 0xff;
    }
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5; /* xorshift32 */
    memcpy(frame + h, &rng, 4);
    for (size_t k = 0; k < len; k++) frame[h + 4 + k] = payload[k] ^ frame[h + (k & 3)];
    send_bytes(i, frame, h + 4 + len);
}

static void start_connection(int i) {
    struct conn *c = &conns[i];
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(opt_port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket", i);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS)
        die("connect", i);
    c->state = CONNECTING;
    c->last_seq = -1;
    if (opt_msgs > 0 && !(c->seen = calloc((opt_msgs + 7) / 8, 1))) die("calloc", i);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl", i);
    c->events = EPOLLOUT;
    started++;
    inflight++;
}

/* The connection is upgraded (and subscribed): it now only counts data frames. */
static void became_ready(int i) {
    conns[i].state = OPEN;
    inflight--;
    ready++;
}

static void close_connection(int i) {
    struct conn *c = &conns[i];
    if (c->state == CLOSED) return;
    if (c->state != OPEN) die("closed before it was ready", i);
    if (c->got < opt_msgs) finished++; /* a complete one was counted already */
    c->state = CLOSED;
    closed_conns++;
    close(c->fd);
}

static void hist_add(int64_t ns) {
    uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
    int index;
    if (us < (2u << SUB_BITS)) {
        index = (int)us;
    } else {
        int shift = 63 - __builtin_clzll(us) - SUB_BITS;
        index = ((shift + 1) << SUB_BITS) + (int)((us >> shift) - (1u << SUB_BITS));
    }
    hist[index < HIST_SIZE ? index : HIST_SIZE - 1]++;
    if (ns > max_lat_ns) max_lat_ns = ns;
}

/* The middle of the bucket that holds the q-quantile, in microseconds. */
static double hist_quantile(double q) {
    uint64_t total = 0, run = 0;
    for (int k = 0; k < HIST_SIZE; k++) total += hist[k];
    if (!total) return 0;
    uint64_t rank = (uint64_t)(q * (double)(total - 1)) + 1;
    for (int k = 0; k < HIST_SIZE; k++) {
        run += hist[k];
        if (run < rank) continue;
        if (k < (2 << SUB_BITS)) return k;
        int shift = (k >> SUB_BITS) - 1;
        uint64_t low = (uint64_t)((k & ((1 << SUB_BITS) - 1)) + (1 << SUB_BITS)) << shift;
        return (double)low + ((1ull << shift) - 1) / 2.0;
    }
    return 0;
}

/* Digits after `key` in the payload, or -1. */
static long long field(const unsigned char *p, size_t len, const char *key) {
    size_t klen = strlen(key);
    const unsigned char *at = memmem(p, len, key, klen), *end = p + len;
    if (!at) return -1;
    at += klen;
    if (at >= end || *at < '0' || *at > '9') return -1;
    long long v = 0;
    while (at < end && *at >= '0' && *at <= '9') v = v * 10 + (*at++ - '0');
    return v;
}

static void data_frame(int i, const unsigned char *p, size_t len, int64_t now) {
    struct conn *c = &conns[i];
    long long seq = field(p, len, "\"seq\":"), sent = field(p, len, "\"t\":");
    if ((int)len != opt_size || seq < 0 || sent < 0 || seq >= opt_msgs) { corrupt++; return; }
    if (c->seen[seq >> 3] & (1 << (seq & 7))) { dups++; return; }
    c->seen[seq >> 3] |= 1 << (seq & 7);
    if (seq != c->last_seq + 1) gaps++;
    c->last_seq = seq;
    received++;
    hist_add(now - sent);
    if (!first_ns) first_ns = now;
    last_ns = now;
    if (++c->got == opt_msgs) finished++;
}

static void frame(int i, int fin, int opcode, const unsigned char *p, size_t len, int64_t now) {
    struct conn *c = &conns[i];
    if (opcode == 0x9) { pings++; send_frame(i, 0xA, p, len); return; } /* ping: pong */
    if (opcode == 0xA) return;                                          /* pong */
    if (opcode == 0x8) { close_connection(i); return; }                 /* close */
    if (c->state == SUBSCRIBING) {
        if (opcode == 0x1 && fin && len == strlen(opt_reply) && !memcmp(p, opt_reply, len)) {
            became_ready(i);
            return;
        }
        fprintf(stderr, "wsload: connection %d: unexpected answer: %.*s\n", i, (int)len, p);
        exit(1);
    }
    if (opcode == 0x1 && fin && opt_msgs > 0)
        data_frame(i, p, len, now);
    else
        corrupt++; /* binary, fragmented, or data while holding idle connections */
}

/* The HTTP response to the upgrade: 101 and the accept value of our key. */
static size_t handshake(int i, const unsigned char *buf, size_t len) {
    const unsigned char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) {
        if (len > MAX_HEADERS) { errno = 0; die("response headers too long", i); }
        return 0;
    }
    size_t head = (size_t)(end - buf) + 4;
    if (head < 12 || memcmp(buf, "HTTP/1.1 101", 12) ||
        !memmem(buf, head, WS_ACCEPT, sizeof WS_ACCEPT - 1)) {
        fprintf(stderr, "wsload: connection %d: not upgraded: %.*s\n", i, (int)head, buf);
        exit(1);
    }
    if (opt_sub) {
        char sub[1024];
        int n = snprintf(sub, sizeof sub, opt_sub, opt_offset + i);
        conns[i].state = SUBSCRIBING;
        send_frame(i, 0x1, (const unsigned char *)sub, (size_t)n);
        if (!opt_reply) became_ready(i);
    } else {
        became_ready(i);
    }
    return head;
}

/* Consume what `buf` holds: complete frames; returns the bytes used (the rest is partial). */
static size_t parse(int i, const unsigned char *buf, size_t len, int64_t now) {
    size_t pos = 0;
    if (conns[i].state == HANDSHAKE && !(pos = handshake(i, buf, len))) return 0;
    while (pos + 2 <= len && conns[i].state != CLOSED) {
        const unsigned char *h = buf + pos;
        size_t hlen = 2, plen = h[1] & 0x7f;
        if (h[1] & 0x80) { corrupt++; close_connection(i); break; } /* servers never mask */
        if (plen == 126) {
            if (len - pos < 4) break;
            plen = (size_t)h[2] << 8 | h[3];
            hlen = 4;
        } else if (plen == 127) {
            if (len - pos < 10) break;
            plen = 0;
            for (int k = 2; k < 10; k++) plen = plen << 8 | h[k];
            hlen = 10;
        }
        if (plen > MAX_FRAME) { corrupt++; close_connection(i); break; }
        if (len - pos < hlen + plen) break;
        frame(i, h[0] & 0x80, h[0] & 0x0f, h + hlen, plen, now);
        pos += hlen + plen;
    }
    return pos;
}

static void readable(int i) {
    struct conn *c = &conns[i];
    memcpy(rbuf, c->in, c->in_len); /* the carried partial frame first */
    ssize_t n = recv(c->fd, rbuf + c->in_len, READ_SIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) { close_connection(i); return; }
    size_t len = c->in_len + (size_t)n;
    size_t used = parse(i, rbuf, len, now_ns());
    if (c->state == CLOSED) return;
    c->in = grow(c->in, &c->in_cap, len - used);
    memcpy(c->in, rbuf + used, len - used);
    c->in_len = len - used;
}

static void writable(int i) {
    struct conn *c = &conns[i];
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t elen = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        if (err) { errno = err; die("connect", i); }
        char path[512], req[1024];
        snprintf(path, sizeof path, opt_path, opt_offset + i);
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n",
                         path, opt_port, WS_KEY);
        c->state = HANDSHAKE;
        send_bytes(i, req, (size_t)n);
    } else {
        flush(i);
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: wsload -p PORT -u PATH -n CONNECTIONS -m MESSAGES [-s SIZE] [-c CONCURRENCY]\n"
            "              [-S SUBSCRIBE_TEXT [-R REPLY_TEXT]] [-t TIMEOUT_S] [-C CONNECT_TIMEOUT_S]\n"
            "              [-o OFFSET]\n"
            "  %%d in PATH or SUBSCRIBE_TEXT: the connection's number, from OFFSET\n"
            "  -m 0: hold the connections idle until stdin says stop (or the timeout)\n");
    exit(2);
}

int main(int argc, char **argv) {
    int o;
    while ((o = getopt(argc, argv, "p:u:n:m:s:c:S:R:t:C:o:")) != -1) {
        switch (o) {
        case 'p': opt_port = atoi(optarg); break;
        case 'u': opt_path = optarg; break;
        case 'n': opt_conns = atoi(optarg); break;
        case 'm': opt_msgs = atol(optarg); break;
        case 's': opt_size = atoi(optarg); break;
        case 'c': opt_conc = atoi(optarg); break;
        case 'S': opt_sub = optarg; break;
        case 'R': opt_reply = optarg; break;
        case 't': opt_timeout = atof(optarg); break;
        case 'C': opt_connect_timeout = atof(optarg); break;
        case 'o': opt_offset = atoi(optarg); break;
        default: usage();
        }
    }
    if (opt_port <= 0 || opt_conns <= 0 || opt_msgs < 0 || opt_conc <= 0) usage();

    struct rlimit rl; /* one fd per connection: take the whole hard limit */
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)opt_conns + 16 > rl.rlim_cur) {
        fprintf(stderr, "wsload: %d connections need more fds than the limit %lu\n", opt_conns,
                (unsigned long)rl.rlim_cur);
        return 1;
    }
    rng = ((uint32_t)now_ns() ^ (uint32_t)getpid() << 16) | 1; /* never 0 */
    conns = calloc((size_t)opt_conns, sizeof *conns);
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || !conns) { perror("setup"); return 1; }

    /* stdin: a line or EOF ends the run early. A regular file or /dev/null cannot be
     * watched (EPERM): then only the counts and the timeout end the run. */
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    (void)epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);

    static struct epoll_event events[1024];
    int64_t deadline = now_ns() + (int64_t)(opt_connect_timeout * 1e9);
    double cpu_start = 0;
    int receiving = 0, stop = 0;
    while (!stop) {
        while (started < opt_conns && inflight < opt_conc) start_connection(started);
        if (ready == opt_conns && !receiving) { /* all there: the receiving phase */
            printf("ready %d\n", ready);
            fflush(stdout);
            receiving = 1;
            cpu_start = cpu_seconds();
            deadline = now_ns() + (int64_t)(opt_timeout * 1e9);
        }
        if (receiving && opt_msgs > 0 && finished == opt_conns) break;
        if (now_ns() > deadline) {
            if (!receiving) { errno = ETIMEDOUT; die("not all connections ready", ready); }
            break;
        }
        int n = epoll_wait(ep, events, 1024, 100);
        for (int k = 0; k < n; k++) {
            uint32_t i = events[k].data.u32;
            if (i == UINT32_MAX) { stop = 1; continue; }
            if (conns[i].state == CLOSED) continue;
            if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable((int)i);
            if (conns[i].state != CLOSED && events[k].events & EPOLLOUT) writable((int)i);
        }
    }
    double cpu = cpu_seconds() - cpu_start;
    long expected = (long)opt_conns * opt_msgs;
    printf("{\"connections\":%d,\"received\":%ld,\"expected\":%ld,\"lost\":%ld,\"dups\":%ld,"
           "\"gaps\":%ld,\"corrupt\":%ld,\"closed\":%ld,\"pings\":%ld,\"p50_us\":%.1f,"
           "\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"first_ns\":%lld,"
           "\"last_ns\":%lld,\"cpu_s\":%.4f}\n",
           opt_conns, received, expected, expected - received, dups, gaps, corrupt,
           closed_conns, pings, hist_quantile(0.50), hist_quantile(0.90), hist_quantile(0.99),
           max_lat_ns / 1e3, (long long)first_ns, (long long)last_ns, cpu);
    fflush(stdout);
    return 0;
}
