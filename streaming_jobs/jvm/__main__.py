"""``python -m streaming_jobs.jvm [--force]``: build ``streaming_jobs/jvm/build/streamsight-jvm.jar``."""

import sys

from streaming_jobs.jvm import main

sys.exit(main())
