#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <nghttp2/nghttp2.h>

#define EVW 6
enum { EV_HEADERS = 1, EV_DATA, EV_END, EV_RST, EV_CLOSE, EV_WINDOW, EV_SETTINGS,
       EV_GOAWAY, EV_PING, EV_ERROR, EV_INVALID, EV_GOAWAY_SENT, EV_NOT_SENT, EV_FAULT, EV_RST_SENT };
/* EV_FAULT reasons: a stream we reset for a fault of its own (the session counts them) */
enum { FAULT_REFUSED = 1, FAULT_HEADERS_TOO_LARGE = 2 };

/* nghttp2 treats a HEADERS over its *acknowledged* SETTINGS_MAX_CONCURRENT_STREAMS as a
   connection error; RFC 9113 5.1.2 allows refusing just that stream, which is what a
   connection shared by many apps needs. So nghttp2 is configured with this limit, never
   reached, and the limit announced on the wire (patched into our first SETTINGS) is
   enforced per stream in on_begin_headers. */
#define NG_INTERNAL_MAX_STREAMS 0x7fffffffu

typedef struct ng_stream {
    struct ng_stream *prev, *next;          /* ctx-owned list (freed with the ctx) */
    int32_t sid;
    int closed, eof, deferred, attached;
    uint8_t *buf; size_t off, len, cap;     /* unsent body bytes */
    nghttp2_nv *tr_nv; size_t tr_n; uint8_t *tr_blob;   /* trailers sent after the body */
} ng_stream;

typedef struct {
    nghttp2_session *s;
    int32_t *ev; size_t ev_len; size_t ev_cap;
    int32_t *hd; size_t hd_len; size_t hd_cap;
    uint8_t *arena; size_t ar_len; size_t ar_cap;
    uint8_t *out; size_t out_len; size_t out_cap;
    const uint8_t *in; size_t in_len;
    size_t hdr_start, hdr_bytes, max_hdr_list;
    int hdr_over, server;
    int in_block;                           /* a header block is being decoded */
    uint32_t incoming, max_incoming;        /* peer-opened streams we accepted, limit */
    char refused_mark;                      /* stream user data of streams we refused */
    ng_stream head;                         /* sentinel */
    int oom;
} ng_ctx;

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q) return -1;
    *p = q; *cap = nc; return 0;
}

static int32_t *ev_add(ng_ctx *c) {
    if (grow((void **)&c->ev, &c->ev_cap, c->ev_len + EVW, sizeof(int32_t))) { c->oom = 1; return NULL; }
    int32_t *r = c->ev + c->ev_len;
    memset(r, 0, EVW * sizeof(int32_t));
    c->ev_len += EVW;
    return r;
}

static int32_t ar_add(ng_ctx *c, const uint8_t *p, size_t n) {
    if (grow((void **)&c->arena, &c->ar_cap, c->ar_len + n + 1, 1)) { c->oom = 1; return -1; }
    int32_t off = (int32_t)c->ar_len;
    if (n) memcpy(c->arena + off, p, n);
    c->ar_len += n;
    return off;
}

