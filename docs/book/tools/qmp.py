#!/usr/bin/env python3
"""Sends QMP commands to a running QEMU and prints each answer (chapter 9 of the book).

Usage: python3 docs/book/tools/qmp.py <socket> '<json command>' ['<json command>' ...]

QEMU must have been started with `-qmp unix:<socket>,server=on,wait=off` (for example through
`./run.sh --qemu ... -qmp unix:/tmp/qmp.sock,server=on,wait=off`). The script reads QEMU's
greeting, enters command mode (`qmp_capabilities`), then sends each command and prints its
`return` or `error`; events that arrive meanwhile are printed too. Exit status 1 if any
command answered with an error.
"""

import json
import socket
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sys.argv[1])
    stream = sock.makefile("rw")

    def send(command: dict) -> dict:
        stream.write(json.dumps(command) + "\n")
        stream.flush()
        while True:
            answer = json.loads(stream.readline())
            if "return" in answer or "error" in answer:
                return answer
            print("event:", json.dumps(answer))

    json.loads(stream.readline())  # the greeting
    send({"execute": "qmp_capabilities"})
    failed = False
    for text in sys.argv[2:]:
        answer = send(json.loads(text))
        failed |= "error" in answer
        print(json.dumps(answer))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
