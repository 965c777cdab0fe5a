"""Numbers read from a trained network, without drawing them (that is :mod:`nrknet.analysis.figures`).

:mod:`nrknet.analysis.defocus`: the full-scale coefficient maps and the
effective blur radius the network believes in at every pixel.
"""
