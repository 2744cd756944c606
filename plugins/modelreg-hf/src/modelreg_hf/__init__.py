"""modelreg-hf: the part of the Hugging Face Hub's HTTP API that ``huggingface_hub`` uses for
models, served over the registry (see ``docs/huggingface.md``)."""
