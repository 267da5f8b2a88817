"""The ditaccel Gradio demo: ``python demo/app.py [--model DIR] [--port 7860]`` (the same app as
``ditaccel demo``; it lives in ``ditaccel/demo.py``)."""

import sys

from ditaccel.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
