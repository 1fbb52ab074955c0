// Load generator and mock mail backend for Postern's benchmark (bench/run.mjs builds and drives it).
//
//   loadgen server  --imap PORT --pop3 PORT --smtp PORT [--threads N]
//       mock backend: greets, accepts any login (IMAP LOGIN with literals, POP3 USER/PASS,
//       SMTP EHLO/XCLIENT/AUTH), answers "TAG FETCH N" with an N-byte literal, takes
//       "TAG APPEND BOX {N}", answers POP3 "RETR N" with N bytes, takes SMTP DATA.
//       Prints "READY" once listening; runs until SIGTERM/SIGINT.
//   loadgen login   --proto imap|pop3|smtp|smtpnone --port P [--conc 50] [--duration 5]
//       C concurrent clients, each: connect, greeting, login, wait for OK, logout, wait for EOF.
//   loadgen relay   --proto imap|pop3|smtp --dir down|up --port P [--conns 1] [--total BYTES] [--chunk BYTES]
//       logged-in sessions downloading (IMAP FETCH, POP3 RETR) or uploading (IMAP APPEND, SMTP DATA).
//   loadgen idle    --proto ... --port P --conns N [--conc 200]
//       N logged-in idle sessions; prints "READY {json}" when all are logged in, holds them until
//       stdin says "quit" (or closes), then closes them and prints the final JSON.
//   loadgen startup --port P [--runs 10] -- CMD ARGS...
//       exec CMD, poll connect() to 127.0.0.1:P, read the first greeting byte; times both.
// Common: [--host 127.0.0.1] [--src 127.0.0.2] [--nsrc 16] [--threads N] [--user U] [--pass P]
// (idle sessions always come from 127.0.0.2 .. 127.0.0.17; other modes bind a source only with --src)
// Client modes print one JSON object on stdout, including the generator's own CPU time
// (getrusage), so the report can show that it is not the bottleneck.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define SCRATCH (256 * 1024)
#define FILL_LINE 80 /* 78 x's and CRLF: never a line starting with a dot */
#define FILL_LINES 13108
#define FILL_LEN (FILL_LINE * FILL_LINES)
#define MAX_ERRS 8
#define CONN_TIMEOUT 30.0

static char *fillbuf;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

/* ------------------------------------------------------------------ options */

enum { P_IMAP, P_POP3, P_SMTP, P_SMTPNONE };
enum { M_SERVER, M_LOGIN, M_RELAY, M_IDLE, M_STARTUP };

static struct {
  int mode, proto, port, threads, conc, conns, runs, down;
  int imap_port, pop3_port, smtp_port;
  double duration;
  uint64_t total, chunk;
  const char *host, *src, *user, *pass;
  int nsrc, bind_src;
  char **cmd;
} G = {
    .threads = 1, .conc = 50, .conns = 1, .runs = 10, .down = 1, .duration = 5,
    .total = 256ull << 20, .chunk = 16ull << 20, .host = "127.0.0.1", .src = "127.0.0.2",
    .nsrc = 16, .user = "bench@example.com", .pass = "bench-secret",
};

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void raise_nofile(void) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

/* ------------------------------------------------------------------ connections */

enum { R_LISTEN, R_SERVER, R_CLIENT, R_STDIN };
enum { S_LINE, S_LIT, S_DATA }; /* server input states */

typedef struct {
  char *data; /* NULL: filler bytes */
  uint64_t len, off;
} seg;

struct thr;

typedef struct conn {
  int fd, role, proto;
  struct thr *t;
  seg *q;
  int qh, qn, qcap;
  int epout, closing;
  char *in;
  size_t ioff, ilen, icap;
  uint64_t skip;
  /* server */
  int sst, authlogin;
  uint64_t litn;
  char *cmd;
  size_t clen, ccap;
  char carry[4];
  int carrylen;
  /* client */
  int slot, pc, connecting, held, done;
  double t0, tlogin, last;
  uint64_t quota;
} conn;

/* client script */
enum { OP_SEND, OP_FILL, OP_EXP_LINE, OP_EXP_SMTP, OP_EXP_TAG, OP_EXP_LIT, OP_SKIP, OP_MARK_LOGIN, OP_HOLD,
       OP_BARRIER, OP_LOOP, OP_MARK_END, OP_EOF };
static const char *OPNAME[] = {"send", "fill", "expect-line", "expect-smtp-reply", "expect-tagged", "expect-literal",
                               "skip", "login-done", "hold", "barrier", "loop", "relay-done", "expect-eof"};
typedef struct {
  int op;
  const char *s;
  uint64_t n;
  int target;
} op_t;
static op_t script[40];
static int nscript;

typedef struct thr {
  int id, ep;
  char *scratch;
  /* client */
  conn **slots;
  int nslots, active, started, pending, barrier, release_pending;
  double *lat, *llat;
  size_t nlat, nllat, caplat, capllat;
  uint64_t sessions, errors, bytes, unfinished, dropped;
  double t_start, t_deadline, relay_t0, relay_t1;
  char errs[MAX_ERRS][240];
  int nerrs;
  int srcidx;
  int lfd[3]; /* server: listening sockets of this thread */
} thr;

static atomic_int g_held, g_failed, g_ready_printed;
static int g_idle_target;

