/*
 * onair-srt: OnAir's SRT listener (issue #20), a thin shell around libsrt (Debian's libsrt-gnutls).
 *
 * One SRT listener for every stream: a caller names its stream in the SRT stream id (`<stream id>`, or the access
 * control form `#!::r=<stream id>,m=publish`), and the listen callback gives the connection that stream's passphrase
 * (so a caller with another passphrase fails the handshake; one without any is refused: encryption is enforced). An
 * unknown stream is rejected with 1404, a mode other than publish with 1405, too many connections with 1402.
 *
 * Node drives it over stdin, one line per command:
 *   set <stream id> <passphrase>    the stream may publish with this passphrase (10-79 characters)
 *   del <stream id>                 it may not any more
 *   drop <connection>               close that connection (a publish OnAir refused, or an ended stream)
 *   sync <n>                        answered by a sync frame once every command before it is in effect
 * and reads frames on stdout, each a 9-byte header (type, connection as u32 BE, length as u32 BE) and its payload:
 *   1 open   "<stream id> <peer address>"
 *   2 data   what the caller sent (MPEG-TS, in the caller's packets)
 *   3 close  why, in words, then "|<packets received> <lost> <retransmitted received> <dropped (too late)>"
 *   4 stats  "<packets received> <lost> <retransmitted received> <dropped (too late)>", each second, so far
 *   5 sync   the <n> of a sync command, in the connection field
 * It exits when stdin closes (its parent is gone).
 *
 * Usage: onair-srt <bind address> <port> <latency ms> <max connections>
 * Prints "listening <port>" on stderr once bound.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <srt/srt.h>
#include <srt/access_control.h>

#define ID_LEN 12
#define MAX_PASS 79
#define MIN_PASS 10
#define TABLE_SIZE 131072 /* streams with a passphrase: a bound, and a hash table with room to spare */
#define PAYLOAD_MAX 1500

enum { FRAME_OPEN = 1, FRAME_DATA = 2, FRAME_CLOSE = 3, FRAME_STATS = 4, FRAME_SYNC = 5 };

struct entry {
  char id[ID_LEN + 1];
  char pass[MAX_PASS + 1];
  int used; /* 0 free, 1 set, 2 deleted (a tombstone) */
};

struct conn {
  SRTSOCKET sock;
  uint32_t id;
  char stream[ID_LEN + 1];
  SRT_TRACEBSTATS last; /* its counters as last read: a broken socket gives none */
};

static struct entry table[TABLE_SIZE];
static int table_count = 0;
static int tombstones = 0; /* deleted slots: probes walk over them; the table is rebuilt when they are many */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn *conns;
static int max_conns;
static _Atomic int open_conns = 0; /* read by the listen callback, on an SRT thread */
static uint32_t next_conn = 1;
static int eid;

static uint32_t hash_id(const char *id) {
  uint32_t h = 2166136261u;
  for (int i = 0; i < ID_LEN && id[i]; i++) h = (h ^ (uint8_t)id[i]) * 16777619u;
  return h;
}

static int valid_id(const char *id) {
  if (strlen(id) != ID_LEN) return 0;
  for (int i = 0; i < ID_LEN; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return 0;
  }
  return 1;
}

/* The slot of `id`, or -1; with `insert`, a free slot for it. Under table_lock. */
static int slot_of(const char *id, int insert) {
  uint32_t h = hash_id(id) & (TABLE_SIZE - 1);
  int tomb = -1;
  for (int n = 0; n < TABLE_SIZE; n++, h = (h + 1) & (TABLE_SIZE - 1)) {
    struct entry *e = &table[h];
    if (e->used == 0) return insert ? (tomb >= 0 ? tomb : (int)h) : -1;
    if (e->used == 2) {
      if (tomb < 0) tomb = (int)h;
      continue;
    }
    if (strcmp(e->id, id) == 0) return (int)h;
  }
  return insert ? tomb : -1;
}

/* Rebuilds the table without its tombstones (under table_lock), so that a miss stops at the first free slot again. */
static void rebuild(void) {
  struct entry *live = malloc((size_t)(table_count > 0 ? table_count : 1) * sizeof *live);
  if (!live) return;
  int n = 0;
  for (int i = 0; i < TABLE_SIZE; i++) if (table[i].used == 1 && n < table_count) live[n++] = table[i];
  memset(table, 0, sizeof table);
  for (int i = 0; i < n; i++) {
    int s = slot_of(live[i].id, 1);
    if (s >= 0) table[s] = live[i];
  }
  memset(live, 0, (size_t)n * sizeof *live);
  free(live);
  tombstones = 0;
}

