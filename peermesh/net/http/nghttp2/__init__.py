"""The ``nghttp2`` HTTP/2 engine: libnghttp2 through a project-owned cffi module."""
