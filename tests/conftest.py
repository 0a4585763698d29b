import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# The tests must neither read nor write the user's autotuning memory: a kernel measured
# fastest on this machine would change what algo="auto" picks in tests of the rule.
# (Subprocesses and notebook kernels inherit this.)
os.environ["CONVLAB_TUNE_CACHE"] = os.path.join(
    tempfile.mkdtemp(prefix="convlab-tests-"), "tuning.json")
