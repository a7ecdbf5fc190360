"""Worker entry for ``torch.distributed.run``: ``python -m brainfm.ssl.launch <payload.json>``.

:func:`brainfm.ssl.entry.pretrain` re-launches itself through this module when asked for
several processes. A user-facing error (``BrainfmError``) in any worker is written to the
payload's ``error_file`` so the parent can re-raise it with its message instead of a bare exit code.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from brainfm.errors import BrainfmError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    payload = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from brainfm.config import PretrainSpec
    from brainfm.ssl.entry import run_local

    try:
        run_local(PretrainSpec.from_dict(payload["spec"]), [Path(s) for s in payload["stores"]],
                  Path(payload["out"]), Path(payload["summary"]), Path(payload["work_dir"]), payload["device"],
                  precision=payload.get("precision", "fp32"))
    except BrainfmError as exc:
        err = payload.get("error_file")
        if err:
            from brainfm.atomic import write_json

            write_json(err, {"type": type(exc).__name__, "message": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