static int fault(ng_ctx *c, int32_t sid, uint32_t code, int reason) {
    /* Queued before nghttp2's own RST(INTERNAL_ERROR) for the TEMPORAL failure we return,
       which it then skips (one RST per stream); the rest of the header block is still
       decoded, so the HPACK state stays in step. */
    c->in_block = 0;                        /* nghttp2 decodes the rest without callbacks */
    if (nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, sid, code)) return NGHTTP2_ERR_CALLBACK_FAILURE;
    int32_t *r = ev_add(c);
    if (!r) return NGHTTP2_ERR_CALLBACK_FAILURE;
    r[0] = EV_FAULT; r[1] = sid; r[2] = reason;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *u) {
    ng_ctx *c = u;
    c->hdr_start = c->hd_len; c->hdr_bytes = 0; c->hdr_over = 0; c->in_block = 1;
    if (c->server && f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (c->incoming >= c->max_incoming) {
            nghttp2_session_set_stream_user_data(s, f->hd.stream_id, &c->refused_mark);
            return fault(c, f->hd.stream_id, NGHTTP2_REFUSED_STREAM, FAULT_REFUSED);
        }
        c->incoming++;
    }
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *u) {
    ng_ctx *c = u;
    c->hdr_bytes += nlen + vlen + 32;
    if (c->hdr_bytes > c->max_hdr_list) {
        /* RFC 9113 10.5.1: a stream error; nghttp2 decodes (and drops) the rest. */
        if (c->hdr_over) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        c->hdr_over = 1;
        int32_t sid = f->hd.type == NGHTTP2_PUSH_PROMISE ? f->push_promise.promised_stream_id
                                                          : f->hd.stream_id;
        return fault(c, sid, NGHTTP2_ENHANCE_YOUR_CALM, FAULT_HEADERS_TOO_LARGE);
    }
    if (grow((void **)&c->hd, &c->hd_cap, c->hd_len + 4, sizeof(int32_t))) return NGHTTP2_ERR_CALLBACK_FAILURE;
    int32_t no = ar_add(c, name, nlen), vo = ar_add(c, value, vlen);
    if (no < 0 || vo < 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
    int32_t *h = c->hd + c->hd_len;
    h[0] = no; h[1] = no + (int32_t)nlen; h[2] = vo; h[3] = vo + (int32_t)vlen;  /* [start, end) */
    c->hd_len += 4;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *u) {
    ng_ctx *c = u;
    int32_t *r;
    int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        c->in_block = 0;
        if (!(r = ev_add(c))) return NGHTTP2_ERR_CALLBACK_FAILURE;
        r[0] = EV_HEADERS; r[1] = f->hd.stream_id; r[2] = f->headers.cat | (end << 8);
        r[3] = (int32_t)(c->hdr_start / 4); r[4] = (int32_t)((c->hd_len - c->hdr_start) / 4);
        if (end) { if (!(r = ev_add(c))) return NGHTTP2_ERR_CALLBACK_FAILURE; r[0] = EV_END; r[1] = f->hd.stream_id; }
        break;
    case NGHTTP2_DATA:
        if (end) { if (!(r = ev_add(c))) return NGHTTP2_ERR_CALLBACK_FAILURE; r[0] = EV_END; r[1] = f->hd.stream_id; }
        break;
    case NGHTTP2_RST_STREAM:
        if (!(r = ev_add(c))) return NGHTTP2_ERR_CALLBACK_FAILURE;
        r[0] = EV_RST; r[1] = f->hd.stream_id; r[2] = (int32_t)f->rst_stream.error_code;
        break;
    case NGHTTP2_WINDOW_UPDATE:
        if (!(r = ev_add(c))) return NGHTTP2_ERR_CALLBACK_FAILURE;
        r[0] = EV_WINDOW; r[1] = f->hd.stream_id; r[2] = f->window_update.window_size_increment;
        break;
    case NGHTTP2_SETTINGS:
        if (!(r = ev_add(c))) return NGHTTP2_ERR_CALLBACK_FAILURE;
        r[0] = EV_SETTINGS; r[2] = (f->hd.flags & NGHTTP2_FLAG_ACK) != 0;
        break;
    case NGHTTP2_GOAWAY: {
        if (!(r = ev_add(c))) return NGHTTP2_ERR_CALLBACK_FAILURE;
        int32_t idx = (int32_t)(r - c->ev);
        int32_t off = ar_add(c, f->goaway.opaque_data, f->goaway.opaque_data_len);
        r = c->ev + idx;
        r[0] = EV_GOAWAY; r[2] = (int32_t)f->goaway.error_code; r[3] = f->goaway.last_stream_id;
        r[4] = off; r[5] = (int32_t)f->goaway.opaque_data_len;
        break; }
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK) {
            if (!(r = ev_add(c))) return NGHTTP2_ERR_CALLBACK_FAILURE;
            int32_t idx = (int32_t)(r - c->ev);
            int32_t off = ar_add(c, f->ping.opaque_data, 8);
            r = c->ev + idx;
            r[0] = EV_PING; r[2] = 1; r[4] = off; r[5] = 8;
        }
        break;
    }
    return 0;
}

