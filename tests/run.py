"""`make test`: discover and run every test, then print one closing line.

    python3 -m tests.run [pattern...]

The closing line reads ``N passed, N failed, N skipped``; skipped interop
tests name the missing tool, so a developer sees what CI will run that their
box did not.

Test modules run in parallel: a pool of worker processes (``python3 -m
tests.run --worker``), each running whole modules one after another, the
longest first.  Each module's output is printed in one piece when it ends.
``MAILSRV_TEST_JOBS=N`` sets the number of workers (default: the number of
CPUs, at least 2); ``MAILSRV_TEST_JOBS=1``, or a pattern naming one module,
runs everything serially in this process as one unittest run.
``MAILSRV_TEST_LOG=DEBUG`` shows the servers' logs.  Warnings (ResourceWarning
too) are shown as ``python3 -m unittest`` shows them; the interpreter's -W and
-X options reach the workers (``python3 -X tracemalloc=10 -m tests.run`` says
where an unclosed socket was opened).
"""

import fnmatch
import json
import logging
import os
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

TESTS_DIR = "tests"
JOBS_ENV = "MAILSRV_TEST_JOBS"

# Seconds each slow module took in a parallel run (two workers on the 2-core
# build machine, shared with other work): the pool starts the longest first,
# so that no long module starts last and keeps one worker busy alone at the
# end.  Modules not listed are estimated from their size (small: they fill the
# gaps at the end).
SLOW_MODULES = {
    "test_server_startup.py": 44, "test_server_relay.py": 42, "test_dns_command.py": 25,
    "test_rfcindex.py": 25, "test_interop_pop3.py": 23, "test_sendmail.py": 21, "test_server_cli.py": 20,
    "test_interop_dns.py": 12, "test_idle_drip.py": 12, "test_users_cli.py": 11,
    "test_source_hygiene.py": 10, "test_interop_dovecot.py": 9, "test_deliver.py": 8,
    "test_interop_postfix.py": 7, "test_users.py": 6, "test_auth_hardening.py": 6, "test_layering.py": 5,
    "test_reload.py": 4, "test_message_memory.py": 4, "test_loop.py": 4, "test_server_stress.py": 4,
    "test_server_smtp.py": 4, "test_open_relay.py": 4, "test_server_pop3.py": 3,
}
# A module file of this many octets counts as one second.
OCTETS_PER_SECOND = 100_000
# Warnings as `python3 -m unittest` shows them (each once per place; with
# ResourceWarning, so an unclosed socket or file is reported), unless -W says otherwise.
WARNINGS = None if sys.warnoptions else "default"


