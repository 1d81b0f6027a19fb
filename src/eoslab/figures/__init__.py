"""One module per figure family: its claim numbers (``summary``) and its plot, side by side.

``eoslab.figures.fN_<name>`` holds what the notebook ``notebooks/NN_<name>.ipynb`` calls: a function computing the
figure's summary (the numbers its claims are asserted on, written to ``figures/<profile>/<figure>.json``) from the
stacked runs, and the plotting function(s) of its panels. Shared helpers live in :mod:`eoslab.analysis` (selection,
normalisation by the edge) and :mod:`eoslab.plotting` (style, saving, reference lines).
"""
