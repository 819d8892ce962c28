"""Per-connection set-up cost of the SMTP ingress: time to make one aiosmtpd session object
(`--before`: without drain's cached hook names). .venv/bin/python scripts/smtpd_setup_cost.py [--before]"""
import sys
import timeit

import redis

from drain.intake.api import Client
from drain.intake.smtpd import Features, Ingress
from drain.intake.smtpd_session import _SMTP
from drain.settings import Settings

if "--before" in sys.argv:
    del _SMTP.__dir__
api = Client(redis.Redis(), Settings.from_env({"DRAIN_REDIS_URL": "redis://127.0.0.1:1/0"}))
ingress = Ingress(api, "127.0.0.1", 0, features=Features(True, True), hostname="x")
times = timeit.repeat(ingress._protocol, number=2000, repeat=7)
label = "before" if "--before" in sys.argv else "after "
print(f"{label}: {min(times) / 2000 * 1e6:.1f} µs per new session object (min of 7 x 2000)")
