"""The embedded benchmark: an offline, seeded, synthetic multilingual world.

`generate` writes its tasks as JSON lines (the same local-file schema real tasks use);
`pretrain` trains a tokenizer and a tiny XLM-R-shaped model on its unlabelled text.
"""