static void ep_set(conn *c, int out) {
  struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
  if (c->epout != out) {
    epoll_ctl(c->t->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epout = out;
  }
}

static void q_push(conn *c, const char *data, uint64_t len) {
  if (c->qn == c->qcap) {
    int ncap = c->qcap ? c->qcap * 2 : 4;
    seg *nq = malloc(sizeof(seg) * ncap);
    for (int i = 0; i < c->qn; i++) nq[i] = c->q[(c->qh + i) % c->qcap];
    free(c->q);
    c->q = nq;
    c->qh = 0;
    c->qcap = ncap;
  }
  seg *s = &c->q[(c->qh + c->qn) % c->qcap];
  s->off = 0;
  s->len = len;
  if (data) {
    s->data = malloc(len ? len : 1);
    memcpy(s->data, data, len);
  } else {
    s->data = NULL;
  }
  c->qn++;
}

static void q_str(conn *c, const char *s) { q_push(c, s, strlen(s)); }

static void q_fmt(conn *c, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  q_push(c, buf, (uint64_t)n);
}

static void conn_free(conn *c) {
  if (c->fd >= 0) close(c->fd);
  for (int i = 0; i < c->qn; i++) free(c->q[(c->qh + i) % c->qcap].data);
  free(c->q);
  free(c->in);
  free(c->cmd);
  free(c);
}

/* returns -1 on a write error, 0 otherwise. Everything queued goes in one writev, as a server
 * that answers pipelined commands does (Postfix, Dovecot): one write per reply would leave the
 * second reply behind Nagle until the peer's delayed ACK (~40 ms). */
static int flush_out(conn *c) {
  while (c->qn) {
    struct iovec iov[64];
    int k = 0;
    for (int i = 0; i < c->qn && k < 64; i++) {
      seg *s = &c->q[(c->qh + i) % c->qcap];
      if (s->data) {
        iov[k].iov_base = s->data + s->off;
        iov[k].iov_len = s->len - s->off;
      } else {
        uint64_t pos = s->off % FILL_LEN, want = s->len - s->off;
        if (want > FILL_LEN - pos) want = FILL_LEN - pos;
        iov[k].iov_base = fillbuf + pos;
        iov[k].iov_len = want;
      }
      k++;
      if (!s->data && s->off + iov[k - 1].iov_len < s->len) break; /* the rest of the fill next time */
    }
    ssize_t n = writev(c->fd, iov, k);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        ep_set(c, 1);
        return 0;
      }
      if (errno == EINTR) continue;
      return -1;
    }
    while (n > 0 || (c->qn && c->q[c->qh].off == c->q[c->qh].len)) {
      seg *s = &c->q[c->qh];
      uint64_t left = s->len - s->off;
      if ((uint64_t)n < left) {
        s->off += (uint64_t)n;
        break;
      }
      n -= (ssize_t)left;
      free(s->data);
      c->qh = (c->qh + 1) % c->qcap;
      c->qn--;
    }
  }
  ep_set(c, 0);
  return 0;
}

static void in_append(conn *c, const char *p, size_t n) {
  if (c->ioff && c->ioff == c->ilen) c->ioff = c->ilen = 0;
  if (c->ilen + n > c->icap) {
    if (c->ioff) {
      memmove(c->in, c->in + c->ioff, c->ilen - c->ioff);
      c->ilen -= c->ioff;
      c->ioff = 0;
    }
    if (c->ilen + n > c->icap) {
      c->icap = (c->ilen + n) * 2;
      if (c->icap < 512) c->icap = 512;
      c->in = realloc(c->in, c->icap);
    }
  }
  memcpy(c->in + c->ilen, p, n);
  c->ilen += n;
}

/* consume pending skip from buffered input; returns 1 while bytes are still to be skipped */
static int skip_buffered(conn *c) {
  if (!c->skip) return 0;
  size_t have = c->ilen - c->ioff;
  uint64_t k = c->skip < have ? c->skip : have;
  c->ioff += k;
  c->skip -= k;
  return c->skip > 0;
}

/* next complete line (CR LF or LF stripped); returns NULL when none */
static char *take_line(conn *c, size_t *len) {
  char *start = c->in + c->ioff;
  char *nl = memchr(start, '\n', c->ilen - c->ioff);
  if (!nl) return NULL;
  size_t l = (size_t)(nl - start);
  c->ioff += l + 1;
  if (l && start[l - 1] == '\r') l--;
  start[l] = 0;
  *len = l;
  return start;
}

/* ------------------------------------------------------------------ mock backend */

static void srv_greet(conn *c) {
  switch (c->proto) {
  case P_IMAP: q_str(c, "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID] mock IMAP ready\r\n"); break;
  case P_POP3: q_str(c, "+OK mock POP3 ready\r\n"); break;
  default: q_str(c, "220 mock.test ESMTP\r\n"); break;
  }
}

static void word(const char *line, int n, char *out, size_t outsz) {
  /* the n-th space-separated word, upper-cased */
  const char *p = line;
  for (int i = 0; i < n; i++) {
    while (*p && *p != ' ') p++;
    while (*p == ' ') p++;
  }
  size_t k = 0;
  while (*p && *p != ' ' && k + 1 < outsz) out[k++] = (char)toupper((unsigned char)*p++);
  out[k] = 0;
}

static uint64_t last_number(const char *s) {
  const char *p = s + strlen(s);
  while (p > s && !isdigit((unsigned char)p[-1])) p--;
  const char *e = p;
  while (p > s && isdigit((unsigned char)p[-1])) p--;
  return p < e ? strtoull(p, NULL, 10) : 0;
}

static void srv_imap_cmd(conn *c, const char *cmd) {
  char tag[64], verb[32];
  word(cmd, 0, tag, sizeof tag);
  /* keep the tag's case: take it raw */
  size_t tl = strcspn(cmd, " ");
  if (tl >= sizeof tag) tl = sizeof tag - 1;
  memcpy(tag, cmd, tl);
  tag[tl] = 0;
  word(cmd, 1, verb, sizeof verb);
  if (!strcmp(verb, "LOGIN")) {
    q_fmt(c, "%s OK Logged in\r\n", tag);
  } else if (!strcmp(verb, "FETCH")) {
    uint64_t n = last_number(cmd);
    q_fmt(c, "* 1 FETCH (BODY[] {%llu}\r\n", (unsigned long long)n);
    q_push(c, NULL, n);
    q_fmt(c, ")\r\n%s OK Fetch completed\r\n", tag);
  } else if (!strcmp(verb, "APPEND")) {
    q_fmt(c, "%s OK Append completed\r\n", tag);
  } else if (!strcmp(verb, "LOGOUT")) {
    q_fmt(c, "* BYE Logging out\r\n%s OK Logout completed\r\n", tag);
    c->closing = 1;
  } else if (!strcmp(verb, "CAPABILITY")) {
    q_fmt(c, "* CAPABILITY IMAP4rev1 LITERAL+ ID\r\n%s OK Capability completed\r\n", tag);
  } else if (!strcmp(verb, "ID")) {
    q_fmt(c, "* ID NIL\r\n%s OK ID completed\r\n", tag);
  } else if (!strcmp(verb, "AUTHENTICATE")) {
    q_fmt(c, "%s NO not supported by the mock\r\n", tag);
  } else {
    q_fmt(c, "%s OK done\r\n", tag);
  }
}

