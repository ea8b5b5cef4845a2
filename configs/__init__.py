"""Experiment configs: one ``get_config(variant)`` per file, each with its command and result.

Run one with ``kdjax train --config=configs/teacher.py:light`` from the repository, or by
name from anywhere after ``pip install``: ``kdjax train --config=teacher:light``. Installed as
``kdjax.configs``; shared pieces are in ``common.py``.
"""
