"""Network builders: the JASQ NASNet skeleton (:mod:`nasq.models.nasnet`) and torchvision wrappers."""
