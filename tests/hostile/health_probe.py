"""Asks `/healthz` every EVERY seconds and prints each answer's time in
seconds (`inf` when it failed), one per line, until it is stopped.

Run as its own process by `hostile_support.HealthProbe`, so that the test's
own event loop and garbage collector, busy with the attack, cannot delay the
probe and be mistaken for the server's delay. Standard library only: it
starts in a few milliseconds.

Usage: python health_probe.py HOST PORT EVERY
"""

from __future__ import annotations

import http.client
import sys
import time


def main() -> None:
    host, port, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    connection = http.client.HTTPConnection(host, port, timeout=5)
    while True:
        started = time.perf_counter()
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            took = time.perf_counter() - started if response.status == 200 else float("inf")
        except (OSError, http.client.HTTPException):
            took = float("inf")
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=5)
        print(took, flush=True)
        time.sleep(every)


if __name__ == "__main__":
    main()
