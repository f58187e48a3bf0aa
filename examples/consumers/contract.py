"""The example contract for the Python consumers: TOKEN_DIR, API_URL and DURATION in, `requests=N rejected=M` out."""

import os
import sys
import time


def settings(name):
    """(TOKEN_DIR, API_URL, DURATION in seconds) from the environment, or exit 2 saying what is missing."""
    try:
        return os.environ["TOKEN_DIR"], os.environ["API_URL"], float(os.environ["DURATION"])
    except (KeyError, ValueError) as e:
        sys.exit(f"{name}: set TOKEN_DIR, API_URL and DURATION (seconds): {e!r}")


def drive(name, duration, call):
    """Runs `call` ten times a second for `duration` seconds; `call` returns None for a 2xx answer, else why not."""
    requests = rejected = 0
    start = time.monotonic()
    while time.monotonic() < start + duration:
        requests += 1
        problem = call()
        if problem is not None:
            rejected += 1
            if rejected <= 3:
                print(f"{name}: request {requests}: {problem}", file=sys.stderr)
        # On a fixed schedule, so a slow answer does not lower the rate.
        time.sleep(max(0.0, start + requests * 0.1 - time.monotonic()))
    print(f"requests={requests} rejected={rejected}")
