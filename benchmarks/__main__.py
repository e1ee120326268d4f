"""`python -m benchmarks <subcommand> ...` (run from the repository root)."""

from benchmarks.cli import main

if __name__ == "__main__":
    main()
