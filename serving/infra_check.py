"""InfraValidator: a new export must answer real requests in a fresh ``pipeline serve`` process before it serves.

Retraining calls ``infra_validate`` just before promotion, so a version that
TF Serving's REST API could not load or answer never replaces the champion.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.errors import PipelineError


def infra_validate(path: Path, data, requests: int) -> None:
    """Load the export in a fresh ``pipeline serve`` process and check it answers real test examples.

    Raises:
        PipelineError: the server does not come up, or an answer is an error or differs from the export.
    """
    import numpy as np
    import tensorflow as tf

    from pipeline.export.saved_model import as_served
    from pipeline.train.cluster import free_ports

    features, _ = next(iter(data.test))
    raw = {name: values.numpy()[:requests] for name, values in as_served(data.spec, features).items()}
    expected = tf.saved_model.load(str(path)).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in raw.items()})
    with tempfile.TemporaryDirectory(prefix="infra-") as root:
        (Path(root) / "model").mkdir()
        shutil.copytree(path, Path(root) / "model" / "1")  # a copy: the server follows no link out of its root
        port = free_ports(1)[0]
        proc = subprocess.Popen([sys.executable, "-m", "serving", "--root", root, "--port", str(port), "--poll", "3600",
                                 "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_ready(proc, port)
            for i in range(len(next(iter(raw.values())))):
                row = {k: (v[i].decode() if isinstance(v[i], bytes) else v[i].tolist()) for k, v in raw.items()}
                answer = _post(port, {"instances": [row]})
                for name, want in expected.items():
                    got, want = answer["predictions"][0], want.numpy()[i]
                    got = got[name] if isinstance(got, dict) else got
                    same = got == want.decode() if isinstance(want, bytes) else \
                        np.allclose(np.asarray(got, dtype=float), want, rtol=1e-5, atol=1e-6)
                    if not same:
                        raise PipelineError(f"InfraValidator: the fresh server's {name} for test example {i} differs "
                                            "from the export's own")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _wait_ready(proc, port: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise PipelineError(f"InfraValidator: the server exited with {proc.returncode}: "
                                f"{proc.stdout.read()[-1000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/model", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise PipelineError(f"InfraValidator: the new version did not load within {timeout:.0f} s")


def _post(port: int, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/model:predict", method="POST",
                                     data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise PipelineError(f"InfraValidator: a real request got HTTP {exc.code}: {exc.read()[:300]!r}") from None
