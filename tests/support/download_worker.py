"""Runs the download step in a process of its own, for tests that kill or race downloads.

    python -m tests.support.download_worker SOURCE CACHE_DIR [--endpoint-url URL]
        [--max-bandwidth BYTES_PER_S] [--chunk-size BYTES] [--what MODEL_AND_TOKENIZER]

prints the ``DownloadResult`` as one JSON line, and ``started`` first (flushed) once it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from llm_init import LLMConfig, NodeInitializationContext
from llm_init.steps.download import DownloadStep
from llm_init.summary import json_safe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("cache_dir")
    parser.add_argument("--endpoint-url")
    parser.add_argument("--max-bandwidth", type=float)
    parser.add_argument("--chunk-size", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--what", default="MODEL_AND_TOKENIZER")
    args = parser.parse_args()
    print("started", flush=True)
    step = DownloadStep(endpoint_url=args.endpoint_url, cache_dir=args.cache_dir,
                        max_bandwidth=args.max_bandwidth, chunk_size=args.chunk_size)
    config = LLMConfig(model_id="worker-model", model_source=args.source,
                       local_node_download_model=args.what)
    ctx = NodeInitializationContext.for_config("worker", config)
    asyncio.run(step.run(ctx, lambda **details: None))
    print(json.dumps(json_safe(ctx.download_result)), flush=True)


if __name__ == "__main__":
    main()
