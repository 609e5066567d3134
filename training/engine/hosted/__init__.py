"""Hosted fine-tuning backends behind one interface (:class:`base.HostedBackend`).

Each provider module speaks its provider's API through the provider's own SDK; the job
service (``training.services.remote``) drives any of them without knowing which. A
provider's fine-tuned model is sampled through its OpenAI-compatible chat endpoint by the
shared sampler, ``training.engine.remote.generate_openai_compatible``.
"""