/* A non-zero GOAWAY we did not ask for is nghttp2 reporting a connection error, and an
   RST_STREAM we did not ask for a stream error it found itself (a body that disagrees
   with its content-length): it has no callback for either, the frame is the only trace. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *u) {
    ng_ctx *c = u;
    if (f->hd.type == NGHTTP2_RST_STREAM) {
        int32_t *r = ev_add(c);
        if (!r) return NGHTTP2_ERR_CALLBACK_FAILURE;
        r[0] = EV_RST_SENT; r[1] = f->hd.stream_id; r[2] = (int32_t)f->rst_stream.error_code;
        return 0;
    }
    if (f->hd.type != NGHTTP2_GOAWAY) return 0;
    int32_t *r = ev_add(c);
    if (!r) return NGHTTP2_ERR_CALLBACK_FAILURE;
    int32_t idx = (int32_t)(r - c->ev);
    int32_t off = ar_add(c, f->goaway.opaque_data, f->goaway.opaque_data_len);
    r = c->ev + idx;
    r[0] = EV_GOAWAY_SENT; r[2] = (int32_t)f->goaway.error_code; r[3] = f->goaway.last_stream_id;
    r[4] = off; r[5] = (int32_t)f->goaway.opaque_data_len;
    return 0;
}

/* A request HEADERS that never went out (GOAWAY received, session closing...): the
   stream was never opened, so on_stream_close will not come; report it instead. */
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int lib_error, void *u) {
    ng_ctx *c = u;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    int32_t *r = ev_add(c);
    if (!r) return NGHTTP2_ERR_CALLBACK_FAILURE;
    r[0] = EV_NOT_SENT; r[1] = f->hd.stream_id; r[2] = lib_error;
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *u) {
    ng_ctx *c = u;
    int32_t *r = ev_add(c);
    if (!r) return NGHTTP2_ERR_CALLBACK_FAILURE;
    r[0] = EV_DATA; r[1] = sid; r[4] = (int32_t)len;
    if (c->in && data >= c->in && data + len <= c->in + c->in_len) {
        r[2] = 1; r[3] = (int32_t)(data - c->in);          /* slice of the caller's bytes */
    } else {
        int32_t idx = (int32_t)(r - c->ev);
        int32_t off = ar_add(c, data, len);
        r = c->ev + idx;
        r[2] = 0; r[3] = off;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *u) {
    ng_ctx *c = u;
    void *ud = nghttp2_session_get_stream_user_data(s, sid);
    if (ud == &c->refused_mark) {
        ud = NULL;                           /* never counted */
    } else if (c->server && (sid & 1) && c->incoming) {
        c->incoming--;
    }
    ng_stream *st = ud;
    if (st) st->closed = 1;
    int32_t *r = ev_add(c);
    if (!r) return NGHTTP2_ERR_CALLBACK_FAILURE;
    r[0] = EV_CLOSE; r[1] = sid; r[2] = (int32_t)code;
    return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *f, int lib_error, void *u) {
    ng_ctx *c = u;
    int32_t *r = ev_add(c);
    if (!r) return NGHTTP2_ERR_CALLBACK_FAILURE;
    r[0] = EV_INVALID; r[1] = f->hd.stream_id; r[2] = lib_error; r[3] = f->hd.type;
    return 0;
}

static int on_error(nghttp2_session *s, int lib_error, const char *msg, size_t len, void *u) {
    ng_ctx *c = u;
    int32_t *r = ev_add(c);
    if (!r) return NGHTTP2_ERR_CALLBACK_FAILURE;
    int32_t idx = (int32_t)(r - c->ev);
    int32_t off = ar_add(c, (const uint8_t *)msg, len);
    r = c->ev + idx;
    r[0] = EV_ERROR; r[2] = lib_error; r[4] = off; r[5] = (int32_t)len;
    return 0;
}

/* Let DATA frames use the peer's SETTINGS_MAX_FRAME_SIZE (nghttp2 caps them at 16 KiB otherwise). */
static ssize_t read_length(nghttp2_session *s, uint8_t type, int32_t sid, int32_t swin,
                           int32_t cwin, uint32_t max_frame, void *u) {
    ssize_t n = swin < cwin ? swin : cwin;
    if ((ssize_t)max_frame < n) n = max_frame;
    return n;
}

static void trailers_free(ng_stream *st) {
    free(st->tr_nv); free(st->tr_blob); st->tr_nv = NULL; st->tr_blob = NULL; st->tr_n = 0;
}

static ssize_t data_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *u) {
    ng_stream *st = src->ptr;
    size_t avail = st->len - st->off;
    if (avail == 0 && !st->eof) { st->deferred = 1; return NGHTTP2_ERR_DEFERRED; }
    size_t n = avail < length ? avail : length;
    if (n) memcpy(buf, st->buf + st->off, n);
    st->off += n;
    if (st->off == st->len) {
        st->off = st->len = 0;
        if (st->eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            st->attached = 0;
            if (st->tr_nv) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                int rv = nghttp2_submit_trailer(s, sid, st->tr_nv, st->tr_n);  /* copies nv */
                trailers_free(st);
                if (rv) return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        }
    }
    return (ssize_t)n;
}