static void write_all(const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(1, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      exit(0); /* the parent is gone */
    }
    p += n;
    len -= (size_t)n;
  }
}

static void frame(int type, uint32_t conn, const void *payload, uint32_t len) {
  unsigned char header[9];
  header[0] = (unsigned char)type;
  uint32_t c = htonl(conn), l = htonl(len);
  memcpy(header + 1, &c, 4);
  memcpy(header + 5, &l, 4);
  write_all(header, 9);
  if (len > 0) write_all(payload, len);
}

/* The stream id a caller asked for: "<id>" or "#!::r=<id>[,m=publish][,...]"; 0 when it names none. */
static int requested(const char *streamid, char out[ID_LEN + 1], int *bad_mode) {
  *bad_mode = 0;
  if (strncmp(streamid, "#!::", 4) != 0) {
    if (!valid_id(streamid)) return 0;
    strcpy(out, streamid);
    return 1;
  }
  char copy[513];
  snprintf(copy, sizeof copy, "%s", streamid + 4);
  int found = 0;
  for (char *save = NULL, *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
    if (strncmp(kv, "r=", 2) == 0 && valid_id(kv + 2)) {
      strcpy(out, kv + 2);
      found = 1;
    } else if (strncmp(kv, "m=", 2) == 0 && strcmp(kv + 2, "publish") != 0) {
      *bad_mode = 1;
    }
  }
  return found;
}

static int on_listen(void *opaque, SRTSOCKET ns, int hsversion, const struct sockaddr *peer, const char *streamid) {
  (void)opaque;
  (void)peer;
  if (hsversion < 5) { /* no stream id before HSv5 */
    srt_setrejectreason(ns, SRT_REJX_BAD_REQUEST);
    return -1;
  }
  if (open_conns >= max_conns) {
    srt_setrejectreason(ns, SRT_REJX_OVERLOAD);
    return -1;
  }
  char id[ID_LEN + 1];
  int bad_mode;
  if (!requested(streamid ? streamid : "", id, &bad_mode)) {
    srt_setrejectreason(ns, SRT_REJX_NOTFOUND);
    return -1;
  }
  if (bad_mode) {
    srt_setrejectreason(ns, SRT_REJX_BAD_MODE);
    return -1;
  }
  char pass[MAX_PASS + 1];
  pthread_mutex_lock(&table_lock);
  int s = slot_of(id, 0);
  if (s >= 0) strcpy(pass, table[s].pass);
  pthread_mutex_unlock(&table_lock);
  if (s < 0) {
    srt_setrejectreason(ns, SRT_REJX_NOTFOUND);
    return -1;
  }
  if (srt_setsockflag(ns, SRTO_PASSPHRASE, pass, (int)strlen(pass)) != 0) {
    srt_setrejectreason(ns, SRT_REJX_ISE);
    return -1;
  }
  return 0;
}

static struct conn *conn_by_sock(SRTSOCKET sock) {
  for (int i = 0; i < max_conns; i++) if (conns[i].sock == sock && conns[i].id != 0) return &conns[i];
  return NULL;
}

static void close_conn(struct conn *c, const char *why) {
  SRT_TRACEBSTATS perf;
  if (srt_bstats(c->sock, &perf, 0) != 0 || perf.pktRecvTotal < c->last.pktRecvTotal) perf = c->last;
  srt_epoll_remove_usock(eid, c->sock);
  srt_close(c->sock);
  char text[256];
  int len = snprintf(text, sizeof text, "%s|%lld %d %d %d", why, (long long)perf.pktRecvTotal, perf.pktRcvLossTotal, perf.pktRcvRetrans,
                     perf.pktRcvDropTotal);
  if (len < 0) len = 0;
  if (len >= (int)sizeof text) len = (int)sizeof text - 1;
  frame(FRAME_CLOSE, c->id, text, (uint32_t)len);
  c->id = 0;
  c->sock = SRT_INVALID_SOCK;
  open_conns--;
}

