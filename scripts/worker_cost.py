"""Worker CPU and minor page faults per message: `drain worker --burst --processes 1` on 100 KB mail."""
import os, resource, subprocess, sys, time
sys.path.insert(0, "scripts")
import bench_sizes, bench_sink
from bench import redis_server
from drain.api import Client
from drain.flow import ratelimit
from drain.settings import Settings
sizes = [int(x) for x in sys.argv[1].split(",")]; count = int(sys.argv[2]); variants = sys.argv[3:]
with redis_server() as client, bench_sink.CountingRelay() as sink:
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    for variant in variants:
        client.flushdb()
        env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url, PYTHONPATH=variant)
        for _ in range(2):
            b = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-m", "drain", "worker", "--burst", "--processes", "1", "--log-level", "WARNING"],
                           env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=variant)
            a = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f"start-up {variant}: {(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime) * 1e3:.0f} ms CPU, {a.ru_minflt - b.ru_minflt} minor faults", flush=True)
    for size in sizes:
     raws = [bench_sizes.message(i, size) for i in range(count)]
     for rep in range(2):
        for variant in variants:
            client.flushdb()
            api = Client(client, Settings(redis_url=url, relay=sink.url))
            ratelimit.pause(client); api.enqueue_many(raws); ratelimit.resume(client)
            env = dict(os.environ, DRAIN_REDIS_URL=url, DRAIN_RELAY=sink.url)
            env["PYTHONPATH"] = variant
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "drain", "worker", "--burst", "--processes", "1", "--log-level", "WARNING"],
                           env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=variant)
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            print(f"{size} {variant}: {cpu / count * 1e6:.0f} µs CPU/msg (user {(after.ru_utime-before.ru_utime)/count*1e6:.0f}, sys {(after.ru_stime-before.ru_stime)/count*1e6:.0f}), "
                  f"{(after.ru_minflt - before.ru_minflt) / count:.1f} minor faults/msg, {count / wall:.0f} msg/s", flush=True)
