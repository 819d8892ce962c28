"""Redis bytes per queued message, bodies stored raw vs compressed (drain.store.body), by mix.

    .venv/bin/python scripts/body_size.py [--count 300] [--out benchmarks/body-size.md]

Each mix is queued through the producer API into its own throwaway redis-server, once with
compression off and once on; the figure is the growth of used_memory divided by the count.
Also the time to compress (at enqueue) and decompress (at the worker) per KB, one core.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from drain.demo.seeding import load, synthetic
from drain.demo.sink import free_port
from drain.intake.api import Client
from drain.settings import Settings
from drain.store import body
from drain.store.embedded import spawn_on_port

WORDS = ["account", "invoice", "order", "shipped", "total", "customer", "support", "update", "offer", "news",
         "week", "team", "price", "delivery", "return", "your", "our", "the", "and", "for", "with", "this",
         "that", "new", "sale"]


def html_mail(rng: random.Random, index: int) -> bytes:
    """A newsletter: 30-75 KB of table-heavy HTML with inline styles, words drawn at random."""
    rows = []
    size = rng.randint(30_000, 75_000)
    total = 0
    while total < size:
        row = (f'<tr><td style="padding:6px;font-family:Arial;color:#333333">{" ".join(rng.choices(WORDS, k=8))}'
               f'</td><td style="text-align:right">{rng.randint(1, 99999) / 100:.2f} EUR</td>'
               f'<td><a href="https://shop.example.com/p/{rng.randint(1, 10**6)}?utm_source=news">view</a>'
               f"</td></tr>\n")
        rows.append(row)
        total += len(row)
    return (f"From: Shop <news@shop.example.com>\nTo: reader{index}@example.net\nSubject: News {index}\n"
            f"Message-ID: <n{index}@shop.example.com>\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n"
            f"<html><body><table>{''.join(rows)}</table></body></html>\n").encode()


def attachment_mail(rng: random.Random, index: int) -> bytes:
    """A short text part and a 20-50 KB binary attachment (already compressed data, as a PDF's streams)."""
    payload = base64.encodebytes(rng.randbytes(rng.randint(15_000, 37_000))).decode()
    return (f"From: Billing <billing@sender.example.com>\nTo: user{index}@example.net\nSubject: Invoice {index}\n"
            f"Message-ID: <a{index}@sender.example.com>\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\nContent-Type: text/plain\n\n'
            f"Your invoice {index} is attached.\n--b1\nContent-Type: application/pdf\n"
            f"Content-Transfer-Encoding: base64\n\n{payload}--b1--\n").encode()


def mixes(count: int) -> dict[str, list[bytes]]:
    rng = random.Random(16)
    seeds = [raw for _name, raw in load("good")]
    found = {
        "text 2 KB (generated)": [synthetic(i, size=2048) for i in range(count)],
        "seeds/good (text, HTML, small PDF)": [seeds[i % len(seeds)] for i in range(count)],
        "HTML 30-75 KB (generated)": [html_mail(rng, i) for i in range(count)],
        "attachment 20-50 KB": [attachment_mail(rng, i) for i in range(count)],
    }
    # The realistic mix: 4 in 10 small seeds, 4 in 10 HTML newsletters, 2 in 10 with an attachment.
    kinds = ["seeds/good (text, HTML, small PDF)"] * 4 + ["HTML 30-75 KB (generated)"] * 4 + ["attachment 20-50 KB"] * 2
    found["realistic mix (4 seeds : 4 HTML : 2 attachment)"] = [found[kinds[i % 10]][i] for i in range(count)]
    return found


def per_message(messages: list[bytes], compress: bool) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        proc = spawn_on_port(port, Path(workdir))
        try:
            client = redis.Redis(port=port)
            api = Client(client, Settings(redis_url=f"redis://127.0.0.1:{port}/0", max_tokens=1))
            before = int(client.info("memory")["used_memory"])
            saved = body.COMPRESS_ABOVE
            body.COMPRESS_ABOVE = body.COMPRESS_ABOVE if compress else 1 << 40
            try:
                api.enqueue_many(messages)
            finally:
                body.COMPRESS_ABOVE = saved
            return (int(client.info("memory")["used_memory"]) - before) / len(messages)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def us_per_kb(inputs: list[bytes], step: Callable[[bytes], object], raw_bytes: int) -> float:
    """Microseconds per KB of message (not of stored form), the best of three rounds."""
    best = float("inf")
    for _round in range(3):
        started = time.perf_counter()
        for item in inputs:
            step(item)
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / (raw_bytes / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for name, messages in mixes(args.count).items():
        total = sum(map(len, messages))
        raw_size = total / len(messages)
        plain, packed = per_message(messages, False), per_message(messages, True)
        stored = [body.pack(m) for m in messages]
        rows.append({"mix": name, "raw_bytes": round(raw_size), "redis_bytes_plain": round(plain),
                     "redis_bytes_compressed": round(packed), "share_of_raw": round(packed / raw_size, 3),
                     "body_share": round(sum(map(len, stored)) / total, 3),
                     "compress_us_per_kb": round(us_per_kb(messages, body.pack, total), 2),
                     "decompress_us_per_kb": round(us_per_kb(stored, body.unpack, total), 2)})
    lines = ["| mix | raw B/msg | Redis B/msg, raw | Redis B/msg, compressed | compressed / raw size "
             "| stored body / raw body | compress µs/KB | decompress µs/KB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mix']} | {r['raw_bytes']:,} | {r['redis_bytes_plain']:,} | "
                     f"{r['redis_bytes_compressed']:,} | {r['share_of_raw']:.0%} | {r['body_share']:.0%} | "
                     f"{r['compress_us_per_kb']} | "
                     f"{r['decompress_us_per_kb']} |")
    text = "\n".join(lines)
    print(text)
    print(json.dumps(rows))
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
