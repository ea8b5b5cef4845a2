r"""kdjax's launcher: ``python launch.py <command> [flags]``, the same program as ``kdjax``.

    python launch.py train --config=configs/quickstart.py --workdir=runs/quickstart
    python launch.py --mode=sharpen --model=realtime_kd_x2 --input=photo.png --output=sharp.png

Everything lives in ``kdjax.cli`` (``python launch.py --help`` lists the flags).
"""

from kdjax import cli

if __name__ == "__main__":
    cli.main()
