"""INT8/FP32 latency of blocks on real engines (SpaceEvo Sec. 4): measurement, device fingerprint, predictor.

Measurement lives in :mod:`nasq.latency.measure` (engines in :mod:`nasq.latency.engines`, fingerprints in
:mod:`nasq.latency.fingerprint`); the predictor and its Ray actors build on top of them.
"""
