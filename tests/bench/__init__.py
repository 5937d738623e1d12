"""The benchmark (issue #5): ``sudo ./tests/bench/run``; not part of the pass/fail tests."""