static void srv_pop3_cmd(conn *c, const char *line) {
  char verb[32];
  word(line, 0, verb, sizeof verb);
  if (!strcmp(verb, "PASS")) q_str(c, "+OK Logged in.\r\n");
  else if (!strcmp(verb, "RETR")) {
    uint64_t n = last_number(line);
    q_fmt(c, "+OK %llu octets\r\n", (unsigned long long)n);
    q_push(c, NULL, n);
    q_str(c, "\r\n.\r\n");
  } else if (!strcmp(verb, "QUIT")) {
    q_str(c, "+OK Logging out.\r\n");
    c->closing = 1;
  } else if (!strcmp(verb, "CAPA")) q_str(c, "+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n");
  else if (!strcmp(verb, "AUTH")) q_str(c, "-ERR not supported by the mock\r\n");
  else if (!strcmp(verb, "STAT")) q_str(c, "+OK 0 0\r\n");
  else q_str(c, "+OK\r\n");
}

/* SMTP DATA: consume up to and including CRLF.CRLF; returns bytes consumed, sets *fin */
static size_t smtp_data(conn *c, const char *p, size_t n, int *fin) {
  static const char T[] = "\r\n.\r\n";
  *fin = 0;
  if (c->carrylen) {
    char b[8];
    size_t k = n < 4 ? n : 4;
    memcpy(b, c->carry, (size_t)c->carrylen);
    memcpy(b + c->carrylen, p, k);
    size_t bl = (size_t)c->carrylen + k;
    for (size_t i = 0; i + 5 <= bl; i++) {
      if (i < (size_t)c->carrylen && !memcmp(b + i, T, 5)) {
        *fin = 1;
        return i + 5 - (size_t)c->carrylen;
      }
    }
  }
  char *f = memmem(p, n, T, 5);
  if (f) {
    *fin = 1;
    return (size_t)(f - p) + 5;
  }
  /* keep the last 4 bytes of carry+chunk */
  char b[8];
  size_t bl = 0;
  if (n >= 4) {
    memcpy(b, p + n - 4, 4);
    bl = 4;
  } else {
    memcpy(b, c->carry, (size_t)c->carrylen);
    memcpy(b + c->carrylen, p, n);
    bl = (size_t)c->carrylen + n;
    if (bl > 4) {
      memmove(b, b + bl - 4, 4);
      bl = 4;
    }
  }
  memcpy(c->carry, b, bl);
  c->carrylen = (int)bl;
  return n;
}