static void command(char *line) {
  char verb[8], a[64], b[128];
  int n = sscanf(line, "%7s %63s %127s", verb, a, b);
  if (n >= 3 && strcmp(verb, "set") == 0 && valid_id(a) && strlen(b) >= MIN_PASS && strlen(b) <= MAX_PASS) {
    pthread_mutex_lock(&table_lock);
    int s = slot_of(a, 1);
    if (s >= 0 && (table[s].used == 1 || table_count < TABLE_SIZE / 2)) {
      if (table[s].used == 2) tombstones--;
      if (table[s].used != 1) table_count++;
      strcpy(table[s].id, a);
      strcpy(table[s].pass, b);
      table[s].used = 1;
    }
    pthread_mutex_unlock(&table_lock);
  } else if (n >= 2 && strcmp(verb, "del") == 0 && valid_id(a)) {
    pthread_mutex_lock(&table_lock);
    int s = slot_of(a, 0);
    if (s >= 0) {
      table[s].used = 2;
      memset(table[s].pass, 0, sizeof table[s].pass);
      table_count--;
      if (++tombstones > TABLE_SIZE / 4) rebuild();
    }
    pthread_mutex_unlock(&table_lock);
  } else if (n >= 2 && strcmp(verb, "sync") == 0) {
    frame(FRAME_SYNC, (uint32_t)strtoul(a, NULL, 10), NULL, 0);
  } else if (n >= 2 && strcmp(verb, "drop") == 0) {
    uint32_t id = (uint32_t)strtoul(a, NULL, 10);
    for (int i = 0; i < max_conns; i++) if (conns[i].id == id && id != 0) close_conn(&conns[i], "dropped by OnAir");
  }
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: onair-srt <bind address> <port> <latency ms> <max connections>\n");
    return 2;
  }
  int port = atoi(argv[2]);
  int latency = atoi(argv[3]);
  max_conns = atoi(argv[4]);
  if (max_conns < 1 || max_conns > 4096) max_conns = 64;
  conns = calloc((size_t)max_conns, sizeof *conns);
  for (int i = 0; i < max_conns; i++) conns[i].sock = SRT_INVALID_SOCK;

  srt_startup();
  srt_setloglevel(LOG_CRIT); /* its errors are the callers' (a wrong passphrase): Node logs what matters */
  SRTSOCKET lsn = srt_create_socket();
  int yes = 1, no = 0;
  srt_setsockflag(lsn, SRTO_RCVLATENCY, &latency, sizeof latency);
  srt_setsockflag(lsn, SRTO_PEERLATENCY, &latency, sizeof latency);
  srt_setsockflag(lsn, SRTO_ENFORCEDENCRYPTION, &yes, sizeof yes);
  srt_setsockflag(lsn, SRTO_RCVSYN, &no, sizeof no);
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  socklen_t addr_len;
  if (strchr(argv[1], ':')) {
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, argv[1], &a6->sin6_addr) != 1) { fprintf(stderr, "bad address %s\n", argv[1]); return 2; }
    addr_len = sizeof *a6;
  } else {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, argv[1], &a4->sin_addr) != 1) { fprintf(stderr, "bad address %s\n", argv[1]); return 2; }
    addr_len = sizeof *a4;
  }
  if (srt_bind(lsn, (struct sockaddr *)&addr, (int)addr_len) == SRT_ERROR) {
    fprintf(stderr, "bind failed: %s\n", srt_getlasterror_str());
    return 1;
  }
  if (srt_listen_callback(lsn, on_listen, NULL) == SRT_ERROR || srt_listen(lsn, 16) == SRT_ERROR) {
    fprintf(stderr, "listen failed: %s\n", srt_getlasterror_str());
    return 1;
  }
  struct sockaddr_storage bound;
  int bound_len = sizeof bound;
  srt_getsockname(lsn, (struct sockaddr *)&bound, &bound_len);
  int bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port : ((struct sockaddr_in *)&bound)->sin_port);
  fprintf(stderr, "listening %d\n", bound_port);
  fflush(stderr);

  eid = srt_epoll_create();
  int in = SRT_EPOLL_IN | SRT_EPOLL_ERR;
  srt_epoll_add_usock(eid, lsn, &in);
  srt_epoll_add_ssock(eid, 0, &in);
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);

  char lines[4096];
  size_t held = 0;
  char payload[PAYLOAD_MAX];
  int64_t stats_at = 0;
  for (;;) {
    /* Each connection's counters, once a second: what its close frame reports if the socket is broken by then. */
    int64_t now = srt_time_now();
    if (now - stats_at >= 1000000) {
      stats_at = now;
      for (int k = 0; k < max_conns; k++) {
        SRT_TRACEBSTATS perf;
        if (conns[k].id == 0 || srt_bstats(conns[k].sock, &perf, 0) != 0) continue;
        conns[k].last = perf;
        char text[128];
        int len = snprintf(text, sizeof text, "%lld %d %d %d", (long long)perf.pktRecvTotal, perf.pktRcvLossTotal, perf.pktRcvRetrans, perf.pktRcvDropTotal);
        if (len > 0 && len < (int)sizeof text) frame(FRAME_STATS, conns[k].id, text, (uint32_t)len);
      }
    }
    SRTSOCKET ready[64];
    int nready = 64;
    SYSSOCKET sready[1];
    int nsready = 1;
    int got = srt_epoll_wait(eid, ready, &nready, NULL, NULL, 1000, sready, &nsready, NULL, NULL);
    if (got < 0) {
      if (srt_getlasterror(NULL) == SRT_ETIMEOUT) continue;
      nready = 0;
      nsready = 0;
    }
    if (nsready > 0) {
      for (;;) {
        ssize_t n = read(0, lines + held, sizeof lines - held - 1);
        if (n == 0) return 0; /* the parent is gone */
        if (n < 0) break;
        held += (size_t)n;
        lines[held] = 0;
        char *start = lines, *nl;
        while ((nl = strchr(start, '\n'))) {
          *nl = 0;
          command(start);
          start = nl + 1;
        }
        held = strlen(start);
        memmove(lines, start, held);
        if (held >= sizeof lines - 1) held = 0; /* a line that long is no command */
      }
    }
    for (int i = 0; i < nready; i++) {
      SRTSOCKET s = ready[i];
      if (s == lsn) {
        for (;;) {
          struct sockaddr_storage peer;
          int peer_len = sizeof peer;
          SRTSOCKET ns = srt_accept(lsn, (struct sockaddr *)&peer, &peer_len);
          if (ns == SRT_INVALID_SOCK) break;
          struct conn *c = NULL;
          for (int k = 0; k < max_conns; k++) if (conns[k].id == 0) { c = &conns[k]; break; }
          char streamid[513] = ""; /* SRT's stream id is at most 512 bytes */
          int sid_len = sizeof streamid - 1;
          srt_getsockflag(ns, SRTO_STREAMID, streamid, &sid_len);
          streamid[sid_len > 0 ? sid_len : 0] = 0;
          char id[ID_LEN + 1];
          int bad_mode;
          if (!c || !requested(streamid, id, &bad_mode)) {
            srt_close(ns);
            continue;
          }
          srt_setsockflag(ns, SRTO_RCVSYN, &no, sizeof no);
          c->sock = ns;
          c->id = next_conn++;
          if (next_conn == 0) next_conn = 1;
          strcpy(c->stream, id);
          memset(&c->last, 0, sizeof c->last);
          open_conns++;
          char host[INET6_ADDRSTRLEN] = "?";
          int peer_port = 0;
          if (peer.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, host, sizeof host);
            peer_port = ntohs(((struct sockaddr_in6 *)&peer)->sin6_port);
          } else {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, host, sizeof host);
            peer_port = ntohs(((struct sockaddr_in *)&peer)->sin_port);
          }
          char open[128];
          int len = snprintf(open, sizeof open, "%s %s %d", id, host, peer_port);
          if (len < 0) len = 0;
          if (len >= (int)sizeof open) len = (int)sizeof open - 1;
          frame(FRAME_OPEN, c->id, open, (uint32_t)len);
          int events = SRT_EPOLL_IN | SRT_EPOLL_ERR;
          srt_epoll_add_usock(eid, ns, &events);
        }
        continue;
      }
      struct conn *c = conn_by_sock(s);
      if (!c) {
        srt_epoll_remove_usock(eid, s);
        srt_close(s);
        continue;
      }
      for (;;) {
        int n = srt_recvmsg(s, payload, sizeof payload);
        if (n > 0) {
          frame(FRAME_DATA, c->id, payload, (uint32_t)n);
          continue;
        }
        if (n == SRT_ERROR && srt_getlasterror(NULL) == SRT_EASYNCRCV) break;
        close_conn(c, n == 0 ? "the caller closed" : srt_getlasterror_str());
        break;
      }
    }
  }
}
