# peermesh: the two commands a newcomer runs are `make demo` and `make test`.
# Prerequisites (Debian names): python3 python3-venv, and for the nghttp2 HTTP/2 engine
# gcc python3-dev libnghttp2-dev (without them the agent runs on the h2 engine).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
NG_EXT := peermesh/net/http/nghttp2/_ng$(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

.PHONY: demo test test-h2-engine lint bench clean

# The data-plane tests, which CI runs a second time on the reference (h2) engine.
DATAPLANE_TESTS := tests/unit/net/test_h2session.py tests/unit/net/test_dataplane_stalls.py \
	tests/unit/net/test_cancellation.py tests/integration/test_proxy_clients.py \
	tests/integration/test_proxy_errors.py tests/integration/test_traffic_proxy.py \
	tests/integration/test_grpc.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	rm -f $(VENV)/.installed-*
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $@

# The cffi binding to libnghttp2; a failed build says what to install and is retried.
$(NG_EXT): peermesh/net/http/nghttp2/build.py peermesh/net/http/nghttp2/binding.c $(STAMP)
	-$(PY) -m peermesh.net.http.nghttp2.build

demo: $(STAMP) $(NG_EXT)
	$(PY) -m examples.demo $(DEMO_ARGS)

test: $(STAMP) $(NG_EXT)
	$(PY) -m pytest $(PYTEST_ARGS)

test-h2-engine: $(STAMP)
	PEERMESH_H2_ENGINE=h2 $(PY) -m pytest $(PYTEST_ARGS) $(DATAPLANE_TESTS)

lint: $(STAMP) $(NG_EXT)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP) $(NG_EXT)
	$(PY) -m bench.dataplane $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-data