static void srv_smtp_line(conn *c, const char *line) {
  char verb[32];
  if (c->authlogin) {
    if (c->authlogin == 1) {
      q_str(c, "334 UGFzc3dvcmQ6\r\n");
      c->authlogin = 2;
    } else {
      q_str(c, "235 2.7.0 Authentication successful\r\n");
      c->authlogin = 0;
    }
    return;
  }
  word(line, 0, verb, sizeof verb);
  if (!strcmp(verb, "EHLO"))
    q_str(c, "250-mock.test\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-8BITMIME\r\n"
             "250-XCLIENT NAME ADDR PROTO HELO LOGIN PORT\r\n250-AUTH PLAIN LOGIN\r\n250 DSN\r\n");
  else if (!strcmp(verb, "HELO")) q_str(c, "250 mock.test\r\n");
  else if (!strcmp(verb, "XCLIENT")) q_str(c, "220 mock.test ESMTP\r\n");
  else if (!strcmp(verb, "AUTH")) {
    char mech[32], ir[8];
    word(line, 1, mech, sizeof mech);
    word(line, 2, ir, sizeof ir);
    if (!strcmp(mech, "LOGIN")) {
      if (ir[0]) {
        q_str(c, "334 UGFzc3dvcmQ6\r\n");
        c->authlogin = 2;
      } else {
        q_str(c, "334 VXNlcm5hbWU6\r\n");
        c->authlogin = 1;
      }
    } else if (!strcmp(mech, "PLAIN") && !ir[0]) {
      q_str(c, "334 \r\n");
      c->authlogin = 2;
    } else q_str(c, "235 2.7.0 Authentication successful\r\n");
  } else if (!strcmp(verb, "MAIL")) q_str(c, "250 2.1.0 Ok\r\n");
  else if (!strcmp(verb, "RCPT")) q_str(c, "250 2.1.5 Ok\r\n");
  else if (!strcmp(verb, "DATA")) {
    q_str(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
    c->sst = S_DATA;
    memcpy(c->carry, "\r\n", 2);
    c->carrylen = 2;
  } else if (!strcmp(verb, "RSET") || !strcmp(verb, "NOOP")) q_str(c, "250 2.0.0 Ok\r\n");
  else if (!strcmp(verb, "QUIT")) {
    q_str(c, "221 2.0.0 Bye\r\n");
    c->closing = 1;
  } else q_str(c, "502 5.5.2 Error: command not recognized\r\n");
}

static void cmd_append(conn *c, const char *p, size_t n) {
  if (c->clen + n + 1 > c->ccap) {
    c->ccap = (c->clen + n + 1) * 2;
    c->cmd = realloc(c->cmd, c->ccap);
  }
  memcpy(c->cmd + c->clen, p, n);
  c->clen += n;
  c->cmd[c->clen] = 0;
}

/* process buffered server input */
static void srv_process(conn *c) {
  for (;;) {
    if (c->closing) return;
    if (skip_buffered(c)) return;
    if (c->sst == S_DATA) {
      size_t have = c->ilen - c->ioff;
      if (!have) return;
      int fin;
      size_t k = smtp_data(c, c->in + c->ioff, have, &fin);
      c->ioff += k;
      if (!fin) return;
      c->sst = S_LINE;
      q_str(c, "250 2.0.0 Ok: queued\r\n");
      continue;
    }
    if (c->sst == S_LIT) {
      size_t have = c->ilen - c->ioff;
      size_t k = have < c->litn ? have : (size_t)c->litn;
      cmd_append(c, c->in + c->ioff, k);
      c->ioff += k;
      c->litn -= k;
      if (c->litn) return;
      c->sst = S_LINE;
      continue;
    }
    size_t len;
    char *line = take_line(c, &len);
    if (!line) {
      if (c->ilen - c->ioff > 65536) c->closing = 1; /* garbage without newline */
      return;
    }
    if (c->proto == P_POP3) {
      srv_pop3_cmd(c, line);
      continue;
    }
    if (c->proto != P_IMAP) {
      srv_smtp_line(c, line);
      continue;
    }
    /* IMAP: a line ending in {N} or {N+} continues after N literal bytes */
    if (len && line[len - 1] == '}') {
      char *open = memrchr(line, '{', len);
      if (open) {
        char *e;
        uint64_t n = strtoull(open + 1, &e, 10);
        int plus = *e == '+';
        if (e > open + 1 && (e == line + len - 1 || (plus && e == line + len - 2))) {
          if (!plus) q_str(c, "+ go ahead\r\n");
          cmd_append(c, line, len);
          if (n > 8192) c->skip = n; /* a big APPEND: discard */
          else {
            c->litn = n;
            c->sst = S_LIT;
          }
          continue;
        }
      }
    }
    cmd_append(c, line, len);
    srv_imap_cmd(c, c->cmd);
    c->clen = 0;
  }
}

/* ------------------------------------------------------------------ client */

static void build_script(void) {
  static char fetch[64], append[64], retr[64], plain[512], login[256], user[256], pass[256];
  int i = 0;
  int loop = 0;
#define OP(o, str, num) script[i++] = (op_t){(o), (str), (num), 0}
  if (G.proto == P_IMAP) {
    snprintf(login, sizeof login, "a LOGIN %s %s\r\n", G.user, G.pass);
    OP(OP_EXP_LINE, "* OK", 0);
    OP(OP_SEND, login, 0);
    OP(OP_EXP_TAG, "a", 0);
    OP(OP_MARK_LOGIN, 0, 0);
    if (G.mode == M_RELAY) {
      OP(OP_BARRIER, 0, 0);
      loop = i;
      if (G.down) {
        snprintf(fetch, sizeof fetch, "c FETCH %llu\r\n", (unsigned long long)G.chunk);
        OP(OP_SEND, fetch, 0);
        OP(OP_EXP_LIT, 0, 0);
        OP(OP_EXP_TAG, "c", 0);
      } else {
        snprintf(append, sizeof append, "d APPEND INBOX {%llu}\r\n", (unsigned long long)G.chunk);
        OP(OP_SEND, append, 0);
        OP(OP_EXP_LINE, "+", 0);
        OP(OP_FILL, 0, G.chunk);
        OP(OP_SEND, "\r\n", 0);
        OP(OP_EXP_TAG, "d", 0);
      }
      script[i] = (op_t){OP_LOOP, 0, G.chunk, loop};
      i++;
      OP(OP_MARK_END, 0, 0);
    }
    if (G.mode == M_IDLE) OP(OP_HOLD, 0, 0);
    else {
      OP(OP_SEND, "z LOGOUT\r\n", 0);
      OP(OP_EXP_TAG, "z", 0);
      OP(OP_EOF, 0, 0);
    }
  } else if (G.proto == P_POP3) {
    snprintf(user, sizeof user, "USER %s\r\n", G.user);
    snprintf(pass, sizeof pass, "PASS %s\r\n", G.pass);
    OP(OP_EXP_LINE, "+OK", 0);
    OP(OP_SEND, user, 0);
    OP(OP_EXP_LINE, "+OK", 0);
    OP(OP_SEND, pass, 0);
    OP(OP_EXP_LINE, "+OK", 0);
    OP(OP_MARK_LOGIN, 0, 0);
    if (G.mode == M_RELAY) {
      if (!G.down) die("pop3 has no upload");
      OP(OP_BARRIER, 0, 0);
      loop = i;
      snprintf(retr, sizeof retr, "RETR %llu\r\n", (unsigned long long)G.chunk);
      OP(OP_SEND, retr, 0);
      OP(OP_EXP_LINE, "+OK", 0);
      OP(OP_SKIP, 0, G.chunk + 5);
      script[i] = (op_t){OP_LOOP, 0, G.chunk, loop};
      i++;
      OP(OP_MARK_END, 0, 0);
    }
    if (G.mode == M_IDLE) OP(OP_HOLD, 0, 0);
    else {
      OP(OP_SEND, "QUIT\r\n", 0);
      OP(OP_EXP_LINE, "+OK", 0);
      OP(OP_EOF, 0, 0);
    }
  } else {
    OP(OP_EXP_SMTP, "220", 0);
    OP(OP_SEND, "EHLO loadgen.test\r\n", 0);
    OP(OP_EXP_SMTP, "250", 0);
    if (G.proto == P_SMTP) {
      /* AUTH PLAIN base64("\0user\0pass") */
      char raw[256];
      size_t ul = strlen(G.user), pl = strlen(G.pass), rl = 0;
      raw[rl++] = 0;
      memcpy(raw + rl, G.user, ul);
      rl += ul;
      raw[rl++] = 0;
      memcpy(raw + rl, G.pass, pl);
      rl += pl;
      static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      char enc[400];
      size_t o = 0;
      for (size_t k = 0; k < rl; k += 3) {
        uint32_t v = (uint32_t)(unsigned char)raw[k] << 16;
        if (k + 1 < rl) v |= (uint32_t)(unsigned char)raw[k + 1] << 8;
        if (k + 2 < rl) v |= (unsigned char)raw[k + 2];
        enc[o++] = b64[(v >> 18) & 63];
        enc[o++] = b64[(v >> 12) & 63];
        enc[o++] = k + 1 < rl ? b64[(v >> 6) & 63] : '=';
        enc[o++] = k + 2 < rl ? b64[v & 63] : '=';
      }
      enc[o] = 0;
      snprintf(plain, sizeof plain, "AUTH PLAIN %s\r\n", enc);
      OP(OP_SEND, plain, 0);
      OP(OP_EXP_SMTP, "235", 0);
    } else {
      OP(OP_SEND, "MAIL FROM:<bench@example.com>\r\n", 0);
      OP(OP_EXP_SMTP, "250", 0);
      OP(OP_SEND, "RCPT TO:<rcpt@example.com>\r\n", 0);
      OP(OP_EXP_SMTP, "250", 0);
    }
    OP(OP_MARK_LOGIN, 0, 0);
    if (G.mode == M_RELAY) {
      if (G.down) die("smtp has no download");
      OP(OP_BARRIER, 0, 0);
      loop = i;
      if (G.proto == P_SMTP) {
        OP(OP_SEND, "MAIL FROM:<bench@example.com>\r\n", 0);
        OP(OP_EXP_SMTP, "250", 0);
        OP(OP_SEND, "RCPT TO:<rcpt@example.com>\r\n", 0);
        OP(OP_EXP_SMTP, "250", 0);
      }
      OP(OP_SEND, "DATA\r\n", 0);
      OP(OP_EXP_SMTP, "354", 0);
      OP(OP_FILL, 0, G.chunk);
      OP(OP_SEND, "\r\n.\r\n", 0);
      OP(OP_EXP_SMTP, "250", 0);
      if (G.proto == P_SMTPNONE) {
        /* the next message needs a new envelope */
        OP(OP_SEND, "MAIL FROM:<bench@example.com>\r\n", 0);
        OP(OP_EXP_SMTP, "250", 0);
        OP(OP_SEND, "RCPT TO:<rcpt@example.com>\r\n", 0);
        OP(OP_EXP_SMTP, "250", 0);
      }
      script[i] = (op_t){OP_LOOP, 0, G.chunk, loop};
      i++;
      OP(OP_MARK_END, 0, 0);
    }
    if (G.mode == M_IDLE) OP(OP_HOLD, 0, 0);
    else {
      OP(OP_SEND, "QUIT\r\n", 0);
      OP(OP_EXP_SMTP, "221", 0);
      OP(OP_EOF, 0, 0);
    }
  }
#undef OP
  nscript = i;
}

static void add_err(thr *t, const char *fmt, ...) {
  char buf[240];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  for (int i = 0; i < t->nerrs; i++)
    if (!strcmp(t->errs[i], buf)) return;
  if (t->nerrs < MAX_ERRS) strcpy(t->errs[t->nerrs++], buf);
}

static void push_lat(double **arr, size_t *n, size_t *cap, double v) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 4096;
    *arr = realloc(*arr, *cap * sizeof(double));
  }
  (*arr)[(*n)++] = v;
}

