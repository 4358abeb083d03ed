"""A session's device in words: "Chrome 156 on Linux" from its raw User-Agent.

Why a maintained parser (``ua-parser``, the uap-core rules): User-Agent
strings are decades of browsers pretending to be each other ("Mozilla/5.0
... AppleWebKit ... Safari" is Chrome), and new ones appear every month; a
few regular expressions of our own would be wrong by next year. The raw
string is kept as it came (the profile page shows it on hover), so a newer
parser names old sessions better too.
"""

from __future__ import annotations

from functools import lru_cache

from ua_parser import parse

UNKNOWN = "Other"  # what the rules call a family they do not know


@lru_cache(maxsize=1024)
def describe(user_agent: str) -> str:
    """``"<browser> <major version> on <OS>"``, as much of it as is known; else the raw string."""
    parsed = parse(user_agent)
    browser = parsed.user_agent
    if browser is None or browser.family == UNKNOWN:
        return user_agent or "unknown device"
    name = f"{browser.family} {browser.major}" if browser.major else browser.family
    system = parsed.os
    return f"{name} on {system.family}" if system and system.family != UNKNOWN else name
