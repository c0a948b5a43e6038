"""``python -m trigger_ml``: the same entry point as ``trigger-ml``."""

from trigger_ml.cli import main

if __name__ == "__main__":
    main()