static void client_start(thr *t, int slot);

static void maybe_ready(void) {
  if (G.mode != M_IDLE) return;
  int h = atomic_load(&g_held), f = atomic_load(&g_failed);
  if (h + f >= g_idle_target && !atomic_exchange(&g_ready_printed, 1)) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("READY {\"held\":%d,\"failed\":%d}\n", h, f);
    fflush(stdout);
  }
}

static void idle_refill(thr *t) {
  while (t->pending < G.conc && t->started < t->nslots) {
    t->pending++;
    client_start(t, t->started++);
  }
}

/* end of a client connection: ok = session completed */
static void client_end(conn *c, int ok) {
  thr *t = c->t;
  double now = now_s();
  int slot = c->slot;
  if (!ok) t->errors++;
  if (ok && G.mode == M_LOGIN && now <= t->t_deadline) {
    t->sessions++;
    push_lat(&t->lat, &t->nlat, &t->caplat, (now - c->t0) * 1000);
    push_lat(&t->llat, &t->nllat, &t->capllat, (c->tlogin - c->t0) * 1000);
  }
  if (ok && G.mode == M_RELAY) t->sessions++;
  if (G.mode == M_IDLE) {
    if (c->held) t->dropped++;
    else {
      t->pending--;
      atomic_fetch_add(&g_failed, 1);
    }
  }
  if (G.mode == M_RELAY && c->held) t->barrier--;
  t->slots[slot] = NULL;
  t->active--;
  conn_free(c);
  if (G.mode == M_LOGIN && now < t->t_deadline && !stop_flag) client_start(t, slot);
  if (G.mode == M_IDLE) {
    idle_refill(t);
    maybe_ready();
  }
  if (G.mode == M_RELAY && t->barrier && t->barrier >= t->active) t->release_pending = 1;
}

