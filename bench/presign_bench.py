"""CPU per presigned URL: botocore's generate_presigned_url against storage/sigv4.py.

Both sign the same GET (with a response-content-disposition) for the same static
credentials; no request leaves the process. Alternating rounds, the median per URL.
Usage: .venv/bin/python -m bench.presign_bench [--urls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import boto3
from botocore.config import Config

from tunevault.storage.sigv4 import Presigner, StaticCredentials

ENDPOINT, REGION, BUCKET = "http://127.0.0.1:8333", "us-east-1", "tunevault"
KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
DISPOSITION = 'attachment; filename="ft-x-step6-merged.tar.zst"'


def per_url(sign: Callable[[int], str], n: int) -> float:
    """Seconds of CPU per URL over `n` URLs (process time: the loop is all CPU)."""
    start = time.process_time()
    for i in range(n):
        sign(i)
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    ours = Presigner(ENDPOINT, REGION, StaticCredentials(KEY_ID, SECRET))

    def botocore(i: int) -> str:
        return str(
            client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": BUCKET,
                    "Key": f"tv/archives/{i}",
                    "ResponseContentDisposition": DISPOSITION,
                },
                ExpiresIn=300,
            )
        )

    def direct(i: int) -> str:
        return ours.url(
            "GET", BUCKET, f"tv/archives/{i}", 300, {"response-content-disposition": DISPOSITION}
        )

    times: dict[str, list[float]] = {"botocore": [], "sigv4.py": []}
    for _ in range(args.rounds):
        times["botocore"].append(per_url(botocore, args.urls))
        times["sigv4.py"].append(per_url(direct, args.urls))
    for name, runs in times.items():
        shown = ", ".join(f"{t * 1e6:.0f}" for t in runs)
        print(f"{name:9s} median {statistics.median(runs) * 1e6:6.0f} us/URL  runs: {shown}")


if __name__ == "__main__":
    main()