ssize_t ng_drain(ng_ctx *c);

/* Our first SETTINGS is the first frame in c->out (after the client preface): give the
   peer the stream limit we enforce ourselves, in place of the one nghttp2 was told. */
static void patch_max_streams(ng_ctx *c, size_t at, uint32_t value) {
    if (c->out_len < at + 9 || c->out[at + 3] != NGHTTP2_SETTINGS) return;
    size_t len = ((size_t)c->out[at] << 16) | ((size_t)c->out[at + 1] << 8) | c->out[at + 2];
    uint8_t *p = c->out + at + 9;
    for (size_t i = 0; i + 6 <= len && at + 9 + i + 6 <= c->out_len; i += 6) {
        if (p[i] == 0 && p[i + 1] == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
            p[i + 2] = value >> 24; p[i + 3] = value >> 16; p[i + 4] = value >> 8; p[i + 5] = value;
        }
    }
}

ng_ctx *ng_new(int server, const nghttp2_settings_entry *iv, size_t niv, int32_t conn_window,
               size_t max_header_list, uint32_t max_incoming) {
    ng_ctx *c = calloc(1, sizeof(ng_ctx));
    if (!c) return NULL;
    c->head.next = c->head.prev = &c->head;
    c->max_hdr_list = max_header_list;
    c->server = server;
    c->max_incoming = max_incoming;
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb)) { free(c); return NULL; }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    nghttp2_session_callbacks_set_error_callback2(cb, on_error);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cb, read_length);
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Closed streams are kept for the priority tree up to the stream limit nghttp2 knows,
       which is NG_INTERNAL_MAX_STREAMS: keep none. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, 1 << 16);
    int rv = server ? nghttp2_session_server_new2(&c->s, cb, c, opt)
                    : nghttp2_session_client_new2(&c->s, cb, c, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv) { free(c); return NULL; }
    /* The client preface is emitted by the first mem_send; SETTINGS first, then window. */
    nghttp2_settings_entry local[16];
    if (niv > 16) { nghttp2_session_del(c->s); free(c); return NULL; }
    int announces_limit = 0;
    for (size_t i = 0; i < niv; i++) {
        local[i] = iv[i];
        if (server && iv[i].settings_id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
            local[i].value = NG_INTERNAL_MAX_STREAMS;
            announces_limit = 1;
        }
    }
    if (!announces_limit) c->max_incoming = NG_INTERNAL_MAX_STREAMS;
    if (nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, local, niv) ||
        (conn_window > 65535 &&
         nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, conn_window)) ||
        ng_drain(c) < 0) {
        nghttp2_session_del(c->s); free(c->out); free(c); return NULL;
    }
    if (announces_limit) patch_max_streams(c, server ? 0 : 24, max_incoming);
    return c;
}

