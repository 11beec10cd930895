"""Pure functions both layers use (protocols/ and store/): no I/O, no state,
standard library only.  ``store/`` may not import ``protocols/`` and the
protocol sessions may not import ``store/`` (tests/test_layering.py), so the
string and key math both sides must compute identically lives here, once."""
