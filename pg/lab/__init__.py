"""The estimator lab (layer 4): estimators measured against exact gradients.

    problems     enumerable problems (the toy reward), exact ∇J and values, critics
    estimates    sampled group gradient estimates through the registry's estimators
    statistics   bias, scale, z-tests, variance and SNR with jackknife standard errors
    claims       the five claims about the score-function estimator, measured
    findings     the sentences the measurements make
    report       tables, figure and report_template.md, written into a workdir
    demo         training a tabular policy with every estimator (experiments/estimator_demo.py)
"""
