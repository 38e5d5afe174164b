"""Install mindrlhf: `pip install -e .` (runtime) or `pip install -e ".[test]"` (with test references)."""

from setuptools import find_packages, setup

setup(
    name="mindrlhf",
    version="0.1.0",
    description="MindSpore-native RLHF (SFT, reward model, PPO) for Llama2-class models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["mindrlhf", "mindrlhf.*"]),
    # The default trainer YAMLs, found with importlib.resources (model_configs/*_config.yaml link to them).
    package_data={"mindrlhf.configs.defaults": ["*.yaml"]},
    entry_points={
        "console_scripts": [
            "mindrlhf-train=mindrlhf.cli.train:main",
            "mindrlhf-sft=mindrlhf.cli.sft:main",
            "mindrlhf-rm=mindrlhf.cli.rm:main",
            "mindrlhf-dpo=mindrlhf.cli.dpo:main",
            "mindrlhf-data=mindrlhf.cli.data:main",
            "mindrlhf-convert-hf=mindrlhf.cli.convert_hf:main",
            "mindrlhf-generate=mindrlhf.cli.generate:main",
            "mindrlhf-rank-table=mindrlhf.cli.rank_table:main",
            "mindrlhf-tokenizer=mindrlhf.cli.tokenizer:main",
            "mindrlhf-plan-memory=mindrlhf.cli.plan_memory:main",
        ]
    },
    install_requires=[
        "mindspore==2.10.0",
        "numpy<2",  # numpy 2 breaks MindSpore 2.10 PyNative ops
        "pyyaml",
        "tqdm",
        "sentencepiece",
        "tokenizers",  # Hugging Face tokenizer.json (Llama-3, Qwen2); not transformers
        "jinja2",  # chat templates in tokenizer_config.json
        "safetensors",
    ],
    extras_require={
        # Test-time references only; never imported by mindrlhf itself.
        # torch is pinned exactly: this machine image carries its CPU wheel, a range pulls a CUDA build.
        "test": ["pytest", "pytest-xdist", "ruff", "torch==2.13.0", "transformers"],
        # Optional niceties, imported lazily where used.
        "extras": ["tensorboardX", "matplotlib"],
        # Never required: MindFormers can read our checkpoints and we read its YAMLs without it.
        "mindformers": ["mindformers"],
    },
)