void ng_stream_free(ng_ctx *c, ng_stream *st) {
    if (!st) return;
    if (!st->closed && st->sid > 0 && nghttp2_session_get_stream_user_data(c->s, st->sid) == st)
        nghttp2_session_set_stream_user_data(c->s, st->sid, NULL);
    st->prev->next = st->next; st->next->prev = st->prev;
    trailers_free(st); free(st->buf); free(st);
}

void ng_free(ng_ctx *c) {
    if (!c) return;
    nghttp2_session_del(c->s);    /* no callbacks after this */
    while (c->head.next != &c->head) { ng_stream *st = c->head.next; st->closed = 1; ng_stream_free(c, st); }
    free(c->ev); free(c->hd); free(c->arena); free(c->out); free(c);
}

/* nghttp2 decodes a header block as its bytes arrive, so one read can end in the middle
   of a block: the fields decoded so far are kept (moved to the front) for the read that
   completes it, or the block would arrive without them. */
void ng_reset_events(ng_ctx *c) {
    c->ev_len = 0;
    size_t keep = c->in_block ? c->hd_len - c->hdr_start : 0;
    if (keep) {
        int32_t from = c->hd[c->hdr_start];   /* arena offset of the block's first name */
        memmove(c->arena, c->arena + from, c->ar_len - (size_t)from);
        c->ar_len -= (size_t)from;
        memmove(c->hd, c->hd + c->hdr_start, keep * sizeof(int32_t));
        for (size_t i = 0; i < keep; i++) c->hd[i] -= from;
    } else {
        c->ar_len = 0;
    }
    c->hd_len = keep;
    c->hdr_start = 0;
}


/* flush: also serialise what the frames queued (ACKs, WINDOW_UPDATE, a GOAWAY after a
   connection error) into c->out, so a connection error is known when this returns. */
ssize_t ng_recv(ng_ctx *c, const uint8_t *data, size_t len, int flush) {
    c->in = data; c->in_len = len;
    ssize_t rv = nghttp2_session_mem_recv(c->s, data, len);
    c->in = NULL; c->in_len = 0;
    if (c->oom) return NGHTTP2_ERR_NOMEM;
    if (rv >= 0 && flush) {
        ssize_t n = ng_drain(c);
        if (n < 0) return n;
    }
    return rv;
}

/* Appends to c->out (the caller takes c->out_len bytes and zeroes it). */
ssize_t ng_drain(ng_ctx *c) {
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->s, &p);
        if (n < 0) return n;
        if (n == 0) break;
        if (grow((void **)&c->out, &c->out_cap, c->out_len + (size_t)n, 1)) return NGHTTP2_ERR_NOMEM;
        memcpy(c->out + c->out_len, p, (size_t)n);
        c->out_len += (size_t)n;
    }
    return (ssize_t)c->out_len;
}

/* blob = name0 \0 value0 \0 name1 \0 value1 ... (values can't hold NUL legally anyway) */
static nghttp2_nv *make_nv(const uint8_t *blob, size_t len, uint64_t sensitive, size_t *n_out) {
    size_t fields = 1;
    for (size_t i = 0; i < len; i++) fields += blob[i] == 0;
    if (fields % 2) return NULL;
    nghttp2_nv *nv = malloc(sizeof(nghttp2_nv) * (fields / 2 + 1));
    if (!nv) return NULL;
    const uint8_t *p = blob, *end = blob + len;
    size_t k = 0;
    while (k < fields / 2) {
        const uint8_t *z = memchr(p, 0, end - p);
        nv[k].name = (uint8_t *)p; nv[k].namelen = z - p; p = z + 1;
        z = memchr(p, 0, end - p); if (!z) z = end;
        nv[k].value = (uint8_t *)p; nv[k].valuelen = z - p; p = z + 1;
        /* never-indexed: caller's mask (hpack NeverIndexedHeaderTuple), plus h2fast's rule:
           authorization, proxy-authorization, and short cookies */
        int ni = (k < 64 && (sensitive >> k) & 1) ||
                 (nv[k].namelen == 13 && !memcmp(nv[k].name, "authorization", 13)) ||
                 (nv[k].namelen == 19 && !memcmp(nv[k].name, "proxy-authorization", 19)) ||
                 (nv[k].namelen == 6 && !memcmp(nv[k].name, "cookie", 6) && nv[k].valuelen < 20);
        nv[k].flags = ni ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;
        k++;
    }
    *n_out = k;
    return nv;
}

