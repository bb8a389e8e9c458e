"""numba's thread pool starts with idle threads that soon sleep (lesson 02), so they do not take the cores BLAS needs next;
a wait policy the user set stands, and the environment is left as it was."""
import os
import subprocess
import sys

SCRIPT = """
import os, time, numpy as np
from minidl.kernels import sum as kernel_sum
x = np.ones(1 << 21, np.float32)              # past PARALLEL_MIN_SIZE: the parallel kernel, which starts the pool
kernel_sum(x)
idle = []
for _ in range(5):
    kernel_sum(x); c = time.process_time(); time.sleep(0.1); idle.append(time.process_time() - c)
print(os.environ.get("GOMP_SPINCOUNT", "-"), os.environ.get("OMP_WAIT_POLICY", "-"), sorted(idle)[2] * 1e3)
"""


def run(**env):
    "(GOMP_SPINCOUNT, OMP_WAIT_POLICY as the process sees them afterwards, CPU ms spent while the main thread sleeps 0.1 s)."
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=base | {"NUMBA_NUM_THREADS": "2"} | env,
                         capture_output=True, text=True, check=True)
    spin, policy, ms = out.stdout.split()
    return spin, policy, float(ms)


def test_idle_threads_sleep_and_the_environment_is_put_back():
    spin, policy, ms = run()
    assert (spin, policy) == ("-", "-")
    assert ms < 2.0, f"idle pool threads used {ms:.1f} ms of CPU in 0.1 s"     # libgomp's default spin uses several ms


def test_a_wait_policy_the_user_set_stands():
    spin, policy, ms = run(OMP_WAIT_POLICY="ACTIVE")      # spin for ever: the idle worker keeps a core busy
    assert (spin, policy) == ("-", "ACTIVE")
    assert ms > 50, f"idle pool threads used only {ms:.1f} ms of CPU in 0.1 s: the user's ACTIVE policy was overridden"
