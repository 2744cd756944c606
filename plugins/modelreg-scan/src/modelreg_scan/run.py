"""The scan subprocess: ``python -m modelreg_scan.run PATH`` with the configuration as JSON
on standard input.

It limits its own address space and CPU time first, scans the file and prints the result as
JSON on standard output.  Exit status 0 means the result is on standard output; any other
status (or death by a signal) means the scan failed, and the caller fails closed.  Only the
standard library and this package's scanner modules are imported, never ``modelreg``.
"""

from __future__ import annotations

import json
import math
import sys

from .config import ScanConfig
from .scanner import scan_path

#: Exit status when the scan ran out of memory.
EXIT_MEMORY = 3
#: Exit status when the command line or the configuration is wrong.
EXIT_USAGE = 2


def apply_limits(config: ScanConfig) -> None:
    """Limit this process: address space ``max_memory``, CPU time ``timeout``, no core
    files."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (config.max_memory, config.max_memory))
    cpu = math.ceil(config.timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str] | None = None) -> int:
    """Scan the file named by the only argument; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m modelreg_scan.run PATH < config.json", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = ScanConfig.from_json(json.load(sys.stdin))
    except (ValueError, TypeError) as exc:
        print(f"bad configuration on standard input: {exc}", file=sys.stderr)
        return EXIT_USAGE
    apply_limits(config)
    try:
        result = scan_path(args[0], config)
    except MemoryError:
        print(f"out of memory (limit {config.max_memory} bytes)", file=sys.stderr)
        return EXIT_MEMORY
    json.dump(result.as_json(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
