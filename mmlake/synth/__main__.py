"""``python -m mmlake.synth OUT_DIR``: build the demo campaign."""

from mmlake.synth.write import main

raise SystemExit(main())
