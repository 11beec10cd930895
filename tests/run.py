"""`make test`: discover and run every test, then print one closing line.

    python3 -m tests.run [pattern...]

The closing line reads ``N passed, N failed, N skipped``; skipped interop
tests name the missing tool, so a developer sees what CI will run that their
box did not.
"""

import logging
import os
import sys
import unittest


def main(argv):
    # Servers started in-process log refusals and auth failures on purpose;
    # keep them off the test output unless asked (MAILSRV_TEST_LOG=DEBUG).
    logging.basicConfig(level=os.environ.get("MAILSRV_TEST_LOG", "CRITICAL"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    patterns = argv[1:] or ["test*.py"]
    suite = unittest.TestSuite(unittest.defaultTestLoader.discover("tests", pattern=p, top_level_dir=".")
                               for p in patterns)
    result = unittest.TextTestRunner(verbosity=1, buffer=False).run(suite)
    failed = len(result.failures) + len(result.errors) + len(getattr(result, "unexpectedSuccesses", []))
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    reasons = sorted({reason for _test, reason in result.skipped})
    for reason in reasons:
        print(f"skipped: {reason}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
