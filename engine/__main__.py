"""``python -m engine --config FILE --node NAME``: one headless node (same as ``ringsync --engine-only``)."""

from engine.main import main

if __name__ == "__main__":
    raise SystemExit(main())