/* --- outbound blocks: the fast path of h2fast.prepare_outbound ----------------------- */

static int is_ws(uint8_t b) { return b == ' ' || b == '\t' || b == '\r' || b == '\n' || b == 0x0b || b == 0x0c; }

static int name_is(const uint8_t *p, size_t n, const char *lit) {
    size_t m = strlen(lit);
    return n == m && !memcmp(p, lit, m);
}

enum { P_METHOD = 1, P_SCHEME = 2, P_AUTHORITY = 4, P_PATH = 8, P_STATUS = 16, P_PROTOCOL = 32 };
#define P_REQUEST_ONLY (P_METHOD | P_SCHEME | P_AUTHORITY | P_PATH | P_PROTOCOL)

static unsigned pseudo_bit(const uint8_t *p, size_t n) {
    if (name_is(p, n, ":method")) return P_METHOD;
    if (name_is(p, n, ":scheme")) return P_SCHEME;
    if (name_is(p, n, ":authority")) return P_AUTHORITY;
    if (name_is(p, n, ":path")) return P_PATH;
    if (name_is(p, n, ":status")) return P_STATUS;
    if (name_is(p, n, ":protocol")) return P_PROTOCOL;
    return 0;
}

/* 0 when the block (n fields as name \0 value \0 ...) is already what prepare_outbound
   returns for it and passes every check it makes: names lowercase and not empty, nothing
   to strip around names or values, no connection-specific field, pseudo-headers known,
   once each, before the regular fields and the set the kind of block needs, TE only
   "trailers", a request's Host once and equal to :authority, a non-empty :path.
   1 for anything else (also a NUL inside a name or value): the caller hands the block to
   prepare_outbound, which normalises it or raises its exact ProtocolError. */
