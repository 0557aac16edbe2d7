from setuptools import find_packages, setup

setup(
    name="pg",
    version="0.1.0",
    description="Pure JAX functions and whole-run compiled training for policy-gradient RLHF.",
    packages=find_packages(include=["pg", "pg.*"]),
    package_data={"pg.lab": ["report_template.md"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.4",
        "chex>=0.1.87",
        "orbax-checkpoint>=0.10",
        "ml-collections>=0.1.1",
        "numpy>=1.26",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "scipy>=1.11",  # t-intervals in the tables and figures
        "tensorboardX>=2.6",
        "vaderSentiment>=3.3",  # the RLHF pipeline's gold scorer (MIT licence)
    ],
    extras_require={"test": ["pytest>=8", "hypothesis>=6"]},
)
