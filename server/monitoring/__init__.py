"""How a served version is doing on live traffic, with and without labels.

Each capability is a small self-contained module: `calibration` (temperature scaling of a
head's probabilities, fitted by the trainer), `accuracy` (expected accuracy of recent
predictions from calibrated confidence), `drift` (a reference sketch of training features
and a two-sample test of live features against it) and `sequential` (the always-valid
paired test that judges a challenger head by live labels). They hold numbers, not
protocols: the server feeds them rows and reports what they say.
"""