int ng_outbound_ready(const uint8_t *blob, size_t len, size_t n, int response, int trailer) {
    const uint8_t *p = blob, *end = blob + len;
    int request = !response && !trailer, seen_regular = 0;
    unsigned pseudo = 0;
    const uint8_t *method = NULL, *authority = NULL, *host = NULL;
    size_t method_len = 0, authority_len = 0, host_len = 0;
    if (n == 0 && len) return 1;
    for (size_t k = 0; k < n; k++) {
        const uint8_t *z = memchr(p, 0, (size_t)(end - p));
        if (!z) return 1;
        const uint8_t *name = p; size_t nl = (size_t)(z - p); p = z + 1;
        if (k + 1 < n) {
            if (p > end || !(z = memchr(p, 0, (size_t)(end - p)))) return 1;
        } else {
            if (p > end || memchr(p, 0, (size_t)(end - p))) return 1;
            z = end;
        }
        const uint8_t *value = p; size_t vl = (size_t)(z - p); p = z + 1;
        if (nl == 0 || is_ws(name[0]) || is_ws(name[nl - 1])) return 1;
        if (vl && (is_ws(value[0]) || is_ws(value[vl - 1]))) return 1;
        /* CR or LF anywhere: prepare_outbound refuses the block (a NUL already fell back). */
        if (memchr(name, '\r', nl) || memchr(name, '\n', nl) ||
            memchr(value, '\r', vl) || memchr(value, '\n', vl))
            return 1;
        for (size_t i = 0; i < nl; i++) if (name[i] >= 'A' && name[i] <= 'Z') return 1;
        if (name_is(name, nl, "connection") || name_is(name, nl, "proxy-connection") ||
            name_is(name, nl, "keep-alive") || name_is(name, nl, "transfer-encoding") ||
            name_is(name, nl, "upgrade"))
            return 1;
        if (name[0] == ':') {
            unsigned bit = pseudo_bit(name, nl);
            if (!bit || (pseudo & bit) || seen_regular) return 1;
            pseudo |= bit;
            if (bit == P_METHOD) { method = value; method_len = vl; }
            else if (request && bit == P_AUTHORITY) { authority = value; authority_len = vl; }
            else if (request && bit == P_PATH && vl == 0) return 1;
        } else {
            seen_regular = 1;
            if (name_is(name, nl, "te") && !(vl == 8 && !strncasecmp((const char *)value, "trailers", 8)))
                return 1;
            if (request && name_is(name, nl, "host")) {
                if (host) return 1;
                host = value; host_len = vl;
            }
        }
    }
    if (trailer && pseudo) return 1;
    if (response) {
        if (!(pseudo & P_STATUS) || (pseudo & P_REQUEST_ONLY)) return 1;
    } else if (!trailer) {
        if (!(pseudo & P_METHOD) || (pseudo & P_STATUS)) return 1;
        int connect = method_len == 7 && !memcmp(method, "CONNECT", 7);
        if (connect && !(pseudo & P_PROTOCOL)) {
            if (pseudo & (P_SCHEME | P_PATH)) return 1;
        } else if ((pseudo & (P_SCHEME | P_PATH)) != (P_SCHEME | P_PATH)) {
            return 1;
        }
        if (!connect && (pseudo & P_PROTOCOL)) return 1;
    }
    if (request) {
        if (!authority && !host) return 1;
        if (authority && host &&
            (authority_len != host_len || memcmp(authority, host, host_len)))
            return 1;
    }
    return 0;
}

static ng_stream *stream_new(ng_ctx *c) {
    ng_stream *st = calloc(1, sizeof(ng_stream));
    if (!st) return NULL;
    st->next = c->head.next; st->prev = &c->head; c->head.next->prev = st; c->head.next = st;
    st->attached = 1;
    return st;
}

/* What submitting a request and a response share: the header list and, unless the
   message ends with its headers, a stream whose DATA the provider reads. */
static int prepare_submit(ng_ctx *c, const uint8_t *blob, size_t len, uint64_t sensitive,
                          int end_stream, nghttp2_nv **nv, size_t *n, ng_stream **st,
                          nghttp2_data_provider *prd) {
    *nv = make_nv(blob, len, sensitive, n);
    if (!*nv) return NGHTTP2_ERR_INVALID_ARGUMENT;
    *st = NULL;
    if (!end_stream) {
        if (!(*st = stream_new(c))) { free(*nv); return NGHTTP2_ERR_NOMEM; }
        prd->source.ptr = *st; prd->read_callback = data_read;
    }
    return 0;
}

int32_t ng_submit_request(ng_ctx *c, const uint8_t *blob, size_t len, uint64_t sensitive,
                          int end_stream, ng_stream **out) {
    size_t n; nghttp2_nv *nv; ng_stream *st; nghttp2_data_provider prd;
    int prepared = prepare_submit(c, blob, len, sensitive, end_stream, &nv, &n, &st, &prd);
    if (prepared) return prepared;
    int32_t sid = nghttp2_submit_request(c->s, NULL, nv, n, st ? &prd : NULL, st);
    free(nv);
    if (sid < 0) { if (st) { st->closed = 1; ng_stream_free(c, st); } return sid; }
    if (st) st->sid = sid;
    *out = st;
    return sid;
}