def main(argv):
    # Servers started in-process log refusals and auth failures on purpose;
    # keep them off the test output unless asked (MAILSRV_TEST_LOG=DEBUG).
    logging.basicConfig(level=os.environ.get("MAILSRV_TEST_LOG", "CRITICAL"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[1:2] == ["--worker"]:
        return worker(int(argv[2]), int(argv[3]), argv[4])
    patterns = argv[1:] or ["test*.py"]
    try:
        jobs = job_count()
    except ValueError as exc:
        print(f"tests.run: {exc}", file=sys.stderr)
        return 2
    modules = find_modules(patterns)
    cache = private_bytecode_cache()
    try:
        if jobs <= 1 or len(modules) <= 1:
            return run_serial(patterns)
        return Pool(modules, jobs).run()
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def private_bytecode_cache():
    """With PYTHONDONTWRITEBYTECODE set (as on the build machine), each of the
    few hundred `python3 mailsrv.py` processes the tests start would compile
    mailsrv from source again (about 0.2 s of CPU each): this run writes its
    bytecode to a private cache instead (PYTHONPYCACHEPREFIX), removed at the
    end, so the tree stays free of __pycache__ as the setting wants.  Returns
    the cache's path, or None when the environment already allows a cache."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return None
    cache = tempfile.mkdtemp(prefix="mailsrv-test-pyc-")
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = cache
    sys.dont_write_bytecode, sys.pycache_prefix = False, cache
    return cache


def job_count() -> int:
    """Workers: $MAILSRV_TEST_JOBS, else the CPUs this process may use (at least 2)."""
    text = os.environ.get(JOBS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{JOBS_ENV}={text!r}: want a number of workers, 1 or more")
        return int(text)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, cpus or 1)


def find_modules(patterns):
    """Test module files under tests/ matching any pattern, as unittest's
    discovery finds them (file name matched, a valid module name), each once."""
    found = []
    for dirpath, dirnames, filenames in os.walk(TESTS_DIR):
        # discovery enters only packages
        dirnames[:] = sorted(d for d in dirnames if os.path.exists(os.path.join(dirpath, d, "__init__.py")))
        for name in sorted(filenames):
            if re.match(r"[_a-z]\w*\.py$", name, re.I) and any(fnmatch.fnmatch(name, p) for p in patterns):
                found.append(os.path.relpath(os.path.join(dirpath, name), TESTS_DIR))
    return found


def estimate(module) -> float:
    """Expected seconds for one module: the table above, else from its size."""
    name = os.path.basename(module)
    if name in SLOW_MODULES:
        return SLOW_MODULES[name]
    return os.path.getsize(os.path.join(TESTS_DIR, module)) / OCTETS_PER_SECOND


def load(pattern):
    return unittest.TestLoader().discover(TESTS_DIR, pattern=pattern, top_level_dir=".")


def run_serial(patterns):
    """Every matching test in this process, in one unittest run (as before the pool)."""
    suite = unittest.TestSuite(load(p) for p in patterns)
    result = unittest.TextTestRunner(verbosity=1, buffer=False, warnings=WARNINGS).run(suite)
    failed = len(result.failures) + len(result.errors) + len(getattr(result, "unexpectedSuccesses", []))
    skipped = [reason for _test, reason in result.skipped]
    return summary(result.testsRun, failed, skipped)


def summary(run, failed, skip_reasons, broken=()):
    """The skip reasons, the broken modules, and the closing line; the exit status."""
    for reason in sorted(set(skip_reasons)):
        print(f"skipped: {reason}")
    for line in broken:
        print(line)
    skipped = len(skip_reasons)
    print(f"{run - failed - skipped} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if failed == 0 and run > 0 and not broken else 1


# ---------------------------------------------------------------------------
# The worker: runs the modules named on its command pipe, one at a time.

def worker(cmd_fd, result_fd, capture):
    """Read module paths (one a line) from ``cmd_fd``; for each, run it with
    its output captured in the file ``capture`` and write one JSON line to
    ``result_fd``."""
    for fd in (cmd_fd, result_fd):
        os.set_inheritable(fd, False)     # not for the tests' own child processes
    with os.fdopen(cmd_fd, "r") as commands, os.fdopen(result_fd, "w") as results:
        for line in commands:
            results.write(json.dumps(run_module(line.strip(), capture)) + "\n")
            results.flush()
    return 0


def run_module(module, capture):
    """One module's tests, with everything written to fd 1 and 2 meanwhile
    (runner, warnings, child processes) captured; the counts and that text.
    If the worker dies, the parent reads what the module wrote from ``capture``."""
    start, cpu = time.monotonic(), cpu_seconds()
    with open(capture, "w+b") as out:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1, buffer=False, warnings=WARNINGS).run(
                load(os.path.basename(module)))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    failed = len(result.failures) + len(result.errors) + len(getattr(result, "unexpectedSuccesses", []))
    return {"module": module, "run": result.testsRun, "failed": failed, "output": text,
            "skipped": [reason for _test, reason in result.skipped], "seconds": time.monotonic() - start,
            "cpu": cpu_seconds() - cpu}


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended: on a
    shared machine a steadier measure of a module's cost than its wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ---------------------------------------------------------------------------
# The pool: one thread per worker process hands it modules and prints results.

class Worker:
    """One `python3 -m tests.run --worker` process and its two pipes."""

    def __init__(self):
        fd, self.capture = tempfile.mkstemp(prefix="mailsrv-test-output-")
        os.close(fd)
        cmd_r, self.cmd_w = os.pipe()
        self.result_r, result_w = os.pipe()
        # the interpreter's own -W and -X options (e.g. -W error::ResourceWarning) apply in the workers too
        options = [f"-W{w}" for w in sys.warnoptions]
        options += [f"-X{k}" if v is True else f"-X{k}={v}" for k, v in sys._xoptions.items()]
        self.proc = subprocess.Popen([sys.executable, *options, "-m", "tests.run", "--worker", str(cmd_r),
                                      str(result_w), self.capture], stdin=subprocess.DEVNULL, pass_fds=(cmd_r, result_w))
        os.close(cmd_r)
        os.close(result_w)
        self.results = os.fdopen(self.result_r, "r")

    def run(self, module):
        """The module's result, or None if the worker died meanwhile."""
        try:
            os.write(self.cmd_w, (module + "\n").encode())
        except BrokenPipeError:
            return None
        while True:
            ready, _, _ = select.select([self.result_r], [], [], 1.0)
            if ready:
                line = self.results.readline()
                return json.loads(line) if line.endswith("\n") else None
            if self.proc.poll() is not None:      # gone, though its pipe may live on in a child
                return None

    def close(self, kill=False):
        """End the worker; what its last module wrote (for a worker that died)."""
        if self.results.closed:
            return ""
        if kill and self.proc.poll() is None:
            self.proc.kill()
        os.close(self.cmd_w)                      # EOF: the worker's loop ends
        self.proc.wait()
        self.results.close()
        with open(self.capture, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        os.unlink(self.capture)
        return text


class Pool:
    """Modules handed out longest first to ``jobs`` workers; each module's
    output printed whole as it ends; the totals at the end."""

    def __init__(self, modules, jobs):
        self.todo = sorted(modules, key=estimate, reverse=True)
        self.jobs = min(jobs, len(modules))
        self.lock = threading.Lock()
        self.results, self.broken = [], []
        self.workers = set()        # running, for Ctrl-C
        self.interrupted = False

    def run(self):
        start = time.monotonic()
        print(f"running {len(self.todo)} test modules in {self.jobs} worker processes "
              f"(serially: {JOBS_ENV}=1)", flush=True)
        threads = [threading.Thread(target=self._slot, daemon=True) for _ in range(self.jobs)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        finally:                    # Ctrl-C, or our own output gone: end the workers
            with self.lock:
                self.interrupted = bool(self.workers)
                self.todo.clear()
                for worker in self.workers:
                    worker.close(kill=True)
        run = sum(r["run"] for r in self.results)
        failed = sum(r["failed"] for r in self.results) + len(self.broken)
        skipped = [reason for r in self.results for reason in r["skipped"]]
        print(f"{len(self.results)} modules in {time.monotonic() - start:.1f} s with {self.jobs} workers "
              f"(the modules' own times add up to {sum(r['seconds'] for r in self.results):.1f} s, "
              f"their CPU times to {sum(r['cpu'] for r in self.results):.1f} s)")
        failing = sorted(r["module"] for r in self.results if r["failed"])
        broken = [f"failed: {m}" for m in failing] + self.broken
        return summary(run + len(self.broken), failed, skipped, broken)

    def _next(self):
        with self.lock:
            return self.todo.pop(0) if self.todo else None

    def _slot(self):
        """Feed one worker until no module is left; replace it if it dies."""
        worker = None
        while True:
            module = self._next()
            if module is None:
                break
            if worker is None:
                worker = Worker()
                with self.lock:
                    self.workers.add(worker)
            result = worker.run(module)
            if result is None:
                with self.lock:
                    if self.interrupted:
                        return
                    self.workers.discard(worker)
                    output = worker.close(kill=True)
                    self.broken.append(f"broken: {module}: the worker process running it died "
                                       f"(exit status {worker.proc.returncode})")
                    print(f"{self.broken[-1]}; its output:\n{output.rstrip()}\n", flush=True)
                worker = None
                continue
            self._report(result)
        if worker:
            with self.lock:
                self.workers.discard(worker)
            worker.close()

    def _report(self, r):
        """One module's lines, printed together; the whole runner output if
        anything beyond the dots and the `OK` was written."""
        skipped = f", {len(r['skipped'])} skipped" if r["skipped"] else ""
        state = "FAILED" if r["failed"] else "ok"
        head = f"{r['module']}: {state}, {r['run']} tests{skipped}, {r['seconds']:.1f} s (CPU {r['cpu']:.1f} s)"
        clean = re.fullmatch(r"[.s]*\n-+\nRan \d+ tests? in [\d.]+s\n\nOK( \(skipped=\d+\))?\n", r["output"])
        with self.lock:
            self.results.append(r)
            print(head if clean else f"{head}\n{r['output'].rstrip()}\n", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
