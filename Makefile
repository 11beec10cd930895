# mailsrv: the README's commands.  Pure standard library: nothing to install.
PYTHON ?= python3

.PHONY: test interop fuzz bench bench-peers rfc-index clean

# Every test: unit, transcript, fuzz, loopback (smtplib/poplib), and the interop
# tests with Debian's clients, which skip (and say so) where a tool is missing.
test:
	$(PYTHON) -m tests.run

# Only the interop tests with real Debian clients and servers (.ci/run installs them).
interop:
	$(PYTHON) -m tests.run 'test_interop*.py'

# The state-walk fuzzers (SMTP, POP3, SMTP over a socket) with more iterations than `make test` runs.
fuzz:
	MAILSRV_FUZZ_ITERATIONS=5000 $(PYTHON) -m tests.run 'test_*fuzz*.py' 'test_server_stress.py'

# Benchmarks (never timed tests): numbers go to the README.
bench:
	$(PYTHON) tests/bench_smtp.py
	$(PYTHON) tests/bench_smtp_source.py
	$(PYTHON) tests/bench_pop3.py
	$(PYTHON) tests/bench_memory.py
	$(PYTHON) tests/bench_imap.py
	$(PYTHON) tests/bench_imap_content.py
	$(PYTHON) tests/bench_imap_compress.py
	$(PYTHON) tests/bench_imap_sort.py
	$(PYTHON) tests/bench_testserver.py
	$(PYTHON) tests/bench_dkim.py

# Optional: the issue's reference peer (aiosmtpd) in a venv under bench-data/, used
# only by tests/bench_smtp.py and tests/bench_smtp_source.py as a peer.  Never needed
# by mailsrv or its tests.
bench-peers:
	$(PYTHON) -m venv bench-data/.venv-aiosmtpd
	bench-data/.venv-aiosmtpd/bin/pip install -q aiosmtpd

# Each RFC section the code cites, with the functions that cite it (from the code's comments).
rfc-index:
	$(PYTHON) mailsrv.py rfc

clean:
	rm -rf maildata bench-data
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
