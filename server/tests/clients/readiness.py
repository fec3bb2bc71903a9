"""What the client checks share: waiting until the server is ready."""

import sys
import time

from tritonclient.utils import InferenceServerException


def wait_until_ready(client, seconds):
    """Polls `client` (a tritonclient gRPC client) until the server says it
    is live and ready; exits with a message naming the wait if it is not
    within `seconds`."""
    deadline = time.time() + seconds
    while True:
        try:
            if client.is_server_live() and client.is_server_ready():
                return
        except InferenceServerException:
            pass
        if time.time() > deadline:
            sys.exit(f"server did not become ready within {seconds:g} s")
        time.sleep(0.2)