int ng_submit_response(ng_ctx *c, int32_t sid, const uint8_t *blob, size_t len, uint64_t sensitive,
                       int end_stream, ng_stream **out) {
    size_t n; nghttp2_nv *nv; ng_stream *st; nghttp2_data_provider prd;
    int prepared = prepare_submit(c, blob, len, sensitive, end_stream, &nv, &n, &st, &prd);
    if (prepared) return prepared;
    if (st) st->sid = sid;
    int rv = nghttp2_submit_response(c->s, sid, nv, n, st ? &prd : NULL);
    free(nv);
    if (rv) { if (st) { st->closed = 1; ng_stream_free(c, st); } return rv; }
    if (st) nghttp2_session_set_stream_user_data(c->s, sid, st);
    *out = st;
    return 0;
}

/* Informational (1xx) heads, or trailers. With a body provider attached, trailers wait
   until the body is drained (they are submitted from the read callback). */
int ng_submit_headers(ng_ctx *c, int32_t sid, ng_stream *st, const uint8_t *blob, size_t len,
                      uint64_t sensitive, int end_stream) {
    size_t n; nghttp2_nv *nv = make_nv(blob, len, sensitive, &n);
    if (!nv) return NGHTTP2_ERR_INVALID_ARGUMENT;
    if (st && st->attached) {
        if (st->eof || st->tr_nv || !end_stream) { free(nv); return NGHTTP2_ERR_INVALID_STATE; }
        st->tr_blob = malloc(len ? len : 1);
        if (!st->tr_blob) { free(nv); return NGHTTP2_ERR_NOMEM; }
        memcpy(st->tr_blob, blob, len);
        for (size_t i = 0; i < n; i++) {   /* re-point into our copy */
            nv[i].name = st->tr_blob + (nv[i].name - blob);
            nv[i].value = st->tr_blob + (nv[i].value - blob);
        }
        st->tr_nv = nv; st->tr_n = n; st->eof = 1;
        if (st->deferred && !st->closed) { st->deferred = 0; return nghttp2_session_resume_data(c->s, sid); }
        return 0;
    }
    int rv = nghttp2_submit_headers(c->s, end_stream ? NGHTTP2_FLAG_END_STREAM : 0, sid, NULL, nv, n, NULL);
    free(nv);
    return rv < 0 ? rv : 0;
}

int ng_send_data(ng_ctx *c, ng_stream *st, const uint8_t *data, size_t len, int end_stream) {
    if (!st || !st->attached || st->eof) return NGHTTP2_ERR_INVALID_STATE;
    if (st->closed) return NGHTTP2_ERR_STREAM_CLOSED;
    if (len) {
        if (st->off && st->off == st->len) st->off = st->len = 0;
        if (st->off > (1 << 16) && st->off * 2 > st->len) {     /* compact */
            memmove(st->buf, st->buf + st->off, st->len - st->off);
            st->len -= st->off; st->off = 0;
        }
        if (grow((void **)&st->buf, &st->cap, st->len + len, 1)) return NGHTTP2_ERR_NOMEM;
        memcpy(st->buf + st->len, data, len);
        st->len += len;
    }
    if (end_stream) st->eof = 1;
    if (st->deferred && (len || end_stream)) {
        st->deferred = 0;
        return nghttp2_session_resume_data(c->s, st->sid);
    }
    return 0;
}

size_t ng_pending(ng_stream *st) { return st ? st->len - st->off : 0; }

int ng_consume(ng_ctx *c, int32_t sid, size_t n) {
    int rv = nghttp2_session_consume(c->s, sid, n);
    return rv;
}

/* What we may still queue on this stream: peer's window minus what is buffered unsent. */
int32_t ng_send_window(ng_ctx *c, int32_t sid, ng_stream *st) {
    int32_t sw = nghttp2_session_get_stream_remote_window_size(c->s, sid);
    if (sw < 0) {   /* stream not opened yet (request HEADERS still queued) */
        sw = (int32_t)nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
    }
    int32_t cw = nghttp2_session_get_remote_window_size(c->s);
    int64_t w = sw < cw ? sw : cw;
    w -= (int64_t)ng_pending(st);
    return w < 0 ? 0 : (int32_t)w;
}
