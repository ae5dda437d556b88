"""One module per phenomenon the views show, built on the core (models, train, record, norms).

adapt (precise BN, AdaBN, fine-tuning), sweeps (batch size, norms), landscape and lr_sweep and
noisy_bn (why BN helps), variance_shift (dropout before BN), bn_steps (BN step by step),
streams (running statistics of a known stream), whitening (PCA/ZCA vs standardization).
"""