static void client_fail(conn *c, const char *fmt, ...) {
  char buf[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  add_err(c->t, "step %d (%s): %s", c->pc, c->pc < nscript ? OPNAME[script[c->pc].op] : "?", buf);
  client_end(c, 0);
}

static void sanitize(char *dst, const char *src, size_t max) {
  size_t i = 0;
  for (; src[i] && i + 1 < max; i++) dst[i] = (src[i] >= 32 && src[i] < 127 && src[i] != '"' && src[i] != '\\') ? src[i] : '?';
  dst[i] = 0;
}

/* runs the script as far as buffered input allows; returns -1 if the conn was freed */
static int advance(conn *c) {
  thr *t = c->t;
  for (;;) {
    if (skip_buffered(c)) goto out;
    if (c->pc >= nscript) goto out;
    op_t *o = &script[c->pc];
    switch (o->op) {
    case OP_SEND:
      q_str(c, o->s);
      c->pc++;
      break;
    case OP_FILL:
      q_push(c, NULL, o->n);
      c->pc++;
      break;
    case OP_SKIP:
      c->skip = o->n;
      c->pc++;
      break;
    case OP_MARK_LOGIN:
      c->tlogin = now_s();
      c->pc++;
      break;
    case OP_MARK_END: {
      double n = now_s();
      if (n > t->relay_t1) t->relay_t1 = n;
      c->pc++;
      break;
    }
    case OP_HOLD:
      if (!c->held) {
        c->held = 1;
        t->pending--;
        atomic_fetch_add(&g_held, 1);
        idle_refill(t);
        maybe_ready();
      }
      if (c->ilen > c->ioff) {
        c->ioff = c->ilen; /* unsolicited data while idle: ignore */
      }
      goto out;
    case OP_BARRIER:
      if (!c->held) {
        c->held = 1;
        t->barrier++;
        if (t->barrier >= t->active) t->release_pending = 1;
      }
      goto out;
    case OP_LOOP:
      t->bytes += o->n;
      c->quota = c->quota > o->n ? c->quota - o->n : 0;
      c->pc = c->quota ? o->target : c->pc + 1;
      break;
    case OP_EOF:
      c->ioff = c->ilen;
      goto out;
    default: {
      size_t len;
      char *line = take_line(c, &len);
      if (!line) {
        if (c->ilen - c->ioff > 65536) {
          client_fail(c, "line longer than 64k");
          return -1;
        }
        goto out;
      }
      char safe[120];
      sanitize(safe, line, sizeof safe);
      if (o->op == OP_EXP_LINE) {
        if (strncmp(line, o->s, strlen(o->s))) {
          client_fail(c, "expected \\\"%s\\\", got \\\"%s\\\"", o->s, safe);
          return -1;
        }
        c->pc++;
      } else if (o->op == OP_EXP_SMTP) {
        if (len < 3 || strncmp(line, o->s, 3)) {
          client_fail(c, "expected %s, got \\\"%s\\\"", o->s, safe);
          return -1;
        }
        if (len == 3 || line[3] == ' ') c->pc++;
      } else if (o->op == OP_EXP_TAG) {
        size_t tl = strlen(o->s);
        if (!strncmp(line, o->s, tl) && line[tl] == ' ') {
          if (strncmp(line + tl + 1, "OK", 2)) {
            client_fail(c, "expected %s OK, got \\\"%s\\\"", o->s, safe);
            return -1;
          }
          c->pc++;
        }
      } else if (o->op == OP_EXP_LIT) {
        char *open = len && line[len - 1] == '}' ? memrchr(line, '{', len) : NULL;
        if (!open) {
          client_fail(c, "expected a literal, got \\\"%s\\\"", safe);
          return -1;
        }
        c->skip = strtoull(open + 1, NULL, 10);
        c->pc++;
      }
    }
    }
  }
out:
  if (flush_out(c) < 0) {
    client_fail(c, "write: %s", strerror(errno));
    return -1;
  }
  return 0;
}

static void relay_release(thr *t) {
  t->release_pending = 0;
  if (t->barrier < t->active || t->barrier == 0) return;
  t->relay_t0 = now_s();
  t->barrier = 0;
  for (int i = 0; i < t->nslots; i++) {
    conn *c = t->slots[i];
    if (c && c->held) {
      c->held = 0;
      c->pc++;
      advance(c);
    }
  }
}

static void client_start(thr *t, int slot) {
  conn *c = calloc(1, sizeof *c);
  c->role = R_CLIENT;
  c->t = t;
  c->slot = slot;
  c->proto = G.proto;
  c->t0 = c->last = now_s();
  c->quota = G.mode == M_RELAY ? G.total / (uint64_t)G.conns : 0;
  if (c->quota < G.chunk) c->quota = G.chunk;
  t->slots[slot] = c;
  t->active++;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    client_fail(c, "socket: %s", strerror(errno));
    return;
  }
  /* Many long-lived sessions (idle) come from several source addresses so that the ports of
   * one address do not run out. Short sessions do not need it: the server closes first, so the
   * client side keeps no TIME_WAIT, and skipping bind() saves two system calls per session. */
  if (G.mode == M_IDLE || G.bind_src) {
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    inet_pton(AF_INET, G.src, &src.sin_addr);
    src.sin_addr.s_addr = htonl(ntohl(src.sin_addr.s_addr) + (uint32_t)(t->srcidx++ % G.nsrc));
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
      client_fail(c, "bind: %s", strerror(errno));
      return;
    }
  }
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)G.port)};
  inet_pton(AF_INET, G.host, &dst.sin_addr);
  if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
    client_fail(c, "connect: %s", strerror(errno));
    return;
  }
  c->connecting = 1;
  c->epout = 1;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  epoll_ctl(t->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void client_event(conn *c, uint32_t ev) {
  thr *t = c->t;
  if (c->connecting) {
    if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
      client_fail(c, "connect: %s", strerror(err));
      return;
    }
    c->connecting = 0;
    ep_set(c, 0);
    if (advance(c) < 0) return;
  }
  if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    for (int iter = 0; iter < 8; iter++) {
      ssize_t n = read(c->fd, t->scratch, SCRATCH);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        client_fail(c, "read: %s", strerror(errno));
        return;
      }
      c->last = now_s();
      if (n == 0) {
        if (c->pc < nscript && script[c->pc].op == OP_EOF && !c->qn) {
          client_end(c, 1);
        } else if (c->held && G.mode == M_IDLE) {
          add_err(t, "idle session closed by the proxy");
          client_end(c, 0);
        } else {
          client_fail(c, "unexpected EOF");
        }
        return;
      }
      char *p = t->scratch;
      size_t k = (size_t)n;
      if (c->skip) {
        uint64_t s = c->skip < k ? c->skip : k;
        c->skip -= s;
        p += s;
        k -= s;
      }
      if (k) in_append(c, p, k);
      if (advance(c) < 0) return;
      if ((size_t)n < SCRATCH) break;
    }
  }
  if (ev & EPOLLOUT) {
    if (flush_out(c) < 0) client_fail(c, "write: %s", strerror(errno));
  }
}

static void server_event(conn *c, uint32_t ev) {
  thr *t = c->t;
  if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    for (int iter = 0; iter < 8; iter++) {
      ssize_t n = read(c->fd, t->scratch, SCRATCH);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        conn_free(c);
        return;
      }
      if (n == 0) {
        conn_free(c);
        return;
      }
      char *p = t->scratch;
      size_t k = (size_t)n;
      if (c->skip) {
        uint64_t s = c->skip < k ? c->skip : k;
        c->skip -= s;
        p += s;
        k -= s;
      }
      if (k && c->sst == S_DATA && c->ilen == c->ioff) {
        /* fast path: scan DATA in the scratch buffer without copying */
        int fin;
        size_t used = smtp_data(c, p, k, &fin);
        p += used;
        k -= used;
        if (fin) {
          c->sst = S_LINE;
          q_str(c, "250 2.0.0 Ok: queued\r\n");
        }
      }
      if (k) in_append(c, p, k);
      srv_process(c);
      if ((size_t)n < SCRATCH) break;
    }
  }
  if (flush_out(c) < 0) {
    conn_free(c);
    return;
  }
  if (c->closing && !c->qn) conn_free(c);
}

static int listen_on(int port, int reuse) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, G.host, &a.sin_addr);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind %s:%d: %s", G.host, port, strerror(errno));
  if (listen(fd, 4096) < 0) die("listen: %s", strerror(errno));
  return fd;
}

static void accept_all(conn *l) {
  thr *t = l->t;
  for (;;) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->role = R_SERVER;
    c->proto = l->proto;
    c->t = t;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev);
    srv_greet(c);
    if (flush_out(c) < 0) conn_free(c);
  }
}

/* ------------------------------------------------------------------ threads */

