"""The embedded end-to-end demo on scikit-learn's ``load_digits`` (ships offline).

``datacredit demo`` (see :mod:`datacredit.cli`) runs all three methods on 10 digit
classes treated as 10 data contributors and writes ``report.html`` and
``results.json``.  :mod:`.data` holds the data split, :mod:`.nets` the small CNN and
the tiny class-conditional diffusion model, :mod:`.training` their training loops
(also used by ``scripts/train_demo_models.py``, which produced the shipped weights),
:mod:`.pipeline` the stages and :mod:`.report` the HTML report.
"""
