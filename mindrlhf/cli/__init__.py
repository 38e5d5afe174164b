"""Entry points: one module per command, each with its arguments and a `main(argv=None) -> int`.

    command       module                   console script        old spelling (still works)
    PPO training  mindrlhf.cli.train       mindrlhf-train        python train.py
    SFT           mindrlhf.cli.sft         mindrlhf-sft          python -m mindrlhf.train_sft
    reward model  mindrlhf.cli.rm          mindrlhf-rm           python -m mindrlhf.train_rm
    datasets      mindrlhf.cli.data        mindrlhf-data         python examples/rlhf_train_tutorial/rlhf_data.py
    HF <-> MS     mindrlhf.cli.convert_hf  mindrlhf-convert-hf   python -m mindrlhf.tools.convert_hf
    generation    mindrlhf.cli.generate    mindrlhf-generate     python -m mindrlhf.tools.generate
    rank tables   mindrlhf.cli.rank_table  mindrlhf-rank-table   python -m mindrlhf.parallel.rank_table
    tokenizer     mindrlhf.cli.tokenizer   mindrlhf-tokenizer    python -m mindrlhf.data.tokenizer
    memory plan   mindrlhf.cli.plan_memory mindrlhf-plan-memory  python -m mindrlhf.tools.plan_memory

`common` holds what they share: collecting every input problem into one report (exit code 2), the packaged
default trainer YAMLs, the device choice, per-rank logging, the distributed start and the MindSpore context.
Arrows point one way: these modules import the library, the library never imports them (the old spellings are
`if __name__ == "__main__"` shims). A new trainer (DPO, GRPO, ...) is one more module here plus one line in
setup.py's console_scripts.
"""
