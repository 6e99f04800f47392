"""A raw ASGI app on the service's uvicorn stack that reads the body and answers fixed JSON: the ceiling."""

from __future__ import annotations

import argparse
import json

import uvicorn

# About 200 bytes, shaped like a one-row answer of the service; "predictions" so that the
# bench's check_answers accepts it.
ANSWER = json.dumps({
    "predictions": [{"label": "setosa", "class_index": 0,
                     "probabilities": {"setosa": 0.9794, "versicolor": 0.0206, "virginica": 1e-07}}],
    "model": {"name": "ClassificationModel", "version": "1", "served_form": "floor"},
}, separators=(",", ":")).encode()
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/json"),
                     (b"content-length", str(len(ANSWER)).encode())]}
BODY = {"type": "http.response.body", "body": ANSWER}


async def app(scope, receive, send) -> None:
    """Any method, any path (GET /health too): read the whole request body, then answer 200."""
    if scope["type"] != "http":  # lifespan is off; nothing else reaches an HTTP-only server
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send(START)
    await send(BODY)


def main(argv: list[str] | None = None) -> int:
    """Serve until stopped, with the settings of the service: uvloop, httptools, no access log."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", lifespan="off")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