static void *thread_main(void *arg) {
  thr *t = arg;
  t->ep = epoll_create1(EPOLL_CLOEXEC);
  t->scratch = malloc(SCRATCH);
  struct epoll_event evs[512];
  if (G.mode == M_SERVER) {
    int protos[3] = {P_IMAP, P_POP3, P_SMTP};
    for (int i = 0; i < 3; i++) {
      if (t->lfd[i] <= 0) continue;
      conn *l = calloc(1, sizeof *l);
      l->fd = t->lfd[i];
      l->role = R_LISTEN;
      l->proto = protos[i];
      l->t = t;
      struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
      epoll_ctl(t->ep, EPOLL_CTL_ADD, l->fd, &ev);
    }
  } else {
    t->slots = calloc((size_t)t->nslots, sizeof(conn *));
    t->t_start = now_s();
    t->t_deadline = t->t_start + G.duration;
    if (G.mode == M_IDLE) idle_refill(t);
    else
      for (int i = 0; i < t->nslots; i++) client_start(t, i);
    if (G.mode == M_IDLE && t->id == 0) {
      static conn in = {.fd = 0, .role = R_STDIN};
      in.t = t;
      struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &in};
      epoll_ctl(t->ep, EPOLL_CTL_ADD, 0, &ev);
    }
  }
  double next_check = now_s() + 0.5;
  double hard_end = G.mode == M_LOGIN ? t->t_deadline + 15 : now_s() + 600;
  for (;;) {
    if (stop_flag) break;
    if (G.mode == M_LOGIN && t->active == 0 && now_s() >= t->t_deadline) break;
    if (G.mode == M_RELAY && t->active == 0) break;
    int n = epoll_wait(t->ep, evs, 512, 100);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      switch (c->role) {
      case R_LISTEN: accept_all(c); break;
      case R_SERVER: server_event(c, evs[i].events); break;
      case R_CLIENT: client_event(c, evs[i].events); break;
      case R_STDIN: {
        char b[64];
        ssize_t r = read(0, b, sizeof b);
        if (r <= 0 || memchr(b, 'q', (size_t)r)) stop_flag = 1;
        if (r <= 0) epoll_ctl(t->ep, EPOLL_CTL_DEL, 0, NULL);
        break;
      }
      }
    }
    if (t->release_pending) relay_release(t);
    double now = now_s();
    if (G.mode != M_SERVER && now >= next_check) {
      next_check = now + 0.5;
      for (int i = 0; i < t->nslots; i++) {
        conn *c = t->slots[i];
        if (c && !c->held && now - c->last > CONN_TIMEOUT) client_fail(c, "no answer for %.0f s", CONN_TIMEOUT);
      }
    }
    if (G.mode != M_SERVER && G.mode != M_IDLE && now > hard_end) break;
  }
  if (G.mode != M_SERVER) {
    for (int i = 0; i < t->nslots; i++) {
      conn *c = t->slots[i];
      if (c) {
        if (!c->held) t->unfinished++;
        conn_free(c);
        t->slots[i] = NULL;
      }
    }
  }
  return NULL;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
  if (!n) return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i];
}

/* ------------------------------------------------------------------ startup */

static int run_startup(void) {
  printf("{\"connect_ms\":[");
  double *greets = calloc((size_t)G.runs, sizeof(double));
  for (int r = 0; r < G.runs; r++) {
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      execvp(G.cmd[0], G.cmd);
      _exit(127);
    }
    setpgid(pid, pid);
    double tc = -1, tg = -1;
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)G.port)};
    inet_pton(AF_INET, G.host, &dst.sin_addr);
    while (now_s() - t0 < 30) {
      int st;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        fprintf(stderr, "loadgen: %s exited before listening\n", G.cmd[0]);
        return 1;
      }
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0) {
        tc = now_s();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) == 1) {
          char b[1];
          if (read(fd, b, 1) == 1) tg = now_s();
        }
        close(fd);
        break;
      }
      close(fd);
      struct timespec ts = {0, 200000}; /* poll connect every 0.2 ms */
      nanosleep(&ts, NULL);
    }
    kill(-pid, SIGTERM);
    double tk = now_s();
    int st;
    while (waitpid(pid, &st, WNOHANG) == 0) {
      if (now_s() - tk > 5) {
        kill(-pid, SIGKILL);
        waitpid(pid, &st, 0);
        break;
      }
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    /* reap the rest of the group (worker processes) */
    while (kill(-pid, 0) == 0 && now_s() - tk < 5) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    kill(-pid, SIGKILL);
    if (tc < 0) {
      fprintf(stderr, "loadgen: no connection within 30 s\n");
      return 1;
    }
    printf("%s%.2f", r ? "," : "", (tc - t0) * 1000);
    greets[r] = tg < 0 ? -1 : (tg - t0) * 1000;
  }
  printf("],\"greeting_ms\":[");
  for (int r = 0; r < G.runs; r++) printf("%s%.2f", r ? "," : "", greets[r]);
  printf("]}\n");
  return 0;
}

/* ------------------------------------------------------------------ main */

static int proto_of(const char *s) {
  if (!strcmp(s, "imap")) return P_IMAP;
  if (!strcmp(s, "pop3")) return P_POP3;
  if (!strcmp(s, "smtp")) return P_SMTP;
  if (!strcmp(s, "smtpnone")) return P_SMTPNONE;
  die("unknown protocol %s", s);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) die("usage: loadgen server|login|relay|idle|startup [options] (see the top of loadgen.c)");
  const char *m = argv[1];
  G.mode = !strcmp(m, "server") ? M_SERVER : !strcmp(m, "login") ? M_LOGIN : !strcmp(m, "relay") ? M_RELAY
         : !strcmp(m, "idle") ? M_IDLE : !strcmp(m, "startup") ? M_STARTUP : -1;
  if (G.mode < 0) die("unknown mode %s", m);
  if (G.mode == M_IDLE) G.conc = 200;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
    if (!strcmp(a, "--")) {
      G.cmd = argv + i + 1;
      break;
    } else if (ARG("--proto")) G.proto = proto_of(v);
    else if (ARG("--port")) G.port = atoi(v);
    else if (ARG("--imap")) G.imap_port = atoi(v);
    else if (ARG("--pop3")) G.pop3_port = atoi(v);
    else if (ARG("--smtp")) G.smtp_port = atoi(v);
    else if (ARG("--threads")) G.threads = atoi(v);
    else if (ARG("--conc")) G.conc = atoi(v);
    else if (ARG("--conns")) G.conns = atoi(v);
    else if (ARG("--runs")) G.runs = atoi(v);
    else if (ARG("--duration")) G.duration = atof(v);
    else if (ARG("--total")) G.total = strtoull(v, NULL, 10);
    else if (ARG("--chunk")) G.chunk = strtoull(v, NULL, 10);
    else if (ARG("--dir")) G.down = !strcmp(v, "down");
    else if (ARG("--host")) G.host = v;
    else if (ARG("--src")) {
      G.src = v;
      G.bind_src = 1;
    }
    else if (ARG("--nsrc")) G.nsrc = atoi(v);
    else if (ARG("--user")) G.user = v;
    else if (ARG("--pass")) G.pass = v;
    else die("unknown or incomplete option %s", a);
