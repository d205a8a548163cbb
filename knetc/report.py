"""KNETC_LOG=compile,cache,launch,memory (or all): what knetc reports on stderr."""
import os
import sys


def _topics():
    value = os.environ.get("KNETC_LOG", "")
    return {t.strip() for t in value.split(",") if t.strip()}


def enabled(topic):
    topics = _topics()
    return topic in topics or "all" in topics


def report(topic, message):
    if enabled(topic):
        print(f"[knetc {topic}] {message}", file=sys.stderr)
