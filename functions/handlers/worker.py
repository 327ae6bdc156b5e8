"""Container entry point for queue work (the GPU service's consumer): ``python -m functions.handlers.worker``.

The same guarantees as ``functions.handlers.sqs`` under Lambda's event source mapping, in a polling loop;
see ``functions.batch.worker``.
"""

from __future__ import annotations

from functions.batch.worker import main

if __name__ == "__main__":
    main()