#undef ARG
  }
  if (G.threads < 1) G.threads = 1;
  if (G.nsrc < 1) G.nsrc = 1;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  raise_nofile();
  if (G.mode == M_STARTUP) {
    if (!G.cmd || !G.cmd[0]) die("startup needs -- CMD");
    return run_startup();
  }
  fillbuf = malloc(FILL_LEN);
  for (int l = 0; l < FILL_LINES; l++) {
    memset(fillbuf + l * FILL_LINE, 'x', FILL_LINE - 2);
    memcpy(fillbuf + l * FILL_LINE + FILL_LINE - 2, "\r\n", 2);
  }
  if (G.mode != M_SERVER) {
    if (!G.port) die("--port is required");
    build_script();
  }
  int total_slots = G.mode == M_LOGIN ? G.conc : G.conns;
  if (G.mode == M_IDLE) g_idle_target = G.conns;
  if (G.mode == M_IDLE && G.threads > 1) G.threads = 1; /* one thread holds the stdin control */
  if (G.threads > total_slots && G.mode != M_SERVER) G.threads = total_slots;
  thr *ts = calloc((size_t)G.threads, sizeof(thr));
  pthread_t *th = calloc((size_t)G.threads, sizeof(pthread_t));
  for (int i = 0; i < G.threads; i++) {
    ts[i].id = i;
    ts[i].nslots = total_slots / G.threads + (i < total_slots % G.threads);
    ts[i].srcidx = i;
  }
  double w0 = now_s();
  if (G.mode == M_SERVER) {
    /* bind every thread's listeners (SO_REUSEPORT when several) before saying READY */
    int ports[3] = {G.imap_port, G.pop3_port, G.smtp_port};
    for (int i = 0; i < G.threads; i++)
      for (int k = 0; k < 3; k++) ts[i].lfd[k] = ports[k] ? listen_on(ports[k], G.threads > 1) : 0;
    for (int i = 0; i < G.threads; i++) pthread_create(&th[i], NULL, thread_main, &ts[i]);
    printf("READY\n");
    fflush(stdout);
    for (int i = 0; i < G.threads; i++) pthread_join(th[i], NULL);
    return 0;
  }
  for (int i = 0; i < G.threads; i++) pthread_create(&th[i], NULL, thread_main, &ts[i]);
  for (int i = 0; i < G.threads; i++) pthread_join(th[i], NULL);
  double wall = now_s() - w0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  /* merge */
  uint64_t sessions = 0, errors = 0, bytes = 0, unfinished = 0, dropped = 0;
  size_t nlat = 0, nllat = 0;
  double r0 = 0, r1 = 0;
  for (int i = 0; i < G.threads; i++) {
    sessions += ts[i].sessions;
    errors += ts[i].errors;
    bytes += ts[i].bytes;
    unfinished += ts[i].unfinished;
    dropped += ts[i].dropped;
    nlat += ts[i].nlat;
    nllat += ts[i].nllat;
    if (ts[i].relay_t0 && (!r0 || ts[i].relay_t0 < r0)) r0 = ts[i].relay_t0;
    if (ts[i].relay_t1 > r1) r1 = ts[i].relay_t1;
  }
  double *lat = malloc((nlat + 1) * sizeof(double)), *llat = malloc((nllat + 1) * sizeof(double));
  size_t a = 0, b = 0;
  for (int i = 0; i < G.threads; i++) {
    memcpy(lat + a, ts[i].lat, ts[i].nlat * sizeof(double));
    a += ts[i].nlat;
    memcpy(llat + b, ts[i].llat, ts[i].nllat * sizeof(double));
    b += ts[i].nllat;
  }
  qsort(lat, nlat, sizeof(double), cmp_d);
  qsort(llat, nllat, sizeof(double), cmp_d);
  printf("{\"mode\":\"%s\",\"sessions\":%llu,\"errors\":%llu,\"unfinished\":%llu,\"dropped\":%llu,", m,
         (unsigned long long)sessions, (unsigned long long)errors, (unsigned long long)unfinished,
         (unsigned long long)dropped);
  if (G.mode == M_LOGIN)
    printf("\"rate\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"login_p50_ms\":%.3f,\"login_p99_ms\":%.3f,", (double)sessions / G.duration,
           pct(lat, nlat, 0.5), pct(lat, nlat, 0.99), pct(llat, nllat, 0.5), pct(llat, nllat, 0.99));
  if (G.mode == M_RELAY) {
    double rw = r1 > r0 ? r1 - r0 : 0;
    printf("\"bytes\":%llu,\"relay_s\":%.4f,\"mb_s\":%.1f,", (unsigned long long)bytes, rw, rw ? bytes / rw / 1e6 : 0);
  }
  if (G.mode == M_IDLE) printf("\"held\":%d,\"failed\":%d,", atomic_load(&g_held), atomic_load(&g_failed));
  printf("\"wall_s\":%.3f,\"cpu_s\":%.3f,\"cpu_pct\":%.1f,\"threads\":%d,\"errors_sample\":[", wall, cpu,
         wall ? cpu / wall * 100 : 0, G.threads);
  int first = 1;
  for (int i = 0; i < G.threads; i++)
    for (int k = 0; k < ts[i].nerrs; k++) {
      printf("%s\"%s\"", first ? "" : ",", ts[i].errs[k]);
      first = 0;
    }
  printf("]}\n");
  fflush(stdout);
  return 0;
}
