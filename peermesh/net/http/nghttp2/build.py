"""Build ``_ng``, the cffi API-mode binding to libnghttp2 the ``nghttp2`` engine drives.

C callbacks append fixed-size records to a flat int32 buffer (and header bytes to a
byte arena), so Python is entered once per ``ng_recv`` call, not once per frame or
header. Run ``python -m peermesh.net.http.nghttp2.build`` (``make`` does, after
installing the package); it needs a C compiler, the Python headers and
libnghttp2-dev. Without the extension the agent falls back to the ``h2`` engine.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

CDEF = r"""
typedef struct nghttp2_session nghttp2_session;
typedef struct { int32_t settings_id; uint32_t value; } nghttp2_settings_entry;

typedef struct {
    nghttp2_session *s;
    int32_t *ev; size_t ev_len; size_t ev_cap;    /* records of EVW int32 */
    int32_t *hd; size_t hd_len; size_t hd_cap;    /* 4 int32 per header */
    uint8_t *arena; size_t ar_len; size_t ar_cap;
    uint8_t *out; size_t out_len; size_t out_cap;
    ...;
} ng_ctx;
typedef struct ng_stream ng_stream;

ng_ctx *ng_new(int server, const nghttp2_settings_entry *iv, size_t niv,
               int32_t conn_window, size_t max_header_list, uint32_t max_incoming);
void ng_free(ng_ctx *c);
ssize_t ng_recv(ng_ctx *c, const uint8_t *data, size_t len, int flush);
ssize_t ng_drain(ng_ctx *c);
void ng_reset_events(ng_ctx *c);
int32_t ng_submit_request(ng_ctx *c, const uint8_t *blob, size_t len, uint64_t sensitive,
                          int end_stream, ng_stream **out);
int ng_submit_response(ng_ctx *c, int32_t sid, const uint8_t *blob, size_t len,
                       uint64_t sensitive, int end_stream, ng_stream **out);
int ng_submit_headers(ng_ctx *c, int32_t sid, ng_stream *st, const uint8_t *blob,
                      size_t len, uint64_t sensitive, int end_stream);
int ng_send_data(ng_ctx *c, ng_stream *st, const uint8_t *data, size_t len, int end_stream);
int ng_outbound_ready(const uint8_t *blob, size_t len, size_t n, int response, int trailer);
size_t ng_pending(ng_stream *st);
void ng_stream_free(ng_ctx *c, ng_stream *st);
int ng_consume(ng_ctx *c, int32_t sid, size_t n);
int nghttp2_session_consume_connection(nghttp2_session *s, size_t size);
int nghttp2_session_consume_stream(nghttp2_session *s, int32_t sid, size_t size);
int32_t ng_send_window(ng_ctx *c, int32_t sid, ng_stream *st);

int nghttp2_submit_rst_stream(nghttp2_session *s, uint8_t flags, int32_t sid, uint32_t code);
int nghttp2_submit_ping(nghttp2_session *s, uint8_t flags, const uint8_t *opaque);
int nghttp2_submit_settings(nghttp2_session *s, uint8_t flags,
                            const nghttp2_settings_entry *iv, size_t niv);
int nghttp2_submit_goaway(nghttp2_session *s, uint8_t flags, int32_t last_stream_id,
                          uint32_t error_code, const uint8_t *opaque_data, size_t opaque_data_len);
int nghttp2_submit_shutdown_notice(nghttp2_session *s);
int nghttp2_submit_window_update(nghttp2_session *s, uint8_t flags, int32_t sid, int32_t inc);
int nghttp2_session_terminate_session(nghttp2_session *s, uint32_t error_code);
int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *s);
uint32_t nghttp2_session_get_next_stream_id(nghttp2_session *s);
uint32_t nghttp2_session_get_remote_settings(nghttp2_session *s, int id);
uint32_t nghttp2_session_get_local_settings(nghttp2_session *s, int id);
int32_t nghttp2_session_get_stream_remote_window_size(nghttp2_session *s, int32_t sid);
int32_t nghttp2_session_get_remote_window_size(nghttp2_session *s);
int32_t nghttp2_session_get_stream_effective_local_window_size(nghttp2_session *s, int32_t sid);
int32_t nghttp2_session_get_local_window_size(nghttp2_session *s);
int nghttp2_session_want_read(nghttp2_session *s);
int nghttp2_session_want_write(nghttp2_session *s);
size_t nghttp2_session_get_outbound_queue_size(nghttp2_session *s);
const char *nghttp2_strerror(int lib_error_code);
"""

#: The C side: callbacks that collect nghttp2's events into one flat buffer per receive.
SRC_FILE = HERE / "binding.c"


def builder() -> FFI:
    ffibuilder = FFI()
    ffibuilder.cdef(CDEF)
    ffibuilder.set_source(
        "_ng", SRC_FILE.read_text(), libraries=["nghttp2"], extra_compile_args=["-O2", "-Wall"]
    )
    return ffibuilder


def build() -> Path:
    """Compile in a scratch directory and place the extension next to this file."""
    with tempfile.TemporaryDirectory(prefix="peermesh-ng-") as tmp:
        built = Path(builder().compile(tmpdir=tmp, verbose=False))
        target = HERE / built.name
        shutil.copyfile(built, target)
    return target


def main() -> int:
    try:
        target = build()
    except Exception as exc:  # a missing compiler or header: say which, keep going on h2
        print(
            f"nghttp2 engine not built ({exc}); install gcc, python3-dev and libnghttp2-dev"
            " and re-run 'make' (the agent uses the h2 engine until then)",
            file=sys.stderr,
        )
        return 1
    print(f"built {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
